//! Plain values shared by every Lienthong crate: X-Road identifiers and the fault catalogue.
//!
//! No I/O happens here; everything is parsed once at a trust boundary and typed afterwards.

mod fault;
mod id;

pub use fault::{Fault, Side};
pub use id::{
    ClientId, Code, GlobalGroupId, GroupCode, IdError, IdErrorKind, IdPart, InstanceId, MAX_CODE_LEN,
    MemberClass, MemberCode, MemberId, NodeId, ObjectType, R1PathError, R1Target, ServerCode, ServiceCode,
    ServiceId, SubsystemCode, SubsystemId, is_id_char,
};
