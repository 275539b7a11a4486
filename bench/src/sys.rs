//! The few system calls the driver needs: which CPUs it may use, and how much CPU a thread used.

use std::time::Duration;

use crate::Error;
use crate::ycsb::report::CpuUsage;

/// The CPUs this process may run on (`sched_getaffinity`), ascending.
pub fn allowed_cpus() -> Result<Vec<usize>, Error> {
    // SAFETY: cpu_set_t is a plain bit array; all-zero is a valid (empty) set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable cpu_set_t of the size passed; pid 0 is this thread.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Err(Error::Os {
            call: "sched_getaffinity",
            source: std::io::Error::last_os_error(),
        });
    }
    Ok((0..libc::CPU_SETSIZE as usize)
        // SAFETY: `cpu` is below CPU_SETSIZE, the size of `set`.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect())
}

/// Parses a CPU list such as `0-3,6` (the format of `taskset -c` and `/sys/.../cpulist`).
pub fn parse_cpu_list(text: &str) -> Result<Vec<usize>, Error> {
    let bad = || Error::InvalidOption(format!("--cpus {text:?}: expected a list like 0-3,6"));
    let mut cpus = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (
                a.trim().parse().map_err(|_| bad())?,
                b.trim().parse().map_err(|_| bad())?,
            ),
            None => {
                let c: usize = part.parse().map_err(|_| bad())?;
                (c, c)
            }
        };
        if lo > hi || hi >= libc::CPU_SETSIZE as usize {
            return Err(bad());
        }
        cpus.extend(lo..=hi);
    }
    if cpus.is_empty() {
        return Err(bad());
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
}

fn timeval(tv: libc::timeval) -> Duration {
    Duration::from_secs(tv.tv_sec as u64) + Duration::from_micros(tv.tv_usec as u64)
}

/// CPU time used so far by the calling thread (`getrusage(RUSAGE_THREAD)`).
pub fn thread_cpu_usage() -> CpuUsage {
    // SAFETY: rusage is plain data; all-zero is valid.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    if rc != 0 {
        return CpuUsage::default();
    }
    CpuUsage {
        user: timeval(ru.ru_utime),
        system: timeval(ru.ru_stime),
    }
}

/// CPU time used so far by the whole process (`getrusage(RUSAGE_SELF)`).
pub fn process_cpu_usage() -> CpuUsage {
    // SAFETY: rusage is plain data; all-zero is valid.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    if rc != 0 {
        return CpuUsage::default();
    }
    CpuUsage {
        user: timeval(ru.ru_utime),
        system: timeval(ru.ru_stime),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_parse_like_taskset() {
        assert_eq!(parse_cpu_list("0-3,6").unwrap(), vec![0, 1, 2, 3, 6]);
        assert_eq!(parse_cpu_list("5, 1,1").unwrap(), vec![1, 5]);
        for bad in ["", "3-1", "a", "0-", "99999"] {
            assert!(parse_cpu_list(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn this_process_has_cpus_and_thread_time_grows_with_work() {
        assert!(!allowed_cpus().unwrap().is_empty());
        // Work until the thread's CPU time moves; a broken reading (always zero) never does.
        let before = thread_cpu_usage().total();
        let give_up = std::time::Instant::now() + Duration::from_secs(60);
        let mut x = 0u64;
        while thread_cpu_usage().total() <= before {
            for _ in 0..100_000 {
                x = x.wrapping_add(std::hint::black_box(1));
            }
            assert!(std::time::Instant::now() < give_up, "CPU time never grew");
        }
        std::hint::black_box(x);
        assert!(process_cpu_usage().total() >= thread_cpu_usage().total());
    }
}
