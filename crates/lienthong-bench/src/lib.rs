//! What the benchmark (`lienthong-bench`) and the soak (`lienthong-soak`) share: child
//! processes, the backend, and the harness's HTTP client.

pub mod backend;
pub mod client;
pub mod procs;
