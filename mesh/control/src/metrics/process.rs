//! The standard `process_*` families (CPU, RSS, file descriptors, start
//! time), read from /proc/self at every scrape as Prometheus' own client
//! libraries do.

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

/// Clock ticks per second of /proc's CPU times; Linux has reported USER_HZ
/// = 100 on every architecture for decades (sysconf would need libc).
const TICKS_PER_SECOND: f64 = 100.0;
const PAGE_SIZE: f64 = 4096.0;

#[derive(Debug)]
pub struct ProcessCollector;

/// What /proc/self says, or None where it cannot be read (not Linux).
#[derive(Debug, Default, PartialEq)]
pub struct ProcessFigures {
    pub cpu_seconds: Option<f64>,
    pub resident_bytes: Option<f64>,
    pub open_fds: Option<f64>,
    pub max_fds: Option<f64>,
    pub start_time_seconds: Option<f64>,
}

impl ProcessFigures {
    pub fn read() -> Self {
        let stat = std::fs::read_to_string("/proc/self/stat").ok();
        let fields = stat.as_deref().and_then(stat_fields);
        let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| boot_time(&s));
        let field = |i: usize| fields.as_ref().and_then(|f| f.get(i)).and_then(|v| v.parse::<f64>().ok());
        Self {
            // Fields counted from 3 (state) after the command: utime 14, stime 15, starttime 22, rss 24.
            cpu_seconds: field(14 - 3).zip(field(15 - 3)).map(|(u, s)| (u + s) / TICKS_PER_SECOND),
            resident_bytes: field(24 - 3).map(|pages| pages * PAGE_SIZE),
            open_fds: std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count() as f64),
            max_fds: std::fs::read_to_string("/proc/self/limits").ok().and_then(|s| max_open_files(&s)),
            start_time_seconds: field(22 - 3).zip(boot).map(|(ticks, boot)| boot + ticks / TICKS_PER_SECOND),
        }
    }
}

/// The fields after `pid (comm)`; comm may hold spaces and parentheses.
fn stat_fields(stat: &str) -> Option<Vec<String>> {
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

fn boot_time(proc_stat: &str) -> Option<f64> {
    proc_stat.lines().find_map(|l| l.strip_prefix("btime ")).and_then(|v| v.trim().parse().ok())
}

fn max_open_files(limits: &str) -> Option<f64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..].split_whitespace().next()?.parse().ok()
}

impl prometheus_client::collector::Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let figures = ProcessFigures::read();
        if let Some(v) = figures.cpu_seconds {
            let metric = encoder.encode_descriptor("process_cpu_seconds", "User and system CPU time spent in seconds", None, MetricType::Counter)?;
            ConstCounter::new(v).encode(metric)?;
        }
        let gauges = [
            ("process_resident_memory_bytes", "Resident memory size in bytes", figures.resident_bytes),
            ("process_open_fds", "Number of open file descriptors", figures.open_fds),
            ("process_max_fds", "Maximum number of open file descriptors", figures.max_fds),
            ("process_start_time_seconds", "Start time of the process since unix epoch in seconds", figures.start_time_seconds),
        ];
        for (name, help, value) in gauges {
            if let Some(v) = value {
                let metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
                ConstGauge::new(v).encode(metric)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let stat = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 4 0 12345 1000000 300 18446744073709551615";
        let f = stat_fields(stat).unwrap();
        assert_eq!((f[14 - 3].as_str(), f[15 - 3].as_str(), f[22 - 3].as_str(), f[24 - 3].as_str()), ("250", "50", "12345", "300"));
        assert_eq!(boot_time("cpu 1 2\nbtime 1700000000\n"), Some(1_700_000_000.0));
        let limits = "Limit                     Soft Limit           Hard Limit           Units\nMax open files            1024                 524288               files\n";
        assert_eq!(max_open_files(limits), Some(1024.0));
        let now = ProcessFigures::read();
        assert!(now.resident_bytes.is_some_and(|b| b > 0.0) && now.open_fds.is_some(), "{now:?}");
    }
}
