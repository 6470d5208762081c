//! A small `tmpfs` mounted for one test: a real file system that really fills up (disk-full
//! faults), unmounted when dropped. Needs root (CI runs as root). Where mounting is not
//! possible the test is skipped with a note, unless `LIENTHONG_REQUIRE_TMPFS` is set (as in CI),
//! where it fails: a fault test that skips in CI would be no test at all.
//!
//! Dependency-free, so crates below the testkit can include it with `#[path]`.

#![allow(unreachable_pub, dead_code, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The switch that turns "cannot mount" from a skip into a failure.
pub const REQUIRE_ENV: &str = "LIENTHONG_REQUIRE_TMPFS";

/// A mounted tmpfs; unmounted (lazily, so open files do not stop it) on drop.
#[derive(Debug)]
pub struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `bytes` at a new directory under `parent`. `None` (with a note on
    /// stderr) where mounting is impossible and not required.
    pub fn mount(parent: &Path, bytes: u64) -> Option<Self> {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self::mount_at(&parent.join(format!("tmpfs-{}-{n}", std::process::id())), bytes)
    }

    /// Mounts a tmpfs of `bytes` on `path` (made if missing; what it held is hidden meanwhile).
    pub fn mount_at(path: &Path, bytes: u64) -> Option<Self> {
        std::fs::create_dir_all(path).expect("create the mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes},mode=0700"), "tmpfs"])
            .arg(path)
            .status();
        match status {
            Ok(s) if s.success() => Some(Self { path: path.to_owned() }),
            other => {
                let why = format!("cannot mount a tmpfs at {} ({other:?}); needs root", path.display());
                if std::env::var_os(REQUIRE_ENV).is_some() {
                    panic!("{why}, and {REQUIRE_ENV} is set");
                }
                // Test output: the note that this test did not run here.
                eprintln!("skipped: {why}");
                None
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Fills the file system with a ballast file until writes fail, leaving `keep` bytes of it
    /// to free later with [`Tmpfs::free_ballast`]: returns the ballast's size.
    pub fn fill(&self, name: &str) -> u64 {
        use std::io::Write;
        let mut file = std::fs::File::create(self.path.join(name)).expect("create the ballast");
        let chunk = vec![0xA5u8; 64 << 10];
        let mut written = 0u64;
        // Bounded: the file system is small; a write fails with ENOSPC at its end.
        for _ in 0..1_000_000 {
            match file.write(&chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => written += n as u64,
            }
        }
        let _ = file.sync_all();
        written
    }

    /// Deletes a ballast file: the space returns.
    pub fn free_ballast(&self, name: &str) {
        std::fs::remove_file(self.path.join(name)).expect("delete the ballast");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}
