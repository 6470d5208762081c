//! Identifier parsers: never panic, and whatever parses prints back to something that parses to
//! the same id.
#![no_main]

use lienthong_types::{ClientId, GlobalGroupId, MemberId, NodeId, ServiceId, SubsystemId};
use libfuzzer_sys::fuzz_target;

fn round_trip<T>(s: &str)
where
    T: std::str::FromStr + std::fmt::Display + PartialEq + std::fmt::Debug,
{
    if let Ok(id) = s.parse::<T>() {
        let again = id.to_string().parse::<T>().ok();
        assert_eq!(again.as_ref(), Some(&id), "{s:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    round_trip::<MemberId>(s);
    round_trip::<SubsystemId>(s);
    round_trip::<ClientId>(s);
    round_trip::<ServiceId>(s);
    round_trip::<NodeId>(s);
    round_trip::<GlobalGroupId>(s);
});
