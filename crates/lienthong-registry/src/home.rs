//! A registry's directory: its store, keys, administrator credential and anchor.
//!
//! ```text
//! DIR/registry.redb          the store
//! DIR/keys/ca.pem, ca.key    the instance CA (kept here; may be moved offline between issues)
//! DIR/keys/tls.pem, tls.key  the registry's TLS server certificate
//! DIR/keys/conf-<id>.key     configuration-signing keys (separate from the CA key)
//! DIR/admin/admin.pem, .key  the first administrator's client credential
//! DIR/anchor.json            the anchor to hand to nodes
//! ```

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use lienthong_globalconf::{Anchor, ConfKey};
use lienthong_pki::tls::TlsIdentity;
use lienthong_pki::{Certificate, CertificateAuthority, Csr, KeyAlgorithm, PrivateKey, Validity};
use lienthong_types::{InstanceId, MemberClass};

use crate::error::RegistryError;
use crate::registry::{Clock, Registry, Settings, SigningKey};

/// A file-system problem, naming the file.
fn io_error(
    path: &Path,
    action: &'static str,
    e: impl std::error::Error + Send + Sync + 'static,
) -> RegistryError {
    RegistryError::File { action, path: path.to_owned(), source: Box::new(e) }
}

/// Paths inside a registry directory.
#[derive(Debug, Clone)]
pub struct RegistryHome {
    dir: PathBuf,
}

/// What `registry init` needs beyond the directory.
#[derive(Debug, Clone)]
pub struct InitOptions {
    pub instance: InstanceId,
    pub member_classes: Vec<(MemberClass, String)>,
    pub admin_name: String,
    pub key_algorithm: KeyAlgorithm,
    /// Encrypts every private key written; `None` writes them unencrypted (mode 0600).
    pub passphrase: Option<Vec<u8>>,
}

impl RegistryHome {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.join("registry.redb")
    }

    pub fn anchor_path(&self) -> PathBuf {
        self.dir.join("anchor.json")
    }

    pub fn ca_cert_path(&self) -> PathBuf {
        self.dir.join("keys/ca.pem")
    }

    pub fn admin_cert_path(&self) -> PathBuf {
        self.dir.join("admin/admin.pem")
    }

    pub fn admin_key_path(&self) -> PathBuf {
        self.dir.join("admin/admin.key")
    }

    /// Creates a registry: CA, TLS and configuration-signing keys, the first administrator,
    /// the store and the anchor. Refuses a directory that already holds a registry.
    pub fn init(
        &self,
        opts: &InitOptions,
        settings: Settings,
        clock: Clock,
    ) -> Result<Registry, RegistryError> {
        if self.db_path().exists() {
            return Err(RegistryError::Duplicate(format!("{} already holds a registry", self.dir.display())));
        }
        if settings.instance != opts.instance {
            return Err(RegistryError::Invalid("settings and options name different instances".into()));
        }
        for sub in ["keys", "admin"] {
            let p = self.dir.join(sub);
            fs::create_dir_all(&p).map_err(|e| io_error(&p, "creating", e))?;
        }
        let now = clock();
        let pass = opts.passphrase.as_deref();
        let gen_key = || PrivateKey::generate(opts.key_algorithm).map_err(RegistryError::internal);

        let ca_key = gen_key()?;
        let ca = CertificateAuthority::init(opts.instance.clone(), &ca_key, Validity::days(3650), now)
            .map_err(RegistryError::internal)?;
        write_key(&self.dir.join("keys/ca.key"), &ca_key, pass)?;
        write_new(&self.ca_cert_path(), ca.certificate().to_pem().as_bytes(), false)?;

        let tls_key = gen_key()?;
        let csr = Csr::for_registry(&tls_key, &opts.instance).map_err(RegistryError::internal)?;
        let tls_cert = ca.issue_registry(&csr, Validity::days(730), now).map_err(RegistryError::internal)?;
        write_key(&self.dir.join("keys/tls.key"), &tls_key, pass)?;
        write_new(&self.dir.join("keys/tls.pem"), tls_cert.to_pem().as_bytes(), false)?;

        let admin_key = gen_key()?;
        let csr = Csr::for_admin(&admin_key, &opts.instance, &opts.admin_name)
            .map_err(|e| RegistryError::Invalid(format!("administrator name: {e}")))?;
        let admin_cert = ca.issue_admin(&csr, Validity::days(730), now).map_err(RegistryError::internal)?;
        write_key(&self.admin_key_path(), &admin_key, pass)?;
        write_new(&self.admin_cert_path(), admin_cert.to_pem().as_bytes(), false)?;

        let registry = Registry::open(&self.db_path(), settings, ca, Vec::new(), clock)?;
        for cert in [&tls_cert, &admin_cert] {
            registry.record_certificate(cert)?;
        }
        for (class, description) in &opts.member_classes {
            registry.add_member_class(class, description)?;
        }
        let key = self.new_conf_key(opts.key_algorithm, pass, now)?;
        registry.add_conf_key(key.0, &key.1)?;
        self.write_anchor(&registry, now)?;
        Ok(registry)
    }

    /// Generates a configuration-signing key and stores it; returns it with its file name.
    pub fn new_conf_key(
        &self,
        alg: KeyAlgorithm,
        passphrase: Option<&[u8]>,
        now: SystemTime,
    ) -> Result<(SigningKey, String), RegistryError> {
        let key = PrivateKey::generate(alg).map_err(RegistryError::internal)?;
        let public = ConfKey::new(key.public_key(), now, None);
        let file = format!("conf-{}.key", &public.id.to_string()[..16]);
        write_key(&self.dir.join("keys").join(&file), &key, passphrase)?;
        Ok((SigningKey { public, key }, file))
    }

    /// Opens an existing registry with its keys.
    pub fn open(
        &self,
        settings: Settings,
        passphrase: Option<&[u8]>,
        clock: Clock,
    ) -> Result<(Registry, TlsIdentity), RegistryError> {
        if !self.db_path().exists() {
            return Err(RegistryError::NotFound(format!(
                "no registry in {} (run `lienthong registry init` first)",
                self.dir.display()
            )));
        }
        let ca_cert = read_cert(&self.ca_cert_path())?;
        let ca_key = read_key(&self.dir.join("keys/ca.key"), passphrase)?;
        let ca = CertificateAuthority::load(ca_cert.clone(), &ca_key)
            .map_err(|e| RegistryError::Invalid(format!("CA key and certificate: {e}")))?;
        let keys_dir = self.dir.join("keys");
        let load = |file: &str| read_key(&keys_dir.join(file), passphrase);
        let registry = Registry::open_with_stored_keys(&self.db_path(), settings, ca, &load, clock)?;
        let tls = TlsIdentity {
            chain: vec![read_cert(&self.dir.join("keys/tls.pem"))?, ca_cert],
            key: std::sync::Arc::new(read_key(&self.dir.join("keys/tls.key"), passphrase)?),
        };
        Ok((registry, tls))
    }

    /// Writes the anchor for the registry's current keys (replacing the previous one).
    pub fn write_anchor(&self, registry: &Registry, now: SystemTime) -> Result<Anchor, RegistryError> {
        let anchor = registry.anchor(now);
        let path = self.anchor_path();
        let tmp = path.with_extension("json.tmp");
        let _ = fs::remove_file(&tmp);
        write_new(&tmp, anchor.to_json().as_bytes(), false)?;
        fs::rename(&tmp, &path).map_err(|e| io_error(&path, "writing", e))?;
        Ok(anchor)
    }

    /// The administrator credential `registry init` made, for the CLI's admin commands.
    pub fn admin_identity(&self, passphrase: Option<&[u8]>) -> Result<TlsIdentity, RegistryError> {
        Ok(TlsIdentity {
            chain: vec![read_cert(&self.admin_cert_path())?],
            key: std::sync::Arc::new(read_key(&self.admin_key_path(), passphrase)?),
        })
    }
}

pub(crate) fn read_cert(path: &Path) -> Result<Certificate, RegistryError> {
    let pem = fs::read_to_string(path).map_err(|e| io_error(path, "reading", e))?;
    Certificate::from_pem(&pem).map_err(|e| io_error(path, "certificate", e))
}

pub(crate) fn read_key(path: &Path, passphrase: Option<&[u8]>) -> Result<PrivateKey, RegistryError> {
    let pem = fs::read_to_string(path).map_err(|e| io_error(path, "reading", e))?;
    PrivateKey::from_pem(&pem, passphrase).map_err(|e| io_error(path, "key", e))
}

fn write_key(path: &Path, key: &PrivateKey, passphrase: Option<&[u8]>) -> Result<(), RegistryError> {
    let pem = match passphrase {
        Some(p) => key.to_encrypted_pem(p).map_err(RegistryError::internal)?,
        None => key.to_pem(),
    };
    write_new(path, pem.as_bytes(), true)
}

/// Creates a file that must not exist yet, durably; secrets get mode 0600.
fn write_new(path: &Path, bytes: &[u8], secret: bool) -> Result<(), RegistryError> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|e| io_error(path, "creating", e))?;
    file.write_all(bytes).and_then(|()| file.sync_all()).map_err(|e| io_error(path, "writing", e))
}
