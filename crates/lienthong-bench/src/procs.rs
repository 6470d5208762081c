//! Child processes of a run: started pinned to a CPU when asked, killed when dropped, stopped
//! with SIGTERM when asked, and waited for by their listening port.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// A process the run started; killed on drop.
#[derive(Debug)]
pub struct Proc {
    pub name: String,
    child: Child,
}

impl Proc {
    /// Starts `program args` (on `cpu` when given), its output appended to `log` (a restarted
    /// process continues its predecessor's).
    pub fn start(name: &str, program: &Path, args: &[&str], cpu: Option<u32>, log: &Path) -> Result<Self> {
        let mut cmd = match cpu {
            Some(c) => {
                let mut t = Command::new("taskset");
                t.arg("-c").arg(c.to_string()).arg(program);
                t
            }
            None => Command::new(program),
        };
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("open {}", log.display()))?;
        cmd.args(args).stdin(Stdio::null()).stdout(out.try_clone()?).stderr(out).env("NO_COLOR", "1");
        // taskset execs the program, so the pid is the program's.
        let child = cmd.spawn().with_context(|| format!("start {name} ({})", program.display()))?;
        Ok(Self { name: name.to_owned(), child })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails if the process has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited: {status}", self.name);
        }
        Ok(())
    }

    /// The exit status, if the process has exited.
    pub fn exited(&mut self) -> Result<Option<ExitStatus>> {
        Ok(self.child.try_wait()?)
    }

    /// SIGKILL, and waits for the process to be gone.
    pub fn kill(mut self) -> Result<ExitStatus> {
        let _ = self.child.kill();
        Ok(self.child.wait()?)
    }

    /// SIGTERM (through kill(1): the workspace has no unsafe code for libc), then waits up to
    /// `limit` for the process to exit: its status, or `None` when it had to be killed.
    pub fn terminate(mut self, limit: Duration) -> Result<Option<ExitStatus>> {
        let pid = self.child.id().to_string();
        // kill(1) fails when the process is gone already; try_wait tells.
        let _ = Command::new("kill").args(["-TERM", &pid]).stderr(Stdio::null()).status();
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                self.child.wait()?;
                return Ok(None);
            }
            std::thread::park_timeout(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port free on 127.0.0.1 now (the race with other programs is acceptable for a benchmark).
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Waits up to `limit` until something accepts connections on `addr`, while `proc` lives.
pub fn wait_listening(proc: &mut Proc, addr: SocketAddr, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        proc.check_alive()?;
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{} did not listen on {addr} within {limit:?}", proc.name);
        }
        std::thread::park_timeout(Duration::from_millis(50));
    }
}

/// Whether `program` can be run (is on PATH or is a path that exists).
pub fn have(program: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The first line `program args` prints (stdout or stderr), for the record of a run.
pub fn version(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .and_then(|o| {
            let text =
                format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
            text.lines().next().map(str::to_owned)
        })
        .unwrap_or_else(|| "unknown".into())
}
