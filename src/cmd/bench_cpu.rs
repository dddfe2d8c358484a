//! CPU time spent per message, by the bench process and by the broker beside it.
//!
//! On a machine where the broker and bugflow share a few cores, a throughput ratio moves by
//! a tenth between runs of the same binary; what each message costs in CPU moves much less,
//! and it says *where* the time goes: a consumer that spends more CPU a message than the
//! relay leaves less of the shared cores to the broker. [`CpuClock`] reads both before and
//! after a round.
//!
//! The bench process's CPU comes from `getrusage`; the broker's from `/proc` (Linux), where
//! it is found by its process name (`beam.smp`, RabbitMQ's Erlang VM). A reading that cannot
//! be made (no `/proc`, a broker on another machine) is `None`, printed as `—`.

use std::path::Path;

/// CPU seconds (user + system) of this process and of the local broker, at one moment.
#[derive(Debug, Clone, Copy)]
pub struct CpuClock {
    own: Option<f64>,
    broker: Option<f64>,
}

/// CPU microseconds a message over a round: this process's, and the broker's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuPerMessage {
    pub own_us: Option<f64>,
    pub broker_us: Option<f64>,
}

impl std::fmt::Display for CpuPerMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "bench {}, broker {}",
            micros(self.own_us),
            micros(self.broker_us)
        )
    }
}

/// `12.3 µs`, or `—` where nothing could be read.
pub fn micros(value: Option<f64>) -> String {
    value.map_or("—".to_owned(), |v| format!("{v:.1} µs"))
}

impl CpuClock {
    pub fn now() -> CpuClock {
        CpuClock {
            own: own_cpu_seconds(),
            broker: broker_cpu_seconds(),
        }
    }

    /// This process's CPU alone: no scan of `/proc` for a broker (an in-process bench has
    /// none to read).
    pub fn of_this_process() -> CpuClock {
        CpuClock {
            own: own_cpu_seconds(),
            broker: None,
        }
    }

    /// What each of `messages` cost between `self` and `later`.
    pub fn per_message(&self, later: &CpuClock, messages: u64) -> CpuPerMessage {
        let per = |a: Option<f64>, b: Option<f64>| {
            let (a, b) = (a?, b?);
            (b >= a && messages > 0).then(|| (b - a) * 1e6 / messages as f64)
        };
        CpuPerMessage {
            own_us: per(self.own, later.own),
            broker_us: per(self.broker, later.broker),
        }
    }
}

/// `getrusage(who)`: `RUSAGE_SELF` (every thread of this process) or `RUSAGE_CHILDREN`
/// (the children waited for); `None` if the call fails.
pub fn rusage(who: libc::c_int) -> Option<libc::rusage> {
    // SAFETY: getrusage only writes the struct it is given; a zeroed rusage is a valid value.
    unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        (libc::getrusage(who, &mut usage) == 0).then_some(usage)
    }
}

/// This process's CPU time, every thread's (`getrusage(RUSAGE_SELF)`, microsecond resolution).
fn own_cpu_seconds() -> Option<f64> {
    let usage = rusage(libc::RUSAGE_SELF)?;
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Some(seconds(usage.ru_utime) + seconds(usage.ru_stime))
}

/// The CPU time of every local `beam.smp` process (clock ticks from `/proc/PID/stat`).
fn broker_cpu_seconds() -> Option<f64> {
    // SAFETY: sysconf reads a constant of the system.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks_per_second <= 0 {
        return None;
    }
    let mut total = None;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let dir = entry.path();
        let is_broker = std::fs::read_to_string(dir.join("comm"))
            .is_ok_and(|comm| comm.trim_end() == "beam.smp");
        if let Some(ticks) = is_broker.then(|| ticks_of(&dir)).flatten() {
            *total.get_or_insert(0u64) += ticks;
        }
    }
    Some(total? as f64 / ticks_per_second as f64)
}

/// utime + stime of the process whose `/proc` folder is `dir`.
fn ticks_of(dir: &Path) -> Option<u64> {
    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
    parse_ticks(&stat)
}

/// utime + stime (fields 14 and 15) of a `/proc/PID/stat` line. The command name (field 2)
/// is in parentheses and may itself hold spaces and parentheses, so fields are counted
/// from the last `)`.
fn parse_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_counted_after_the_command_name_whatever_it_holds() {
        let stat =
            "4242 (beam.smp (x) y) S 1 4242 4242 0 -1 4194560 93 0 0 0 1500 230 0 0 20 0 31 0";
        assert_eq!(parse_ticks(stat), Some(1730));
        assert_eq!(parse_ticks("4242 (beam.smp) S 1"), None);
        assert_eq!(parse_ticks("no parenthesis"), None);
    }

    #[test]
    fn this_process_cpu_grows_with_work_and_is_spread_over_messages() {
        let before = CpuClock::now();
        let mut x = 0u64;
        let started = std::time::Instant::now();
        while started.elapsed() < std::time::Duration::from_millis(30) {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        let after = CpuClock::now();
        let cost = before.per_message(&after, 10);
        let own = cost.own_us.expect("getrusage works on Linux");
        // 30 ms of spinning over 10 messages: at least a millisecond each.
        assert!(own >= 1_000.0, "{own} µs a message");
        assert_eq!(before.per_message(&after, 0).own_us, None);
    }
}
