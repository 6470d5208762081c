//! Key and certificate files: PKCS#8 PEM (encrypted with a passphrase), mode 0600, never overwritten.

use super::*;

/// The DER prefix of a PKCS#8 v1 Ed25519 private key (RFC 8410); the 32-byte seed follows.
pub(super) const ED25519_PKCS8_PREFIX: [u8; 16] =
    [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];

/// The body key carried as an Ed25519 seed (see the module documentation).
pub(super) fn body_key_container(raw: &[u8]) -> Result<PrivateKey, HomeError> {
    let mut der = [ED25519_PKCS8_PREFIX.as_slice(), raw].concat();
    let key = PrivateKey::from_pkcs8_der(&der).map_err(|e| crypto("body key", e));
    wipe(&mut der);
    key
}

pub(super) fn read_body_key(path: &Path, passphrase: Option<&[u8]>) -> Result<BodyKey, HomeError> {
    let container = read_key(path, passphrase)?;
    let corrupt = || HomeError::Corrupt { path: path.to_owned(), reason: "not a body key".into() };
    let pem = container.to_pem();
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let mut der = BASE64.decode(b64.as_bytes()).map_err(|_| corrupt())?;
    let key = match der.strip_prefix(ED25519_PKCS8_PREFIX.as_slice()) {
        Some(seed) => BodyKey::from_bytes(seed).map_err(|_| corrupt()),
        None => Err(corrupt()),
    };
    wipe(&mut der);
    key
}

/// Best-effort wipe of secret bytes this module copied (the node does not depend on zeroize).
pub(super) fn wipe(buf: &mut [u8]) {
    buf.fill(0);
    std::hint::black_box(buf);
}

pub(super) fn read_cert(path: &Path) -> Result<Certificate, HomeError> {
    let pem = fs::read_to_string(path).map_err(io_error("read", path))?;
    Certificate::from_pem(&pem).map_err(|error| HomeError::Cert { path: path.to_owned(), error })
}

pub(super) fn read_key(path: &Path, passphrase: Option<&[u8]>) -> Result<PrivateKey, HomeError> {
    let pem = fs::read_to_string(path).map_err(io_error("read", path))?;
    PrivateKey::from_pem(&pem, passphrase).map_err(|error| HomeError::Key { path: path.to_owned(), error })
}

pub(super) fn write_key(path: &Path, key: &PrivateKey, passphrase: Option<&[u8]>) -> Result<(), HomeError> {
    let pem = match passphrase {
        Some(p) => {
            key.to_encrypted_pem(p).map_err(|error| HomeError::Key { path: path.to_owned(), error })?
        }
        None => key.to_pem(),
    };
    write_new(path, pem.as_bytes(), true)
}

/// Writes a certificate, accepting an identical file left by an interrupted run.
pub(super) fn write_cert(path: &Path, cert: &Certificate) -> Result<(), HomeError> {
    let pem = cert.to_pem();
    match fs::read_to_string(path) {
        Ok(existing) if existing == pem => Ok(()),
        Ok(_) => Err(HomeError::Corrupt {
            path: path.to_owned(),
            reason: "holds a different certificate than the registry issued".into(),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => write_new(path, pem.as_bytes(), false),
        Err(e) => Err(io_error("read", path)(e)),
    }
}

/// Creates a file that must not exist yet, durably; secrets get mode 0600.
pub(super) fn write_new(path: &Path, bytes: &[u8], secret: bool) -> Result<(), HomeError> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(io_error("create", path))?;
    file.write_all(bytes).and_then(|()| file.sync_all()).map_err(io_error("write", path))
}
