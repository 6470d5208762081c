//! Child processes of a run: started pinned to a CPU when asked, killed when dropped, and
//! waited for by their listening port.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// A process the run started; killed on drop.
#[derive(Debug)]
pub(crate) struct Proc {
    pub name: String,
    child: Child,
}

impl Proc {
    /// Starts `program args` (on `cpu` when given), its output appended to `log`.
    pub(crate) fn start(
        name: &str,
        program: &Path,
        args: &[&str],
        cpu: Option<u32>,
        log: &Path,
    ) -> Result<Self> {
        let mut cmd = match cpu {
            Some(c) => {
                let mut t = Command::new("taskset");
                t.arg("-c").arg(c.to_string()).arg(program);
                t
            }
            None => Command::new(program),
        };
        let out = std::fs::File::create(log).with_context(|| format!("create {}", log.display()))?;
        cmd.args(args).stdin(Stdio::null()).stdout(out.try_clone()?).stderr(out).env("NO_COLOR", "1");
        // taskset execs the program, so the pid is the program's.
        let child = cmd.spawn().with_context(|| format!("start {name} ({})", program.display()))?;
        Ok(Self { name: name.to_owned(), child })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails if the process has exited.
    pub(crate) fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited: {status}", self.name);
        }
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port free on 127.0.0.1 now (the race with other programs is acceptable for a benchmark).
pub(crate) fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Waits up to `limit` until something accepts connections on `addr`, while `proc` lives.
pub(crate) fn wait_listening(proc: &mut Proc, addr: SocketAddr, limit: Duration) -> Result<()> {
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
pub(crate) fn have(program: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The first line `program args` prints (stdout or stderr), for the record of a run.
pub(crate) fn version(program: &str, args: &[&str]) -> String {
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
