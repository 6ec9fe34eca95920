//! CPU time of processes, from `/proc/<pid>/stat` (Linux): what a benchmark run cost the
//! worker and the server, to turn rows/s into a per-row cost model.

/// User + system CPU seconds of process `pid`; with `waited_children`, also of the
/// children it has reaped (a PostgreSQL postmaster reaps the backends that ended).
pub fn cpu_seconds(pid: u32, waited_children: bool) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields are counted
    // after its closing parenthesis.
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime, stime, cutime, cstime are fields 14-17 of the line, 12-15 after the name.
    let tick = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    let mut ticks = tick(11)? + tick(12)?;
    if waited_children {
        ticks += tick(13)? + tick(14)?;
    }
    Some(ticks as f64 / clock_ticks_per_second())
}

/// CPU seconds of a PostgreSQL server: the postmaster with the backends it reaped, plus
/// its live children (`pids` as [`crate::pg::PgCluster::server_pids`] lists them, the
/// postmaster first).
pub fn server_cpu_seconds(pids: &[u32]) -> f64 {
    pids.iter()
        .enumerate()
        .filter_map(|(i, pid)| cpu_seconds(*pid, i == 0))
        .sum()
}

/// /proc reports CPU times in USER_HZ, which Linux fixes at 100 on every architecture
/// Sluice builds for (sysconf would need unsafe code, which the workspace denies).
fn clock_ticks_per_second() -> f64 {
    100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_used_some_cpu() {
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        assert!(x > 0);
        let s = cpu_seconds(std::process::id(), false).expect("own stat");
        assert!(s > 0.0, "{s}");
    }
}
