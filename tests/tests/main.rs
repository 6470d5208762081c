//! The whole-product tests as one test binary, `it` (rust-analyzer's slow-tests layout): one
//! compile and one link of the product for all of them instead of one per file. Each file here is
//! a module and a test's name is `module::test`, e.g. `node_faults::...`; filter by module with
//! `cargo test -p lienthong-tests -- node_faults::` or `cargo nextest run -p lienthong-tests -E
//! 'test(/^node_faults::/)'`. See docs/decisions/0014-one-test-binary.md.
//!
//! A new suite is a file here plus its `mod` line below: with `autotests = false` cargo does
//! not pick files up by itself, so `every_file_is_a_module` fails for a file without one.

mod common;

mod architecture;
mod audit_bundle_e2e;
mod audit_central_e2e;
mod config_demo;
mod federation_e2e;
mod net_faults;
mod node_audit_api;
mod node_bad_input;
mod node_client_auth;
mod node_e2e;
mod node_faults;
mod node_large_body;
mod node_meta;
mod node_refusal_flood;
mod registry_e2e;
mod witness_e2e;

/// Every `.rs` file and directory next to this one is declared above, so none is silently left
/// out of the binary.
#[test]
fn every_file_is_a_module() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let main = std::fs::read_to_string(dir.join("main.rs")).expect("read main.rs");
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("read tests/tests") {
        let path = entry.expect("directory entry").path();
        let name = match path.extension() {
            Some(e) if e == "rs" => path.file_stem(),
            Some(_) => continue,
            None => path.file_name(),
        };
        let name = name.and_then(|n| n.to_str()).expect("a UTF-8 file name");
        if name != "main" && !main.lines().any(|l| l == format!("mod {name};")) {
            missing.push(path.display().to_string());
        }
    }
    assert!(missing.is_empty(), "not declared in tests/tests/main.rs (add `mod NAME;`): {missing:?}");
}
