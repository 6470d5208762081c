//! The state directory: the persisted configuration (the rollback floor), the learned keys, and
//! the lock that gives the directory to one client. Blocking file I/O throughout.

use std::fs::{self, File, TryLockError};
use std::io::{self, Write};
use std::path::Path;
use std::time::SystemTime;

use lienthong_globalconf::{Anchor, AnchorError, ConfKey};

use crate::error::{ConfClientError, io_error};

/// The persisted last good configuration, in the state directory.
pub const CONF_FILE: &str = "globalconf.bin";
/// Keys learned from the held configuration, as anchor JSON, in the state directory.
pub const LEARNED_KEYS_FILE: &str = "learned-keys.json";
const LOCK_FILE: &str = "lock";

/// Creates the directory if needed and locks it; the lock is held while the file stays open.
pub(crate) fn lock_state_dir(dir: &Path) -> Result<File, ConfClientError> {
    fs::create_dir_all(dir).map_err(io_error("create the state directory", dir))?;
    let path = dir.join(LOCK_FILE);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_error("open the lock file", &path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(ConfClientError::StateDirInUse { path: dir.to_owned() }),
        Err(TryLockError::Error(e)) => Err(io_error("lock", &path)(e)),
    }
}

/// The persisted configuration's bytes, if there is one.
pub(crate) fn load_conf(dir: &Path) -> Result<Option<Vec<u8>>, ConfClientError> {
    let path = dir.join(CONF_FILE);
    match fs::read(&path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error("read", &path)(e)),
    }
}

pub(crate) fn load_learned_keys(dir: &Path, anchor: &Anchor) -> Result<Vec<ConfKey>, ConfClientError> {
    let path = dir.join(LEARNED_KEYS_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error("read", &path)(e)),
    };
    let invalid = |reason: String| ConfClientError::LearnedKeysInvalid { path: path.clone(), reason };
    let file = Anchor::from_json(&text).map_err(|e: AnchorError| invalid(e.to_string()))?;
    if file.instance != anchor.instance {
        return Err(invalid(format!(
            "it is for instance {}, the anchor for {}",
            file.instance, anchor.instance
        )));
    }
    Ok(file.signing_keys.into_iter().filter(|k| !anchor.signing_keys.iter().any(|a| a.id == k.id)).collect())
}

/// Writes the configuration, then the learned keys if they changed.
pub(crate) fn persist(
    dir: &Path,
    conf: &[u8],
    anchor: &Anchor,
    old_learned: &[ConfKey],
    learned: &[ConfKey],
    now: SystemTime,
) -> Result<(), ConfClientError> {
    write_atomically(dir, CONF_FILE, conf)?;
    if learned != old_learned {
        persist_learned_keys(dir, anchor, learned, now)?;
    }
    Ok(())
}

pub(crate) fn persist_learned_keys(
    dir: &Path,
    anchor: &Anchor,
    learned: &[ConfKey],
    now: SystemTime,
) -> Result<(), ConfClientError> {
    if learned.is_empty() {
        // Anchor JSON cannot hold an empty key list; no file means no learned key.
        let path = dir.join(LEARNED_KEYS_FILE);
        return match fs::remove_file(&path) {
            Ok(()) => sync_dir(dir),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error("remove", &path)(e)),
        };
    }
    let file = Anchor {
        instance: anchor.instance.clone(),
        conf_urls: anchor.conf_urls.clone(),
        signing_keys: learned.to_vec(),
        generated_at: now,
    };
    write_atomically(dir, LEARNED_KEYS_FILE, file.to_json().as_bytes())
}

/// Temporary file, fsync, rename, fsync of the directory: after a crash the file is either the
/// old or the new content, never a mix. The fixed temporary name is safe because writes are
/// serialised (state lock, directory lock).
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), ConfClientError> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    let write = || -> io::Result<()> {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()
    };
    write().map_err(io_error("write", &tmp))?;
    fs::rename(&tmp, &path).map_err(io_error("rename into place", &path))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), ConfClientError> {
    #[cfg(unix)]
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_error("sync the directory", dir))?;
    Ok(())
}
