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
        // The runtime kit (serve, Clock, the configuration loader) uses none of our crates.
        ("lienthong-runtime", &[]),
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
                "lienthong-runtime",
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
        // The configuration client: the node's and the audit service's, shared.
        (
            "lienthong-confclient",
            &[
                "lienthong-runtime",
                "lienthong-types",
                "lienthong-proto",
                "lienthong-pki",
                "lienthong-globalconf",
            ],
        ),
        (
            "lienthong-node",
            &[
                "lienthong-runtime",
                "lienthong-types",
                "lienthong-proto",
                "lienthong-pki",
                "lienthong-globalconf",
                "lienthong-confclient",
                "lienthong-exchange",
                "lienthong-msglog",
                "lienthong-audit",
            ],
        ),
        (
            "lienthong-audit-service",
            &[
                "lienthong-runtime",
                "lienthong-types",
                "lienthong-proto",
                "lienthong-pki",
                "lienthong-globalconf",
                "lienthong-confclient",
                "lienthong-msglog",
                "lienthong-audit",
            ],
        ),
        // The demo world runs the product's own crates, as the CLI would.
        (
            "lienthong-demo",
            &[
                "lienthong-runtime",
                "lienthong-types",
                "lienthong-proto",
                "lienthong-pki",
                "lienthong-globalconf",
                "lienthong-msglog",
                "lienthong-registry",
                "lienthong-node",
                "lienthong-audit-service",
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

/// Our crates `name` links, directly or through our other crates (normal dependencies).
fn reaches(deps: &BTreeMap<String, BTreeSet<String>>, name: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![name.to_owned()];
    while let Some(next) = todo.pop() {
        for d in deps.get(&next).into_iter().flat_map(|d| ours(d)) {
            if seen.insert(d.to_owned()) {
                todo.push(d.to_owned());
            }
        }
    }
    seen
}

#[test]
fn the_audit_service_and_the_node_share_the_configuration_client() {
    let deps = direct_deps();
    for name in ["lienthong-node", "lienthong-audit-service"] {
        assert!(deps[name].contains("lienthong-confclient"), "{name} must use lienthong-confclient");
    }
    let node = reaches(&deps, "lienthong-node");
    assert!(!node.contains("lienthong-audit-service"), "the node links the audit service: {node:?}");
    assert!(node.contains("lienthong-audit"), "the node answers its audit API with the audit library");
}

#[test]
fn the_audit_service_does_not_depend_on_the_node() {
    let service = reaches(&direct_deps(), "lienthong-audit-service");
    assert!(!service.contains("lienthong-node"), "the audit service links the node: {service:?}");
}

#[test]
fn the_audit_library_does_no_network_io() {
    let network = ["tokio", "hyper", "hyper-util", "http-body-util", "rustls", "tokio-rustls", "tonic"];
    let deps = &direct_deps()["lienthong-audit"];
    let linked: Vec<_> = network.iter().filter(|c| deps.contains(**c)).collect();
    assert!(linked.is_empty(), "lienthong-audit depends on {linked:?}: the network is the service's");
    for (file, text) in rust_files(&root().join("crates/lienthong-audit/src")) {
        for needle in ["std::net", "tokio::", "hyper::"] {
            assert!(
                !text.contains(needle),
                "{} uses {needle}: the audit library does no I/O",
                file.display()
            );
        }
    }
}

#[test]
fn the_cli_crate_holds_no_demo_world() {
    let cli = root().join("crates/lienthong-cli");
    assert!(!cli.join("src/demo").exists(), "the demo world lives in lienthong-demo, not in the CLI");
    let deps = &direct_deps()["lienthong-cli"];
    assert!(deps.contains("lienthong-demo"));
    // The demo's backends and traffic were the CLI's only HTTP: it has no HTTP stack of its own.
    for http in ["hyper", "hyper-util", "http-body-util"] {
        assert!(!deps.contains(http), "lienthong-cli depends on {http}");
    }
    let demo = std::fs::read_to_string(cli.join("src/demo.rs")).unwrap();
    for needle in ["async fn", "tokio::", "NodeHandle", "RegistryHome"] {
        assert!(
            !demo.contains(needle),
            "src/demo.rs uses {needle}: it parses arguments and calls lienthong-demo"
        );
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

/// A module of one crate, by its path from the crate root (`[]` for `lib.rs`/`main.rs`).
type ModPath = Vec<String>;

/// The source files of one crate (a library, or a binary under `src/bin/<name>/`), below `base`.
struct CrateSources {
    name: String,
    base: PathBuf,
    files: Vec<(PathBuf, String)>,
}

/// The module a source file is, from its path below a crate's source root.
fn module_of(rel: &Path) -> ModPath {
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_str().unwrap().to_owned()).collect();
    let file = parts.pop().unwrap();
    let stem = file.trim_end_matches(".rs");
    if !matches!(stem, "mod" | "lib" | "main") {
        parts.push(stem.to_owned());
    }
    parts
}

/// Every path a `crate::`/`super::` reference names in `code`, as segments from the crate root
/// (`use` trees with braces expanded). `module` is the file's module, for `super::`.
fn referenced_paths(code: &str, module: &[String]) -> Vec<ModPath> {
    fn ident(s: &str) -> usize {
        s.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(s.len())
    }
    /// Parses a use tree at the start of `s` below `prefix`; returns the paths and the rest.
    fn tree<'a>(mut s: &'a str, prefix: &ModPath, out: &mut Vec<ModPath>) -> &'a str {
        let mut path = prefix.clone();
        loop {
            s = s.trim_start();
            if let Some(rest) = s.strip_prefix('{') {
                s = rest;
                loop {
                    s = tree(s, &path, out).trim_start();
                    match s.chars().next() {
                        Some(',') => s = &s[1..],
                        Some('}') => return &s[1..],
                        _ => return s,
                    }
                    if s.trim_start().starts_with('}') {
                        return &s.trim_start()[1..];
                    }
                }
            }
            let n = ident(s);
            if n == 0 {
                out.push(path);
                return s;
            }
            path.push(s[..n].to_owned());
            s = &s[n..];
            match s.strip_prefix("::") {
                Some(rest) => s = rest,
                None => {
                    out.push(path);
                    return s;
                }
            }
        }
    }
    // `super` of a `mod.rs` is its directory's parent; of `a/b.rs`, the module `a`.
    let parent: ModPath = module[..module.len().saturating_sub(1)].to_vec();
    let mut out = Vec::new();
    for (start, base) in [("crate::", ModPath::new()), ("super::", parent)] {
        let mut rest = code;
        while let Some(at) = rest.find(start) {
            let before = rest[..at].chars().next_back();
            rest = &rest[at + start.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            tree(rest, &base, &mut out);
        }
    }
    out
}

/// No two files of a crate import each other, directly or around a longer loop: a file is a
/// job another file builds on, not a partner it has to be read with. Counted are `crate::` and
/// `super::` paths in a file's own code (its `#[cfg(test)]` module aside), each resolved to the
/// file of the longest module prefix it names. The crate root (`lib.rs`, `main.rs`) only
/// re-exports, so a path through it is no edge; nor is a `mod.rs` re-exporting its children.
#[test]
fn no_file_level_import_cycles() {
    // Crates whose cycles another change of issue 15 removes (the node's split into consumer,
    // provider, peer and enrollment modules); an entry here is a debt, not a licence.
    let pending: &[&str] = &[];
    let mut found = Vec::new();
    for entry in std::fs::read_dir(root().join("crates")).unwrap() {
        let krate = entry.unwrap().path();
        let name = krate.file_name().unwrap().to_str().unwrap().to_owned();
        let src = krate.join("src");
        // Each binary under `src/bin/<name>/` is a crate of its own.
        let mut units: Vec<CrateSources> = Vec::new();
        let mut main: Vec<(PathBuf, String)> = Vec::new();
        for (path, text) in rust_files(&src) {
            let rel = path.strip_prefix(&src).unwrap().to_path_buf();
            if rel.starts_with("bin") {
                let bin = rel.iter().nth(1).unwrap().to_str().unwrap().trim_end_matches(".rs").to_owned();
                let unit = format!("{name} (bin {bin})");
                let base = src.join("bin").join(&bin);
                match units.iter_mut().find(|u| u.name == unit) {
                    Some(u) => u.files.push((path, text)),
                    None => units.push(CrateSources { name: unit, base, files: vec![(path, text)] }),
                }
            } else {
                main.push((path, text));
            }
        }
        units.push(CrateSources { name, base: src.clone(), files: main });
        for CrateSources { name: unit, base, files } in units {
            let modules: BTreeMap<ModPath, String> = files
                .iter()
                .map(|(p, _)| {
                    let rel = p.strip_prefix(&base).unwrap_or(p.strip_prefix(&src).unwrap());
                    (module_of(rel), module_of(rel).join("::"))
                })
                .collect();
            let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            for (path, text) in &files {
                let rel = path.strip_prefix(&base).unwrap_or(path.strip_prefix(&src).unwrap());
                let module = module_of(rel);
                let own = text.split("#[cfg(test)]").next().unwrap();
                let code: String =
                    own.lines().map(|l| l.split("//").next().unwrap()).collect::<Vec<_>>().join("\n");
                for target in referenced_paths(&code, &module) {
                    let hit =
                        (0..=target.len()).rev().map(|n| &target[..n]).find(|p| modules.contains_key(*p));
                    if let Some(hit) = hit
                        && !hit.is_empty()
                        && hit != module.as_slice()
                    {
                        edges.entry(module.join("::")).or_default().insert(hit.join("::"));
                    }
                }
            }
            // A cycle is an edge back to a module that reaches this one.
            for (from, tos) in &edges {
                for to in tos {
                    let mut seen = BTreeSet::new();
                    let mut stack = vec![(to.clone(), vec![from.clone(), to.clone()])];
                    while let Some((at, trail)) = stack.pop() {
                        if at == *from {
                            let cycle = format!("{unit}: {}", trail.join(" -> "));
                            // Report each cycle once, from its smallest module.
                            if trail.iter().min() == Some(from) && !found.contains(&cycle) {
                                found.push(cycle);
                            }
                            continue;
                        }
                        if !seen.insert(at.clone()) {
                            continue;
                        }
                        for next in edges.get(&at).into_iter().flatten() {
                            let mut t = trail.clone();
                            t.push(next.clone());
                            stack.push((next.clone(), t));
                        }
                    }
                }
            }
        }
    }
    let unexpected: Vec<&String> =
        found.iter().filter(|c| !pending.iter().any(|k| c.starts_with(&format!("{k}:")))).collect();
    assert!(
        unexpected.is_empty(),
        "files that import each other (split out what both need):\n{unexpected:#?}"
    );
}

/// The reference reader of [`no_file_level_import_cycles`] sees through `use` trees and `super`.
#[test]
fn import_references_are_read_through_use_trees() {
    let code = "use crate::{a::{b, c::D}, e};\nuse super::f::G;\nlet x = crate::h::i();\nmod t { pub(crate) fn j() {} }";
    let module: ModPath = vec!["m".into(), "n".into()];
    let found: BTreeSet<String> = referenced_paths(code, &module).iter().map(|p| p.join("::")).collect();
    let expected: BTreeSet<String> =
        ["a::b", "a::c::D", "e", "m::f::G", "h::i"].into_iter().map(str::to_owned).collect();
    assert_eq!(found, expected);
}
