//! Results in YCSB's own text format, as JSON, and a parser for the text format.
//!
//! Text (one line per figure, `[SECTION], Metric, value`, as YCSB prints them):
//!
//! ```text
//! [CONFIG], Phase, run                   <- corekv-bench: what was run
//! [OVERALL], RunTime(ms), 10012
//! [OVERALL], Throughput(ops/sec), 99880.1
//! [READ], Operations, 499321
//! [READ], AverageLatency(us), 312.5
//! [READ], MinLatency(us), 41
//! [READ], MaxLatency(us), 20111
//! [READ], 95thPercentileLatency(us), 601
//! [READ], 99thPercentileLatency(us), 1203
//! [READ], Return=OK, 499321
//! [READ-FAILED], Operations, ...         <- only if some failed; their Return= lines are
//!                                           under [READ], as in YCSB
//! [DRIVER], CpuTime(ms), 5120            <- corekv-bench: the driver's own CPU use
//! [DRIVER], TimerLateness99thPercentile(us), 80   <- with --target: how late its timer woke
//! ```
//!
//! `--json FILE` writes the same figures plus p50 and p99.9 (see [`PhaseReport::to_json`]).

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{Value, json};

use super::measure::{Measurements, OpStats, Status};
use super::workload::OpKind;

/// CPU time the driver's own threads used (from `getrusage(RUSAGE_THREAD)`), so it can be
/// shown not to be the bottleneck; an in-process server's threads are not included.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuUsage {
    /// User time.
    pub user: Duration,
    /// System time.
    pub system: Duration,
}

impl CpuUsage {
    /// User + system.
    pub fn total(&self) -> Duration {
        self.user + self.system
    }

    /// Adds `other`.
    pub fn add(&mut self, other: CpuUsage) {
        self.user += other.user;
        self.system += other.system;
    }
}

/// The results of one phase (`load` or `run`).
#[derive(Debug, Clone)]
pub struct PhaseReport {
    /// `load` or `run`.
    pub phase: &'static str,
    /// `(name, value)` pairs describing the run, printed as `[CONFIG]` lines.
    pub config: Vec<(&'static str, String)>,
    /// From the start signal until the last operation completed.
    pub runtime: Duration,
    /// Merged over all threads.
    pub measurements: Measurements,
    /// The driver's client threads' CPU time during the phase.
    pub driver_cpu: CpuUsage,
    /// Client threads.
    pub threads: usize,
    /// Connection errors and other problems that stopped a connection early.
    pub errors: Vec<String>,
    /// A few distinct messages of operations that returned `ERROR`.
    pub error_samples: Vec<String>,
}

impl PhaseReport {
    /// Transactions per second (YCSB's `[OVERALL], Throughput(ops/sec)`).
    pub fn throughput_ops_per_sec(&self) -> f64 {
        let secs = self.runtime.as_secs_f64();
        if secs > 0.0 {
            self.measurements.transactions as f64 / secs
        } else {
            0.0
        }
    }

    /// Driver CPU time over wall time, in percent of one core.
    pub fn driver_cpu_percent(&self) -> f64 {
        let secs = self.runtime.as_secs_f64();
        if secs > 0.0 {
            100.0 * self.driver_cpu.total().as_secs_f64() / secs
        } else {
            0.0
        }
    }

    /// Driver CPU time per transaction, µs.
    pub fn driver_cpu_us_per_op(&self) -> f64 {
        let n = self.measurements.transactions;
        if n > 0 {
            self.driver_cpu.total().as_secs_f64() * 1e6 / n as f64
        } else {
            0.0
        }
    }

    /// The report in YCSB's text format.
    pub fn to_ycsb_text(&self) -> String {
        let mut s = String::new();
        // Writing to a String cannot fail; the `let _` below discard infallible results.
        for (name, value) in &self.config {
            let _ = writeln!(s, "[CONFIG], {name}, {value}");
        }
        let _ = writeln!(s, "[OVERALL], RunTime(ms), {}", self.runtime.as_millis());
        let _ = writeln!(
            s,
            "[OVERALL], Throughput(ops/sec), {}",
            self.throughput_ops_per_sec()
        );
        let m = &self.measurements;
        for kind in OpKind::ALL {
            let i = kind.index();
            let name = kind.ycsb_name();
            if let Some(stats) = &m.ok[i] {
                write_stats(&mut s, name, stats);
            } else if m.returns[i].iter().any(|&c| c > 0) {
                let _ = writeln!(s, "[{name}], Operations, 0");
            }
            for status in Status::ALL {
                let n = m.returned(kind, status);
                if n > 0 {
                    let _ = writeln!(s, "[{name}], Return={}, {n}", status.ycsb_name());
                }
            }
            if let Some(stats) = &m.failed[i] {
                write_stats(&mut s, &format!("{name}-FAILED"), stats);
            }
        }
        let _ = writeln!(
            s,
            "[DRIVER], CpuTime(ms), {}",
            self.driver_cpu.total().as_millis()
        );
        let _ = writeln!(
            s,
            "[DRIVER], CpuUserTime(ms), {}",
            self.driver_cpu.user.as_millis()
        );
        let _ = writeln!(
            s,
            "[DRIVER], CpuSystemTime(ms), {}",
            self.driver_cpu.system.as_millis()
        );
        let _ = writeln!(
            s,
            "[DRIVER], CpuUtilization(%), {:.1}",
            self.driver_cpu_percent()
        );
        let _ = writeln!(
            s,
            "[DRIVER], CpuPerOperation(us), {:.2}",
            self.driver_cpu_us_per_op()
        );
        let _ = writeln!(s, "[DRIVER], Threads, {}", self.threads);
        if let Some(t) = &self.measurements.timer_lateness {
            let _ = writeln!(s, "[DRIVER], TimerWakeups, {}", t.count());
            let _ = writeln!(s, "[DRIVER], TimerLatenessAverage(us), {}", t.mean_us());
            let _ = writeln!(
                s,
                "[DRIVER], TimerLateness99thPercentile(us), {}",
                t.percentile_us(99.0)
            );
        }
        s
    }

    /// The report as JSON: the same figures with p50 and p99.9 added.
    ///
    /// ```text
    /// { "phase": "run", "config": {"Workload": "a", ...},
    ///   "overall": {"runtime_ms": 10012, "throughput_ops_per_sec": 99880.1, "operations": 1000000},
    ///   "operations": {"READ": {"operations": 499321, "average_latency_us": 312.5,
    ///                           "min_latency_us": 41, "max_latency_us": 20111,
    ///                           "p50_latency_us": 280, "p95_latency_us": 601,
    ///                           "p99_latency_us": 1203, "p99_9_latency_us": 4001,
    ///                           "returns": {"OK": 499321}}, ...},
    ///   "driver": {"cpu_ms": 5120, "cpu_user_ms": 4000, "cpu_system_ms": 1120,
    ///              "cpu_utilization_percent": 51.1, "cpu_us_per_operation": 5.12, "threads": 2},
    ///   "errors": [] }
    /// ```
    pub fn to_json(&self) -> Value {
        let m = &self.measurements;
        let mut ops = serde_json::Map::new();
        for kind in OpKind::ALL {
            let i = kind.index();
            let mut returns = serde_json::Map::new();
            for status in Status::ALL {
                let n = m.returned(kind, status);
                if n > 0 {
                    returns.insert(status.ycsb_name().into(), json!(n));
                }
            }
            if let Some(stats) = &m.ok[i] {
                let mut v = stats_json(stats);
                v["returns"] = Value::Object(returns);
                ops.insert(kind.ycsb_name().into(), v);
            } else if !returns.is_empty() {
                ops.insert(
                    kind.ycsb_name().into(),
                    json!({"operations": 0, "returns": returns}),
                );
            }
            if let Some(stats) = &m.failed[i] {
                ops.insert(format!("{}-FAILED", kind.ycsb_name()), stats_json(stats));
            }
        }
        let config: serde_json::Map<String, Value> = self
            .config
            .iter()
            .map(|(k, v)| ((*k).to_string(), json!(v)))
            .collect();
        json!({
            "phase": self.phase,
            "config": config,
            "overall": {
                "runtime_ms": self.runtime.as_millis() as u64,
                "throughput_ops_per_sec": self.throughput_ops_per_sec(),
                "operations": m.transactions,
            },
            "operations": ops,
            "driver": {
                "cpu_ms": self.driver_cpu.total().as_millis() as u64,
                "cpu_user_ms": self.driver_cpu.user.as_millis() as u64,
                "cpu_system_ms": self.driver_cpu.system.as_millis() as u64,
                "cpu_utilization_percent": self.driver_cpu_percent(),
                "cpu_us_per_operation": self.driver_cpu_us_per_op(),
                "threads": self.threads,
                "timer_lateness": self.measurements.timer_lateness.as_ref().map(stats_json),
            },
            "errors": self.errors,
            "error_samples": self.error_samples,
        })
    }
}

fn write_stats(s: &mut String, name: &str, stats: &OpStats) {
    let _ = writeln!(s, "[{name}], Operations, {}", stats.count());
    let _ = writeln!(s, "[{name}], AverageLatency(us), {}", stats.mean_us());
    let _ = writeln!(s, "[{name}], MinLatency(us), {}", stats.min_us);
    let _ = writeln!(s, "[{name}], MaxLatency(us), {}", stats.max_us);
    let _ = writeln!(
        s,
        "[{name}], 95thPercentileLatency(us), {}",
        stats.percentile_us(95.0)
    );
    let _ = writeln!(
        s,
        "[{name}], 99thPercentileLatency(us), {}",
        stats.percentile_us(99.0)
    );
}

fn stats_json(stats: &OpStats) -> Value {
    json!({
        "operations": stats.count(),
        "average_latency_us": stats.mean_us(),
        "min_latency_us": stats.min_us,
        "max_latency_us": stats.max_us,
        "p50_latency_us": stats.percentile_us(50.0),
        "p95_latency_us": stats.percentile_us(95.0),
        "p99_latency_us": stats.percentile_us(99.0),
        "p99_9_latency_us": stats.percentile_us(99.9),
    })
}

/// One parsed line of YCSB output.
#[derive(Debug, Clone, PartialEq)]
pub struct YcsbLine {
    /// `OVERALL`, `READ`, ...
    pub section: String,
    /// `RunTime(ms)`, `Return=OK`, ...
    pub metric: String,
    /// The value as printed.
    pub value: String,
}

impl YcsbLine {
    /// The value as a number, if it is one.
    pub fn number(&self) -> Option<f64> {
        self.value.parse().ok()
    }
}

/// Parses YCSB's text format (what YCSB and `corekv-bench ycsb` print on stdout). Lines that
/// are not `[SECTION], metric, value` are an error naming the line.
pub fn parse_ycsb(text: &str) -> Result<Vec<YcsbLine>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = || format!("line {}: not `[SECTION], metric, value`: {line:?}", n + 1);
        let rest = line.strip_prefix('[').ok_or_else(bad)?;
        let (section, rest) = rest.split_once("], ").ok_or_else(bad)?;
        let (metric, value) = rest.split_once(", ").ok_or_else(bad)?;
        if section.is_empty() || metric.is_empty() || value.is_empty() {
            return Err(bad());
        }
        out.push(YcsbLine {
            section: section.to_string(),
            metric: metric.to_string(),
            value: value.to_string(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> PhaseReport {
        let mut m = Measurements::default();
        for us in [100u64, 200, 300, 400] {
            m.record(OpKind::Read, Status::Ok, Duration::from_micros(us));
        }
        m.record(OpKind::Read, Status::NotFound, Duration::from_micros(50));
        m.record(OpKind::Update, Status::Ok, Duration::from_micros(1000));
        m.transactions = 6;
        PhaseReport {
            phase: "run",
            config: vec![("Workload", "a".into()), ("Backend", "redis".into())],
            runtime: Duration::from_millis(2000),
            measurements: m,
            driver_cpu: CpuUsage {
                user: Duration::from_millis(300),
                system: Duration::from_millis(100),
            },
            threads: 1,
            errors: vec![],
            error_samples: vec![],
        }
    }

    fn value(lines: &[YcsbLine], section: &str, metric: &str) -> f64 {
        lines
            .iter()
            .find(|l| l.section == section && l.metric == metric)
            .unwrap_or_else(|| panic!("no [{section}], {metric}"))
            .number()
            .unwrap()
    }

    #[test]
    fn text_output_parses_back_to_the_same_figures() {
        let text = sample().to_ycsb_text();
        let lines = parse_ycsb(&text).unwrap();
        assert_eq!(value(&lines, "OVERALL", "RunTime(ms)"), 2000.0);
        assert_eq!(value(&lines, "OVERALL", "Throughput(ops/sec)"), 3.0);
        assert_eq!(value(&lines, "READ", "Operations"), 4.0);
        assert_eq!(value(&lines, "READ", "AverageLatency(us)"), 250.0);
        assert_eq!(value(&lines, "READ", "MinLatency(us)"), 100.0);
        assert_eq!(value(&lines, "READ", "MaxLatency(us)"), 400.0);
        assert_eq!(value(&lines, "READ", "95thPercentileLatency(us)"), 400.0);
        assert_eq!(value(&lines, "READ", "99thPercentileLatency(us)"), 400.0);
        assert_eq!(value(&lines, "READ", "Return=OK"), 4.0);
        assert_eq!(value(&lines, "READ", "Return=NOT_FOUND"), 1.0);
        assert_eq!(value(&lines, "READ-FAILED", "Operations"), 1.0);
        assert_eq!(value(&lines, "UPDATE", "Return=OK"), 1.0);
        assert_eq!(value(&lines, "DRIVER", "CpuTime(ms)"), 400.0);
        assert_eq!(value(&lines, "DRIVER", "CpuUtilization(%)"), 20.0);
        assert!(lines.iter().all(|l| l.section != "SCAN"));
        let config = lines.iter().find(|l| l.section == "CONFIG").unwrap();
        assert_eq!(
            (config.metric.as_str(), config.value.as_str()),
            ("Workload", "a")
        );
    }

    #[test]
    fn json_has_the_same_figures_and_p999() {
        let j = sample().to_json();
        assert_eq!(j["overall"]["runtime_ms"], 2000);
        assert_eq!(j["overall"]["throughput_ops_per_sec"], 3.0);
        assert_eq!(j["operations"]["READ"]["operations"], 4);
        assert_eq!(j["operations"]["READ"]["p99_9_latency_us"], 400);
        assert_eq!(j["operations"]["READ"]["returns"]["NOT_FOUND"], 1);
        assert_eq!(j["operations"]["READ-FAILED"]["operations"], 1);
        assert_eq!(j["driver"]["cpu_ms"], 400);
        assert_eq!(j["config"]["Backend"], "redis");
    }

    #[test]
    fn parser_rejects_lines_that_are_not_ycsb() {
        assert!(parse_ycsb("[OVERALL], RunTime(ms), 5\n\n").is_ok());
        for bad in [
            "OVERALL, RunTime(ms), 5",
            "[OVERALL] RunTime(ms), 5",
            "[OVERALL], RunTime(ms)",
        ] {
            assert!(parse_ycsb(bad).is_err(), "{bad:?} accepted");
        }
        // A real YCSB output excerpt parses.
        let ycsb = "[OVERALL], RunTime(ms), 1130\n[OVERALL], Throughput(ops/sec), 884.9557522123894\n\
                    [READ], Operations, 489\n[READ], AverageLatency(us), 453.1\n[READ], Return=OK, 489\n";
        assert_eq!(parse_ycsb(ycsb).unwrap().len(), 5);
    }
}
