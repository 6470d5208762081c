//! The operator's PKI steps, run through the real `lienthong` binary.

use std::path::Path;
use std::process::{Command, Output};

fn lienthong(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lienthong"))
        .args(args)
        .current_dir(dir)
        .env_remove("LIENTHONG_KEY_PASSPHRASE")
        .output()
        .expect("run lienthong")
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = lienthong(dir, args);
    assert!(
        out.status.success(),
        "{args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn fails(dir: &Path, args: &[&str]) -> String {
    let out = lienthong(dir, args);
    assert!(!out.status.success(), "{args:?} should fail");
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn an_operator_makes_a_ca_and_a_node_certificate_by_hand() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::write(d.join("ca.pass"), "ca secret\n").unwrap();
    std::fs::write(d.join("node.pass"), "node secret\n").unwrap();

    let out = ok(
        d,
        &[
            "pki",
            "ca",
            "init",
            "--instance",
            "VN",
            "--dir",
            "ca",
            "--passphrase-file",
            "ca.pass",
        ],
    );
    assert!(out.contains("CA certificate"), "{out}");
    assert!(
        std::fs::read_to_string(d.join("ca/ca.key.pem"))
            .unwrap()
            .starts_with("-----BEGIN ENCRYPTED PRIVATE KEY")
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.join("ca/ca.key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    ok(
        d,
        &[
            "pki",
            "key",
            "new",
            "--type",
            "ecdsa-p256",
            "--out",
            "node.key.pem",
            "--passphrase-file",
            "node.pass",
        ],
    );
    ok(
        d,
        &[
            "pki",
            "csr",
            "--key",
            "node.key.pem",
            "--passphrase-file",
            "node.pass",
            "--node",
            "VN/GOV/000.00.00.G22/ss1",
            "--out",
            "node.csr.pem",
        ],
    );
    let out = ok(
        d,
        &[
            "pki",
            "issue",
            "--ca-dir",
            "ca",
            "--passphrase-file",
            "ca.pass",
            "--csr",
            "node.csr.pem",
            "--node",
            "VN/GOV/000.00.00.G22/ss1",
            "--days",
            "30",
            "--out",
            "node.crt.pem",
        ],
    );
    assert!(out.contains("node authentication certificate"), "{out}");

    let out = ok(d, &["pki", "show", "node.crt.pem"]);
    assert!(
        out.contains("id:           VN/GOV/000.00.00.G22/ss1"),
        "{out}"
    );
    assert!(out.contains("(valid now)"), "{out}");
    assert!(out.contains("key:          ecdsa-p256"), "{out}");

    let json: serde_json::Value =
        serde_json::from_str(&ok(d, &["pki", "show", "--json", "node.crt.pem"])).unwrap();
    assert_eq!(json["id"], "VN/GOV/000.00.00.G22/ss1");
    assert_eq!(json["kind"], "node authentication certificate");
    assert_eq!(json["fingerprint_sha256"].as_str().unwrap().len(), 64);
    assert_eq!(json["valid_now"], true);

    // Member signing certificate, key unencrypted on request.
    ok(
        d,
        &[
            "pki",
            "key",
            "new",
            "--type",
            "rsa-pss",
            "--out",
            "member.key.pem",
            "--no-passphrase",
        ],
    );
    ok(
        d,
        &[
            "pki",
            "csr",
            "--key",
            "member.key.pem",
            "--member",
            "VN/GOV/000.00.00.G22",
            "--out",
            "member.csr.pem",
        ],
    );
    ok(
        d,
        &[
            "pki",
            "issue",
            "--ca-dir",
            "ca",
            "--passphrase-file",
            "ca.pass",
            "--csr",
            "member.csr.pem",
            "--member",
            "VN/GOV/000.00.00.G22",
            "--out",
            "member.crt.pem",
        ],
    );
    assert!(ok(d, &["pki", "show", "member.crt.pem"]).contains("member signing certificate"));

    // The CA signs only what the operator approved.
    let err = fails(
        d,
        &[
            "pki",
            "issue",
            "--ca-dir",
            "ca",
            "--passphrase-file",
            "ca.pass",
            "--csr",
            "node.csr.pem",
            "--node",
            "VN/GOV/000.00.00.G22/ss2",
            "--out",
            "x.pem",
        ],
    );
    assert!(
        err.contains("the request names node VN/GOV/000.00.00.G22/ss1"),
        "{err}"
    );
    let err = fails(
        d,
        &[
            "pki",
            "issue",
            "--ca-dir",
            "ca",
            "--passphrase-file",
            "ca.pass",
            "--csr",
            "member.csr.pem",
            "--node",
            "VN/GOV/000.00.00.G22/ss1",
            "--out",
            "x.pem",
        ],
    );
    assert!(err.contains("member signing certificate"), "{err}");
    assert!(!d.join("x.pem").exists());
}

#[test]
fn operator_mistakes_get_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::write(d.join("good.pass"), "right").unwrap();
    std::fs::write(d.join("bad.pass"), "wrong").unwrap();
    ok(
        d,
        &[
            "pki",
            "ca",
            "init",
            "--instance",
            "VN",
            "--dir",
            "ca",
            "--passphrase-file",
            "good.pass",
        ],
    );
    ok(
        d,
        &[
            "pki",
            "key",
            "new",
            "--out",
            "k.pem",
            "--passphrase-file",
            "good.pass",
        ],
    );

    let err = fails(
        d,
        &[
            "pki",
            "csr",
            "--key",
            "k.pem",
            "--passphrase-file",
            "bad.pass",
            "--node",
            "VN/GOV/G01/ss1",
            "--out",
            "r.pem",
        ],
    );
    assert!(err.contains("wrong passphrase"), "{err}");
    let err = fails(
        d,
        &[
            "pki",
            "csr",
            "--key",
            "k.pem",
            "--node",
            "VN/GOV/G01/ss1",
            "--out",
            "r.pem",
        ],
    );
    assert!(
        err.contains("passphrase is required") && err.contains("--passphrase-file"),
        "{err}"
    );
    let err = fails(
        d,
        &[
            "pki",
            "csr",
            "--key",
            "missing.pem",
            "--node",
            "VN/GOV/G01/ss1",
            "--out",
            "r.pem",
        ],
    );
    assert!(err.contains("reading key file missing.pem"), "{err}");
    // A certificate where a key belongs.
    let err = fails(
        d,
        &[
            "pki",
            "csr",
            "--key",
            "ca/ca.crt.pem",
            "--node",
            "VN/GOV/G01/ss1",
            "--out",
            "r.pem",
        ],
    );
    assert!(
        err.contains("expected a private key but found a PEM \"CERTIFICATE\" block"),
        "{err}"
    );
    // A key where a certificate belongs.
    let err = fails(d, &["pki", "show", "k.pem"]);
    assert!(err.contains("expected a CERTIFICATE"), "{err}");
    let err = fails(
        d,
        &[
            "pki",
            "key",
            "new",
            "--type",
            "dsa",
            "--out",
            "k2.pem",
            "--no-passphrase",
        ],
    );
    assert!(err.contains("ed25519, ecdsa-p256, rsa-pss"), "{err}");
    let err = fails(d, &["pki", "key", "new", "--out", "k3.pem"]);
    assert!(err.contains("a passphrase is needed"), "{err}");
    let err = fails(
        d,
        &["pki", "key", "new", "--out", "k.pem", "--no-passphrase"],
    );
    assert!(err.contains("already exists"), "{err}");
    let err = fails(
        d,
        &[
            "pki",
            "csr",
            "--key",
            "k.pem",
            "--passphrase-file",
            "good.pass",
            "--node",
            "VN/GOV/G 01/ss1",
            "--out",
            "r.pem",
        ],
    );
    assert!(err.contains("member code") && err.contains("' '"), "{err}");
    let err = fails(
        d,
        &[
            "pki",
            "issue",
            "--ca-dir",
            "ca",
            "--passphrase-file",
            "bad.pass",
            "--csr",
            "r.pem",
            "--node",
            "VN/GOV/G01/ss1",
            "--out",
            "c.pem",
        ],
    );
    assert!(err.contains("wrong passphrase"), "{err}");
    let err = fails(
        d,
        &[
            "pki",
            "ca",
            "init",
            "--instance",
            "VN",
            "--dir",
            "ca",
            "--passphrase-file",
            "good.pass",
        ],
    );
    assert!(err.contains("refusing to overwrite a CA"), "{err}");
}

#[test]
fn demo_runs_and_refuses_the_unregistered_node() {
    let tmp = tempfile::tempdir().unwrap();
    let out = ok(tmp.path(), &["demo", "--dir", "demo"]);
    assert!(out.contains("answered over TLSv1_3"), "{out}");
    assert!(out.contains("refused: certificate"), "{out}");
    assert!(tmp.path().join("demo/provider.crt.pem").exists());
}
