//! The r1 request-target parser: never panics; a parsed target prints back to the same target.
#![no_main]

use lienthong_types::R1Target;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(t) = R1Target::parse(s) {
        assert_eq!(R1Target::parse(&t.to_path_and_query()).as_ref(), Ok(&t), "{s:?}");
    }
});
