//! The architecture's invariants, checked against the real dependency graph and sources, so a
//! change that breaks one fails CI instead of relying on review.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Workspace package -> its direct normal (non-dev, non-build) dependencies, by package name.
fn direct_deps() -> BTreeMap<String, BTreeSet<String>> {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--offline", "--no-deps"])
        .current_dir(root())
        .output()
        .expect("run cargo metadata");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let members: BTreeSet<&str> =
        meta["workspace_members"].as_array().unwrap().iter().map(|m| m.as_str().unwrap()).collect();
    meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| members.contains(p["id"].as_str().unwrap()))
        .map(|p| {
            let deps = p["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| d["kind"].is_null())
                .map(|d| d["name"].as_str().unwrap().to_owned())
                .collect();
            (p["name"].as_str().unwrap().to_owned(), deps)
        })
        .collect()
}

/// Every package built for this platform, dev and build dependencies included.
fn resolved_packages() -> BTreeSet<String> {
    let out = Command::new(env!("CARGO"))
        .args(["tree", "--workspace", "-e", "all", "--prefix", "none", "--offline", "--format", "{p}"])
        .current_dir(root())
        .output()
        .expect("run cargo tree");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

fn ours(deps: &BTreeSet<String>) -> BTreeSet<&str> {
    deps.iter().filter(|d| d.starts_with("lienthong-")).map(String::as_str).collect()
}

#[test]
fn crate_layering_follows_the_brief() {
    let deps = direct_deps();
    // Which of our crates each crate may depend on (architecture brief, section 4).
    let allowed: &[(&str, &[&str])] = &[
        ("lienthong-types", &[]),
        ("lienthong-proto", &["lienthong-types"]),
        ("lienthong-pki", &["lienthong-types"]),
        ("lienthong-globalconf", &["lienthong-types", "lienthong-proto", "lienthong-pki"]),
        (
            "lienthong-exchange",
            &["lienthong-types", "lienthong-proto", "lienthong-pki", "lienthong-globalconf"],
        ),
        ("lienthong-msglog", &["lienthong-types", "lienthong-pki", "lienthong-proto"]),
        (
            "lienthong-registry",
            &[
                "lienthong-types",
                "lienthong-proto",
                "lienthong-pki",
                "lienthong-globalconf",
                "lienthong-msglog",
            ],
        ),
        (
            "lienthong-audit",
            // Exchange: evidence bundles check the signed envelopes with the protocol's own
            // verification (both crates do no I/O).
            &[
                "lienthong-types",
                "lienthong-proto",
                "lienthong-pki",
                "lienthong-globalconf",
                "lienthong-exchange",
                "lienthong-msglog",
            ],
        ),
        (
            "lienthong-node",
            &[
                "lienthong-types",
                "lienthong-proto",
                "lienthong-pki",
                "lienthong-globalconf",
                "lienthong-exchange",
                "lienthong-msglog",
                "lienthong-audit",
            ],
        ),
    ];
    for (name, may) in allowed {
        let Some(d) = deps.get(*name) else { continue };
        let extra: Vec<_> = ours(d).into_iter().filter(|x| !may.contains(x)).collect();
        assert!(extra.is_empty(), "{name} must not depend on {extra:?}");
    }
    for name in deps.keys().filter(|n| n.starts_with("lienthong-")) {
        let known = allowed.iter().any(|(n, _)| n == name)
            || ["lienthong-cli", "lienthong-testkit", "lienthong-tests", "lienthong-bench"]
                .contains(&name.as_str());
        assert!(known, "{name} is not in the layering table: add it here and to ARCHITECTURE.md");
    }
}

#[test]
fn only_pki_touches_certificate_building_and_the_crypto_provider() {
    let confined = ["rcgen", "aws-lc-rs", "rustls-webpki", "x509-parser", "pkcs8"];
    for (name, d) in direct_deps() {
        if name == "lienthong-pki" {
            continue;
        }
        let leaked: Vec<_> = confined.iter().filter(|c| d.contains(**c)).collect();
        assert!(leaked.is_empty(), "{name} depends on {leaked:?}; only lienthong-pki may");
    }
}

#[test]
fn core_crates_do_no_io() {
    let io_crates = ["tokio", "hyper", "tonic-transport", "redb", "reqwest", "mio"];
    for name in
        ["lienthong-types", "lienthong-proto", "lienthong-pki", "lienthong-globalconf", "lienthong-exchange"]
    {
        let Some(d) = direct_deps().remove(name) else {
            continue;
        };
        let io: Vec<_> = io_crates.iter().filter(|c| d.contains(**c)).collect();
        assert!(io.is_empty(), "{name} depends on {io:?}");
        let src = root().join("crates").join(name).join("src");
        for (file, text) in rust_files(&src) {
            for needle in ["std::fs", "std::net", "tokio::", "File::open", "std::env::var"] {
                assert!(!text.contains(needle), "{} uses {needle}: {name} does no I/O", file.display());
            }
        }
    }
}

#[test]
fn no_production_code_path_reads_a_benchmark_flag() {
    // Transport-only measurement is a `Protection` the benchmark crate owns (decision 0011):
    // no other crate's sources name a benchmark mode, and only `Signed` (in the exchange crate)
    // and the benchmark's own type implement the trait outside tests.
    let flags = ["transport_only", "TransportOnly", "benchmark_", "--benchmark", "admit_without_signature"];
    for entry in std::fs::read_dir(root().join("crates")).unwrap() {
        let dir = entry.unwrap().path();
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        if name == "lienthong-bench" {
            continue;
        }
        for (file, text) in rust_files(&dir.join("src")) {
            for flag in flags {
                assert!(
                    !text.contains(flag),
                    "{} names {flag}: benchmark modes live in lienthong-bench",
                    file.display()
                );
            }
            let implements = text.contains("impl Protection for") || text.contains("Protection for ");
            let allowed = name == "lienthong-exchange" && file.ends_with("protection.rs");
            assert!(
                !implements || allowed,
                "{} implements Protection: only Signed and the benchmark's may",
                file.display()
            );
        }
    }
    // The production binary cannot link the benchmark's protection.
    let deps = direct_deps();
    for (name, d) in &deps {
        if name != "lienthong-bench" {
            assert!(!d.contains("lienthong-bench"), "{name} depends on lienthong-bench");
        }
    }
}

#[test]
fn no_openssl_or_native_tls_anywhere() {
    let resolved = resolved_packages();
    for banned in ["openssl", "openssl-sys", "native-tls", "ring"] {
        assert!(!resolved.contains(banned), "{banned} is in the dependency graph");
    }
}

#[test]
fn custom_tls_verification_stays_in_pki() {
    for entry in std::fs::read_dir(root().join("crates")).unwrap() {
        let dir = entry.unwrap().path();
        if dir.ends_with("lienthong-pki") {
            continue;
        }
        for (file, text) in rust_files(&dir.join("src")) {
            assert!(
                !text.contains(".dangerous()"),
                "{} builds a rustls config with custom verification; use lienthong_pki::tls",
                file.display()
            );
        }
    }
}

#[test]
fn architecture_md_maps_every_crate() {
    let doc = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    for name in direct_deps().keys() {
        assert!(doc.contains(&format!("`{name}`")), "ARCHITECTURE.md does not mention `{name}`");
    }
}

#[test]
fn tests_bind_no_fixed_ports() {
    let pattern = ["127.0.0.1", ":"].concat();
    for dir in test_dirs() {
        for (file, text) in rust_files(&dir) {
            for (i, line) in text.lines().enumerate() {
                if let Some(pos) = line.find(&pattern) {
                    let port: String =
                        line[pos + pattern.len()..].chars().take_while(char::is_ascii_digit).collect();
                    assert!(
                        port.is_empty() || port == "0",
                        "{}:{}: fixed port {port}",
                        file.display(),
                        i + 1
                    );
                }
            }
        }
    }
}

#[test]
fn ci_runs_the_readme_test_command() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let ci = std::fs::read_to_string(root().join(".ci/run")).unwrap();
    let quick_start: Vec<&str> = readme.lines().filter(|l| l.starts_with("cargo ")).take(2).collect();
    assert_eq!(quick_start.len(), 2, "README.md must start with a two-command quick start");
    assert!(quick_start[0].contains("-- demo"), "first command runs the demo: {}", quick_start[0]);
    assert!(ci.contains(quick_start[1]), ".ci/run must run the README's test command `{}`", quick_start[1]);
}

fn test_dirs() -> Vec<PathBuf> {
    let mut dirs = vec![root().join("tests/tests")];
    for entry in std::fs::read_dir(root().join("crates")).unwrap() {
        let dir = entry.unwrap().path();
        dirs.push(dir.join("tests"));
        dirs.push(dir.join("src"));
    }
    dirs
}

fn rust_files(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push((path.clone(), std::fs::read_to_string(&path).unwrap()));
        }
    }
    out
}

#[test]
fn proto_packages_are_versioned_by_path() {
    let root = root().join("proto");
    let mut files = Vec::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "proto") {
                files.push(path);
            }
        }
    }
    assert!(!files.is_empty());
    for file in files {
        let rel = file.strip_prefix(&root).unwrap().parent().unwrap();
        let parts: Vec<&str> = rel.iter().map(|p| p.to_str().unwrap()).collect();
        assert!(
            parts.len() == 3 && parts[0] == "lienthong" && parts[2].starts_with('v'),
            "{} must live in proto/lienthong/<area>/v<N>/",
            file.display()
        );
        let text = std::fs::read_to_string(&file).unwrap();
        let expected = format!("package {};", parts.join("."));
        assert!(text.lines().any(|l| l.trim() == expected), "{} must declare `{expected}`", file.display());
    }
}
