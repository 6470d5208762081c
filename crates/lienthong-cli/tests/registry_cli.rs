//! The registry operator's commands, run through the real `lienthong` binary against a registry
//! served by `lienthong registry serve` on loopback.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

fn lienthong(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lienthong"))
        .args(args)
        .current_dir(dir)
        .env_remove("LIENTHONG_KEY_PASSPHRASE")
        .env_remove("LIENTHONG_REGISTRY_CONFIG")
        .output()
        .expect("run lienthong")
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = lienthong(dir, args);
    assert!(out.status.success(), "{args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn fails(dir: &Path, args: &[&str]) -> String {
    let out = lienthong(dir, args);
    assert!(!out.status.success(), "{args:?} should fail");
    String::from_utf8(out.stderr).unwrap()
}

const CONFIG: &str = r#"
instance = "VN"
data_dir = "registry"
[http]
listen = "127.0.0.1:0"
[grpc]
listen = "127.0.0.1:0"
"#;

/// `registry serve` in the background; killed on drop.
struct Serving {
    child: Child,
    api: String,
}

impl Serving {
    fn start(dir: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_lienthong"))
            .args(["registry", "serve", "--config", "registry.toml"])
            .current_dir(dir)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn serve");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(api) = line.strip_prefix("api: ") {
                    let _ = tx.send(api.to_owned());
                }
            }
        });
        let api = rx.recv_timeout(Duration::from_secs(30)).expect("serve prints its API address");
        Self { child, api }
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn an_operator_runs_a_registry_from_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::write(d.join("registry.toml"), CONFIG).unwrap();
    let out = ok(
        d,
        &["registry", "init", "--config", "registry.toml", "--no-passphrase", "--admin-name", "Trần Thị B"],
    );
    assert!(out.contains("anchor"), "{out}");
    let again = fails(d, &["registry", "init", "--config", "registry.toml", "--no-passphrase"]);
    assert!(again.contains("already holds a registry"), "{again}");

    let serving = Serving::start(d);
    let admin = |args: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        v.extend(["--config".into(), "registry.toml".into(), "--url".into(), serving.api.clone()]);
        v
    };
    let run = |args: &[&str]| {
        let v = admin(args);
        ok(d, &v.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let refuse = |args: &[&str]| {
        let v = admin(args);
        fails(d, &v.iter().map(String::as_str).collect::<Vec<_>>())
    };

    run(&["registry", "member", "add", "VN/GOV/000.00.00.G01", "--name", "Bộ Công an"]);
    run(&["registry", "member", "add", "VN/GOV/000.00.00.G22", "--name", "Văn phòng Chính phủ"]);
    run(&["registry", "subsystem", "add", "VN/GOV/000.00.00.G22/cong-dich-vu", "--name", "Cổng DVC"]);
    let dup = refuse(&["registry", "member", "add", "VN/GOV/000.00.00.G01", "--name", "again"]);
    assert!(dup.contains("duplicate"), "{dup}");
    let bad_class = refuse(&["registry", "member", "add", "VN/XYZ/1", "--name", "x"]);
    assert!(bad_class.contains("member class XYZ is not defined"), "{bad_class}");
    let bad_id = refuse(&["registry", "member", "add", "VN/GOV", "--name", "x"]);
    assert!(bad_id.contains("invalid value"), "{bad_id}");
    let list = run(&["registry", "member", "list"]);
    assert!(list.contains("VN/GOV/000.00.00.G01  Bộ Công an  [active]"), "{list}");
    assert!(list.contains("subsystem cong-dich-vu"), "{list}");

    run(&[
        "registry",
        "group",
        "put",
        "VN/co-quan-trung-uong",
        "--member",
        "VN/GOV/000.00.00.G22/cong-dich-vu",
    ]);
    let groups = run(&["registry", "group", "list"]);
    assert!(groups.contains("VN/GOV/000.00.00.G22/cong-dich-vu"), "{groups}");
    let no_service = refuse(&[
        "registry",
        "grant",
        "add",
        "--service",
        "VN/GOV/000.00.00.G01/dancu/tra-cuu",
        "--group",
        "VN/co-quan-trung-uong",
        "--legal-basis",
        "Nghị định 47/2020/NĐ-CP",
    ]);
    assert!(no_service.contains("not_found"), "{no_service}");
    assert_eq!(run(&["registry", "requests", "list", "--state", "all"]), "");
    let closed = run(&["registry", "member", "close", "VN/GOV/000.00.00.G01", "--reason", "merged"]);
    assert!(closed.contains("closed member"), "{closed}");

    let show = run(&["registry", "globalconf", "show", "--out", "gc.bin"]);
    assert!(show.contains("valid: instance VN"), "{show}");
    let verified = ok(d, &["registry", "globalconf", "verify", "gc.bin", "--anchor", "registry/anchor.json"]);
    assert!(verified.contains("2 members"), "{verified}");
    let mut bytes = std::fs::read(d.join("gc.bin")).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(d.join("tampered.bin"), bytes).unwrap();
    let tampered =
        fails(d, &["registry", "globalconf", "verify", "tampered.bin", "--anchor", "registry/anchor.json"]);
    assert!(tampered.contains("does not verify") || tampered.contains("malformed"), "{tampered}");

    // Key rollover is an offline step: refused while the registry serves.
    let busy = fails(d, &["registry", "conf-key", "add", "--config", "registry.toml"]);
    assert!(busy.contains("stop `registry serve` first"), "{busy}");
    drop(serving);
    let added = ok(d, &["registry", "conf-key", "add", "--config", "registry.toml"]);
    assert!(added.contains("both keys sign"), "{added}");
    let keys = ok(d, &["registry", "conf-key", "list", "--config", "registry.toml"]);
    assert_eq!(keys.lines().filter(|l| l.contains("ed25519")).count(), 2, "{keys}");
    let anchor = std::fs::read_to_string(d.join("registry/anchor.json")).unwrap();
    assert_eq!(anchor.matches("\"key_id\"").count(), 2, "{anchor}");
}

#[test]
fn bad_configuration_and_key_files_stop_serve_before_it_binds() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::write(d.join("registry.toml"), format!("{CONFIG}colour = \"red\"\n")).unwrap();
    let unknown = fails(d, &["registry", "serve", "--config", "registry.toml"]);
    assert!(unknown.contains("unknown field `colour`"), "{unknown}");

    std::fs::write(d.join("registry.toml"), CONFIG).unwrap();
    let missing = fails(d, &["registry", "serve", "--config", "registry.toml"]);
    assert!(missing.contains("registry init"), "{missing}");
    ok(d, &["registry", "init", "--config", "registry.toml", "--no-passphrase"]);
    std::fs::write(d.join("registry/keys/tls.key"), "not a key").unwrap();
    let unreadable = fails(d, &["registry", "serve", "--config", "registry.toml"]);
    assert!(unreadable.contains("tls.key"), "{unreadable}");
}
