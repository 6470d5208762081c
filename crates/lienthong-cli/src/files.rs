//! Reading and writing PEM files and passphrases, with errors that name the file.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use lienthong_pki::{Certificate, KeyError, PrivateKey};

/// Environment variable read for a key passphrase when no file is given.
pub(crate) const PASSPHRASE_ENV: &str = "LIENTHONG_KEY_PASSPHRASE";

/// Where a key's passphrase comes from.
#[derive(Debug, Clone, Args)]
pub(crate) struct Passphrase {
    /// File holding the key's passphrase (first line). Without it, $LIENTHONG_KEY_PASSPHRASE.
    #[arg(long, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,
}

/// For commands that write a new key: it may also be stored unencrypted, if asked explicitly.
#[derive(Debug, Clone, Args)]
pub(crate) struct NewKeyProtection {
    #[command(flatten)]
    passphrase: Passphrase,
    /// Store the private key unencrypted (for keys kept in a secret store or an HSM import).
    #[arg(long, conflicts_with = "passphrase_file")]
    no_passphrase: bool,
}

impl NewKeyProtection {
    /// The passphrase to encrypt new keys with; `None` only if `--no-passphrase` was given.
    pub(crate) fn read(&self) -> Result<Option<Vec<u8>>> {
        if self.no_passphrase {
            return Ok(None);
        }
        match self.passphrase.read()? {
            Some(p) => Ok(Some(p)),
            None => bail!(
                "a passphrase is needed to protect the new keys: give --passphrase-file, set {PASSPHRASE_ENV}, or pass --no-passphrase"
            ),
        }
    }
}

impl Passphrase {
    pub(crate) fn read(&self) -> Result<Option<Vec<u8>>> {
        if let Some(path) = &self.passphrase_file {
            let text = fs::read_to_string(path)
                .with_context(|| format!("reading passphrase file {}", path.display()))?;
            let line = text.lines().next().unwrap_or_default();
            if line.is_empty() {
                bail!("passphrase file {} is empty", path.display());
            }
            return Ok(Some(line.as_bytes().to_vec()));
        }
        Ok(std::env::var_os(PASSPHRASE_ENV).filter(|v| !v.is_empty()).map(|v| v.into_encoded_bytes()))
    }
}

/// Reads a private key, encrypted or not.
pub(crate) fn read_key(path: &Path, pass: &Passphrase) -> Result<PrivateKey> {
    let pem = fs::read_to_string(path).with_context(|| format!("reading key file {}", path.display()))?;
    let passphrase = pass.read()?;
    PrivateKey::from_pem(&pem, passphrase.as_deref()).map_err(|e| {
        let hint = match e {
            KeyError::PassphraseRequired => {
                format!(" (give --passphrase-file or set {PASSPHRASE_ENV})")
            }
            _ => String::new(),
        };
        anyhow::anyhow!("key file {}: {e}{hint}", path.display())
    })
}

/// Writes a new private key, encrypted unless `--no-passphrase`; never overwrites a file.
pub(crate) fn write_key(path: &Path, key: &PrivateKey, protection: &NewKeyProtection) -> Result<()> {
    let pem = match protection.read()? {
        None => key.to_pem(),
        Some(pass) => key.to_encrypted_pem(&pass)?,
    };
    write_new(path, pem.as_bytes(), true)
}

pub(crate) fn read_cert(path: &Path) -> Result<Certificate> {
    let pem =
        fs::read_to_string(path).with_context(|| format!("reading certificate file {}", path.display()))?;
    Certificate::from_pem(&pem).with_context(|| format!("certificate file {}", path.display()))
}

/// Creates a file that must not exist yet; secrets get mode 0600.
pub(crate) fn write_new(path: &Path, bytes: &[u8], secret: bool) -> Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).with_context(|| {
        if path.exists() {
            format!("{} already exists; refusing to overwrite it", path.display())
        } else {
            format!("creating {}", path.display())
        }
    })?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}
