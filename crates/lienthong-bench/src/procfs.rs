//! What `/proc` says of a process: CPU time (all threads) and resident memory, with the peak
//! reset between runs (`clear_refs` 5), so each run reports its own peak.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};

/// Clock ticks per second of `/proc/PID/stat` (USER_HZ; 100 on every Linux this runs on).
const TICKS_PER_SEC: u64 = 100;

fn proc_path(pid: u32, file: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/{file}"))
}

/// User plus system CPU time of the whole process, in microseconds (10 ms resolution).
pub(crate) fn cpu_us(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(proc_path(pid, "stat")).with_context(|| format!("process {pid}"))?;
    // The command name is in parentheses and may hold spaces: the fields start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).context("malformed /proc/PID/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3 (index 0 here); utime and stime are fields 14 and 15.
    if fields.len() < 13 {
        bail!("short /proc/{pid}/stat");
    }
    let utime: u64 = fields[11].parse()?;
    let stime: u64 = fields[12].parse()?;
    Ok((utime + stime) * 1_000_000 / TICKS_PER_SEC)
}

fn status_kib(pid: u32, key: &str) -> Result<u64> {
    let status = std::fs::read_to_string(proc_path(pid, "status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.trim().strip_suffix("kB")?.trim().parse().ok())
        .with_context(|| format!("no {key} in /proc/{pid}/status"))
}

/// Resident memory now, KiB.
pub(crate) fn rss_kib(pid: u32) -> Result<u64> {
    status_kib(pid, "VmRSS:")
}

/// Peak resident memory since the process started or since [`reset_peak`], KiB.
pub(crate) fn peak_rss_kib(pid: u32) -> Result<u64> {
    status_kib(pid, "VmHWM:")
}

/// Resets the peak to the current resident size.
pub(crate) fn reset_peak(pid: u32) -> Result<()> {
    std::fs::write(proc_path(pid, "clear_refs"), "5").with_context(|| format!("reset the peak RSS of {pid}"))
}

/// The machine, for the record of a run.
pub(crate) fn machine() -> serde_json::Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':').map(|(_, v)| v.trim().to_owned()))
        .unwrap_or_else(|| "unknown".into());
    // Not available_parallelism: the harness has pinned itself to one CPU by now.
    let cores = cpuinfo.lines().filter(|l| l.starts_with("processor")).count();
    let mem_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines().find_map(|l| {
                l.strip_prefix("MemTotal:")?.trim().strip_suffix("kB")?.trim().parse::<u64>().ok()
            })
        })
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    serde_json::json!({
        "cpu": model,
        "cores": cores,
        "memory_gib": (mem_kib as f64 / (1024.0 * 1024.0) * 10.0).round() / 10.0,
        "kernel": kernel.trim(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        let mut spin = 0u64;
        for i in 0..2_000_000u64 {
            spin = std::hint::black_box(spin.wrapping_add(i));
        }
        assert!(cpu_us(me).is_ok());
        let rss = rss_kib(me).unwrap();
        assert!(rss > 0);
        reset_peak(me).unwrap();
        assert!(peak_rss_kib(me).unwrap() >= rss / 2);
    }
}
