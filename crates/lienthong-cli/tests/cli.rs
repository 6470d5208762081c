//! The operator's PKI steps, run through the real `lienthong` binary.

#![allow(clippy::print_stderr)]

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

/// Runs a command line given as one string (no argument here contains a space).
fn ok(dir: &Path, line: &str) -> String {
    let args: Vec<&str> = line.split_whitespace().collect();
    let out = lienthong(dir, &args);
    assert!(out.status.success(), "{line} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn fails_args(dir: &Path, args: &[&str]) -> String {
    let out = lienthong(dir, args);
    assert!(!out.status.success(), "{args:?} should fail");
    String::from_utf8(out.stderr).unwrap()
}

fn fails(dir: &Path, line: &str) -> String {
    fails_args(dir, &line.split_whitespace().collect::<Vec<_>>())
}

const NODE: &str = "VN/GOV/000.00.00.G22/ss1";

#[test]
fn an_operator_makes_a_ca_and_a_node_certificate_by_hand() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::write(d.join("ca.pass"), "ca secret\n").unwrap();
    std::fs::write(d.join("node.pass"), "node secret\n").unwrap();

    let out = ok(d, "pki ca init --instance VN --dir ca --passphrase-file ca.pass");
    assert!(out.contains("CA certificate"), "{out}");
    let ca_key = std::fs::read_to_string(d.join("ca/ca.key.pem")).unwrap();
    assert!(ca_key.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.join("ca/ca.key.pem")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    ok(d, "pki key new --type ecdsa-p256 --out node.key.pem --passphrase-file node.pass");
    ok(
        d,
        &format!("pki csr --key node.key.pem --passphrase-file node.pass --node {NODE} --out node.csr.pem"),
    );
    let out = ok(
        d,
        &format!(
            "pki issue --ca-dir ca --passphrase-file ca.pass --csr node.csr.pem --node {NODE} --days 30 --out node.crt.pem"
        ),
    );
    assert!(out.contains("node authentication certificate"), "{out}");

    let out = ok(d, "pki show node.crt.pem");
    assert!(out.contains(&format!("id:           {NODE}")), "{out}");
    assert!(out.contains("(valid now)"), "{out}");
    assert!(out.contains("key:          ecdsa-p256"), "{out}");

    let json: serde_json::Value = serde_json::from_str(&ok(d, "pki show --json node.crt.pem")).unwrap();
    assert_eq!(json["id"], NODE);
    assert_eq!(json["kind"], "node authentication certificate");
    assert_eq!(json["fingerprint_sha256"].as_str().unwrap().len(), 64);
    assert_eq!(json["valid_now"], true);

    // A member signing certificate, the key stored unencrypted on request.
    let member = "VN/GOV/000.00.00.G22";
    ok(d, "pki key new --type rsa-pss --out member.key.pem --no-passphrase");
    ok(d, &format!("pki csr --key member.key.pem --member {member} --out member.csr.pem"));
    ok(
        d,
        &format!(
            "pki issue --ca-dir ca --passphrase-file ca.pass --csr member.csr.pem --member {member} --out member.crt.pem"
        ),
    );
    assert!(ok(d, "pki show member.crt.pem").contains("member signing certificate"));

    // The CA signs only what the operator approved.
    let issue = "pki issue --ca-dir ca --passphrase-file ca.pass --out x.pem";
    let err = fails(d, &format!("{issue} --csr node.csr.pem --node VN/GOV/000.00.00.G22/ss2"));
    assert!(err.contains(&format!("the request names node {NODE}")), "{err}");
    let err = fails(d, &format!("{issue} --csr member.csr.pem --node {NODE}"));
    assert!(err.contains("member signing certificate"), "{err}");
    assert!(!d.join("x.pem").exists());
}

#[test]
fn operator_mistakes_get_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::write(d.join("good.pass"), "right").unwrap();
    std::fs::write(d.join("bad.pass"), "wrong").unwrap();
    ok(d, "pki ca init --instance VN --dir ca --passphrase-file good.pass");
    ok(d, "pki key new --out k.pem --passphrase-file good.pass");
    let csr = "pki csr --node VN/GOV/G01/ss1 --out r.pem";

    let err = fails(d, &format!("{csr} --key k.pem --passphrase-file bad.pass"));
    assert!(err.contains("wrong passphrase"), "{err}");
    let err = fails(d, &format!("{csr} --key k.pem"));
    assert!(err.contains("passphrase is required") && err.contains("--passphrase-file"), "{err}");
    let err = fails(d, &format!("{csr} --key missing.pem"));
    assert!(err.contains("reading key file missing.pem"), "{err}");
    // A certificate where a key belongs, and a key where a certificate belongs.
    let err = fails(d, &format!("{csr} --key ca/ca.crt.pem"));
    assert!(err.contains("expected a private key but found a PEM \"CERTIFICATE\" block"), "{err}");
    let err = fails(d, "pki show k.pem");
    assert!(err.contains("expected a CERTIFICATE"), "{err}");

    let err = fails(d, "pki key new --type dsa --out k2.pem --no-passphrase");
    assert!(err.contains("ed25519, ecdsa-p256, rsa-pss"), "{err}");
    let err = fails(d, "pki key new --out k3.pem");
    assert!(err.contains("a passphrase is needed"), "{err}");
    let err = fails(d, "pki key new --out k.pem --no-passphrase");
    assert!(err.contains("already exists"), "{err}");
    let err = fails_args(d, &["pki", "csr", "--key", "k.pem", "--node", "VN/GOV/G 01/ss1", "--out", "r.pem"]);
    assert!(err.contains("member code") && err.contains("' '"), "{err}");
    let err = fails(
        d,
        "pki issue --ca-dir ca --passphrase-file bad.pass --csr r.pem --node VN/GOV/G01/ss1 --out c.pem",
    );
    assert!(err.contains("wrong passphrase"), "{err}");
    let err = fails(d, "pki ca init --instance VN --dir ca --passphrase-file good.pass");
    assert!(err.contains("refusing to overwrite a CA"), "{err}");
}

#[test]
fn the_pki_walkthrough_refuses_the_unregistered_node() {
    let tmp = tempfile::tempdir().unwrap();
    let out = ok(tmp.path(), "demo --pki --dir demo");
    assert!(out.contains("answered over TLSv1_3"), "{out}");
    assert!(out.contains("refused: certificate"), "{out}");
    assert!(tmp.path().join("demo/provider.crt.pem").exists());
}

/// Operators and HSM import tools use OpenSSL: it must read what we write, and we what it writes.
/// `.ci/run` installs `openssl`, and under CI its absence is a failure; elsewhere it says so.
#[test]
fn openssl_interoperates() {
    let Ok(version) = Command::new("openssl").arg("version").output() else {
        assert!(std::env::var_os("CI").is_none(), "CI must have openssl installed");
        eprintln!("openssl not installed; interoperability not checked here");
        return;
    };
    assert!(version.status.success());
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl").args(args).current_dir(d).output().unwrap();
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    std::fs::write(d.join("p"), "pw").unwrap();
    ok(d, "pki ca init --instance VN --dir ca --passphrase-file p --type ecdsa-p256");
    for alg in ["ed25519", "ecdsa-p256", "rsa-pss"] {
        let key = format!("{alg}.key");
        ok(d, &format!("pki key new --type {alg} --out {key} --passphrase-file p"));
        openssl(&["pkey", "-in", &key, "-passin", "pass:pw", "-noout"]);
    }
    ok(d, &format!("pki csr --key ed25519.key --passphrase-file p --node {NODE} --out n.csr"));
    openssl(&["req", "-in", "n.csr", "-verify", "-noout"]);
    ok(d, &format!("pki issue --ca-dir ca --passphrase-file p --csr n.csr --node {NODE} --out n.crt"));
    openssl(&["verify", "-CAfile", "ca/ca.crt.pem", "n.crt"]);

    openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-aes-256-cbc",
        "-pass",
        "pass:pw",
        "-out",
        "o.key",
    ]);
    ok(d, "pki csr --key o.key --passphrase-file p --member VN/GOV/000.00.00.G22 --out o.csr");
}
