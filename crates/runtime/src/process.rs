//! What Linux says about a process's resources (`/proc`), for the
//! benchmarks and the scenarios that measure memory and CPU. `None` for
//! this process; elsewhere, values read as 0 when `/proc` does not have them.

use std::time::Duration;

/// Resident memory of process `pid` (this process when `None`), in bytes.
pub fn resident_bytes(pid: Option<u32>) -> u64 {
    std::fs::read_to_string(proc_file(pid, "status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| {
            value
                .trim()
                .trim_end_matches(" kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kb| kb * 1024)
}

/// User plus system CPU time of process `pid` (this process when `None`).
pub fn cpu_time(pid: Option<u32>) -> Duration {
    let stat = std::fs::read_to_string(proc_file(pid, "stat")).unwrap_or_default();
    // The command name may hold spaces: fields are counted after it.
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |index: usize| {
        fields
            .get(index)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime, in clock ticks of 10 ms (USER_HZ on Linux).
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

fn proc_file(pid: Option<u32>, file: &str) -> String {
    match pid {
        Some(pid) => format!("/proc/{pid}/{file}"),
        None => format!("/proc/self/{file}"),
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        assert!(
            resident_bytes(None) > 1024 * 1024,
            "a test binary holds over 1 MiB"
        );
        let before = cpu_time(None);
        let mut spin = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_millis(100) {
            spin = spin.wrapping_add(1);
        }
        assert!(spin > 0);
        assert!(cpu_time(None) > before, "spinning 100 ms uses CPU");
        assert_eq!(resident_bytes(Some(u32::MAX)), 0, "no such process");
    }
}
