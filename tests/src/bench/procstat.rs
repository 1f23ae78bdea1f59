//! CPU time and memory of a process, from `/proc` (Linux only, as the bench is).

use anyhow::Context as _;
use serde::Serialize;

/// One reading of a process.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct ProcSample {
    /// User + system CPU seconds since the process started.
    pub cpu_s: f64,
    /// Resident set now (VmRSS), MiB.
    pub rss_mib: f64,
    /// Peak resident set (VmHWM), MiB.
    pub hwm_mib: f64,
}

/// Reads `/proc/<pid>`; `pid` `None` is this process. `clk_tck` is `getconf CLK_TCK` (100 on
/// every Linux we run on; the kernel reports `stat` times in those ticks).
pub fn sample(pid: Option<u32>, clk_tck: f64) -> anyhow::Result<ProcSample> {
    let dir = match pid {
        Some(pid) => format!("/proc/{pid}"),
        None => "/proc/self".to_string(),
    };
    let stat = std::fs::read_to_string(format!("{dir}/stat"))
        .with_context(|| format!("reading {dir}/stat"))?;
    // The command name (field 2) may hold spaces and parentheses: fields are counted after the
    // last ')'. There, index 0 is field 3 (state); utime and stime are fields 14 and 15.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("malformed /proc stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> anyhow::Result<f64> {
        let v: u64 = fields
            .get(i)
            .context("short /proc stat")?
            .parse()
            .context("non-numeric /proc stat field")?;
        Ok(v as f64)
    };
    let cpu_s = (ticks(11)? + ticks(12)?) / clk_tck;
    let status = std::fs::read_to_string(format!("{dir}/status"))
        .with_context(|| format!("reading {dir}/status"))?;
    let kib = |key: &str| -> f64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0) as f64
    };
    Ok(ProcSample {
        cpu_s,
        rss_mib: kib("VmRSS:") / 1024.0,
        hwm_mib: kib("VmHWM:") / 1024.0,
    })
}
