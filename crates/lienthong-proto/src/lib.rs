//! Rust code generated from `proto/` (the versioned wire contract), and the one place where
//! untrusted wire values become domain values (`convert`).
//!
//! Generated types are plain data; they never appear in other crates' public domain APIs.

pub mod convert;

macro_rules! generated {
    ($($module:ident => $file:literal),* $(,)?) => {$(
        pub mod $module {
            pub mod v1 {
                #![allow(clippy::all, clippy::pedantic, missing_debug_implementations)]
                include!(concat!(env!("OUT_DIR"), "/", $file));
            }
        }
    )*};
}

generated! {
    types => "lienthong.types.v1.rs",
    globalconf => "lienthong.globalconf.v1.rs",
    exchange => "lienthong.exchange.v1.rs",
    msglog => "lienthong.msglog.v1.rs",
    registry => "lienthong.registry.v1.rs",
    audit => "lienthong.audit.v1.rs",
}

pub use convert::ProtoError;
