//! What the benchmark (`lienthong-bench`) and the soak (`lienthong-soak`) share: child
//! processes, the backend, and the harness's HTTP client; and the benchmark's transport-only
//! node (topology C).

pub mod backend;
pub mod client;
pub mod procs;
pub mod transport_only;
