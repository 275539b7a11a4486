//! Renders shard snapshots in the Prometheus text exposition format (version 0.0.4).
//!
//! Families (every sample has a `shard` label):
//!
//! | family | type | from |
//! |---|---|---|
//! | `corekv_operations_total{op}` | counter | the server's `<op>_ops_total` counters |
//! | `corekv_operation_errors_total{op}` | counter | [`ShardMetrics`](super::ShardMetrics) |
//! | `corekv_rpc_duration_seconds{method}` | histogram | per-method hdrhistograms |
//! | `corekv_network_{received,sent}_bytes_total` | counter | connection byte counts |
//! | `corekv_storage_wal_group_commit_records` | histogram | the engine's `wal_group_records_*` buckets, `wal_records_total` as the sum |
//! | `corekv_storage_level_{files,bytes}{level}` | gauge | the engine's `level<N>_files` / `level<N>_bytes` |
//! | `corekv_server_<name>` | counter / gauge | every other server counter |
//! | `corekv_storage_<name>` | counter / gauge | every other `Stats::counters()` entry |
//!
//! A name ending in `_total` is a counter, anything else a gauge. Time units in names are
//! converted to Prometheus' base unit: a `ms`, `us` or `ns` word becomes `seconds` and the value
//! is scaled (`durability_periodic_interval_ms` → `..._interval_seconds`). New engine counters
//! (stalls, flush and compaction bytes, block-cache hits and misses, ...) appear without a
//! change here.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::{Method, OpKind, ShardSnapshot};

/// Upper bounds of the RPC latency buckets, seconds.
pub const RPC_BUCKETS_SECONDS: [f64; 17] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// The engine's group-commit buckets: counter name and the bucket's upper bound (records).
const WAL_GROUP_BUCKETS: [(&str, u64); 5] = [
    ("wal_group_records_1_total", 1),
    ("wal_group_records_2_3_total", 3),
    ("wal_group_records_4_7_total", 7),
    ("wal_group_records_8_15_total", 15),
    ("wal_group_records_16_31_total", 31),
];
const WAL_GROUP_BUCKET_INF: &str = "wal_group_records_32_plus_total";
const WAL_GROUP_SUM: &str = "wal_records_total";

/// Server counters turned into the labelled `corekv_operations_total`.
fn op_counter(kind: OpKind) -> &'static str {
    match kind {
        OpKind::Get => "get_ops_total",
        OpKind::Put => "put_ops_total",
        OpKind::Delete => "delete_ops_total",
        OpKind::Cas => "cas_ops_total",
        OpKind::Scan => "scan_ops_total",
        OpKind::PutEntity => "put_entity_ops_total",
        OpKind::UpdateColumns => "update_columns_ops_total",
        OpKind::GetColumns => "get_columns_ops_total",
        OpKind::Increment => "increment_ops_total",
    }
}

/// The content type of the output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

struct Family {
    help: String,
    kind: &'static str,
    samples: Vec<String>,
}

/// Families in output order, by name.
#[derive(Default)]
struct Out {
    families: BTreeMap<String, Family>,
}

impl Out {
    fn sample(&mut self, name: &str, kind: &'static str, help: &str, line: String) {
        self.families
            .entry(name.to_string())
            .or_insert_with(|| Family {
                help: help.to_string(),
                kind,
                samples: Vec::new(),
            })
            .samples
            .push(line);
    }

    fn render(self) -> String {
        let mut text = String::new();
        for (name, f) in self.families {
            let _ = writeln!(text, "# HELP {name} {}", escape_help(&f.help));
            let _ = writeln!(text, "# TYPE {name} {}", f.kind);
            for s in f.samples {
                text.push_str(&s);
                text.push('\n');
            }
        }
        text
    }
}

fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A metric name for a counter: `ms`/`us`/`ns`/`s`/`sec` words become `seconds`, with the
/// factor that converts the value.
fn base_unit_name(raw: &str) -> (String, f64) {
    let mut factor = 1.0;
    let words: Vec<&str> = raw
        .split('_')
        .map(|w| match w {
            "ms" => {
                factor = 1e-3;
                "seconds"
            }
            "us" => {
                factor = 1e-6;
                "seconds"
            }
            "ns" => {
                factor = 1e-9;
                "seconds"
            }
            "s" | "sec" | "secs" => "seconds",
            w => w,
        })
        .collect();
    let name: String = words
        .join("_")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    (name, factor)
}

fn value(v: u64, factor: f64) -> String {
    if factor == 1.0 {
        v.to_string()
    } else {
        format!("{}", v as f64 * factor)
    }
}

fn generic(out: &mut Out, prefix: &str, what: &str, shard: usize, name: &str, v: u64) {
    let (base, factor) = base_unit_name(name);
    let full = format!("corekv_{prefix}_{base}");
    let kind = if base.ends_with("_total") {
        "counter"
    } else {
        "gauge"
    };
    let help = format!(
        "{what} `{name}`, per shard{}",
        if factor == 1.0 {
            ""
        } else {
            " (converted to seconds)"
        }
    );
    out.sample(
        &full,
        kind,
        &help,
        format!("{full}{{shard=\"{shard}\"}} {}", value(v, factor)),
    );
}

/// Renders every shard's snapshot.
pub fn render(shards: &[ShardSnapshot]) -> String {
    let mut out = Out::default();
    for s in shards {
        let id = s.shard;
        let server: BTreeMap<&str, u64> = s.server.iter().copied().collect();
        for kind in OpKind::ALL {
            if let Some(v) = server.get(op_counter(kind)) {
                out.sample(
                    "corekv_operations_total",
                    "counter",
                    "Operations received on the shard's connections, by kind (each operation of a batch counts)",
                    format!("corekv_operations_total{{shard=\"{id}\",op=\"{}\"}} {v}", kind.label()),
                );
            }
        }
        for (kind, v) in &s.metrics.op_errors_total {
            out.sample(
                "corekv_operation_errors_total",
                "counter",
                "Operations answered with an error, by kind",
                format!(
                    "corekv_operation_errors_total{{shard=\"{id}\",op=\"{}\"}} {v}",
                    kind.label()
                ),
            );
        }
        for (method, lat) in &s.metrics.latency {
            rpc_histogram(&mut out, id, *method, lat);
        }
        out.sample(
            "corekv_network_received_bytes_total",
            "counter",
            "Bytes read from client connections",
            format!(
                "corekv_network_received_bytes_total{{shard=\"{id}\"}} {}",
                s.metrics.network_bytes_received_total
            ),
        );
        out.sample(
            "corekv_network_sent_bytes_total",
            "counter",
            "Bytes written to client connections",
            format!(
                "corekv_network_sent_bytes_total{{shard=\"{id}\"}} {}",
                s.metrics.network_bytes_sent_total
            ),
        );
        for &(name, v) in &s.server {
            if OpKind::ALL.iter().any(|k| op_counter(*k) == name) {
                continue;
            }
            generic(&mut out, "server", "Server counter", id, name, v);
        }
        let storage: BTreeMap<&str, u64> = s.storage.iter().copied().collect();
        let grouped = wal_group_histogram(&mut out, id, &storage);
        for &(name, v) in &s.storage {
            if grouped
                && (WAL_GROUP_BUCKETS.iter().any(|b| b.0 == name) || name == WAL_GROUP_BUCKET_INF)
            {
                continue;
            }
            if let Some((level, what)) = per_level(name) {
                let full = format!("corekv_storage_level_{what}");
                let help = match what {
                    "files" => "SSTables in the LSM level (the last level counts every deeper one)",
                    _ => {
                        "Bytes of SSTables in the LSM level (the last level counts every deeper one)"
                    }
                };
                out.sample(
                    &full,
                    "gauge",
                    help,
                    format!("{full}{{shard=\"{id}\",level=\"{level}\"}} {v}"),
                );
                continue;
            }
            generic(&mut out, "storage", "Storage engine counter", id, name, v);
        }
    }
    out.render()
}

/// `level<N>_files` / `level<N>_bytes` → `(N, "files" | "bytes")`: one labelled family for
/// every level instead of a family per level.
fn per_level(name: &str) -> Option<(u32, &str)> {
    let (level, what) = name.strip_prefix("level")?.split_once('_')?;
    let level = level.parse().ok()?;
    matches!(what, "files" | "bytes").then_some((level, what))
}

fn rpc_histogram(out: &mut Out, shard: usize, method: Method, lat: &super::Latency) {
    const NAME: &str = "corekv_rpc_duration_seconds";
    const HELP: &str =
        "Latency of RPC calls, from receipt to the encoded reply (hdrhistogram, 1% resolution)";
    let mut cumulative = [0u64; RPC_BUCKETS_SECONDS.len()];
    for v in lat.histogram_us.iter_recorded() {
        let us = lat.histogram_us.highest_equivalent(v.value_iterated_to());
        let secs = us as f64 / 1e6;
        if let Some(i) = RPC_BUCKETS_SECONDS.iter().position(|&le| secs <= le) {
            cumulative[i] += v.count_at_value();
        }
    }
    let m = method.label();
    let mut running = 0;
    for (i, le) in RPC_BUCKETS_SECONDS.iter().enumerate() {
        running += cumulative[i];
        out.sample(
            NAME,
            "histogram",
            HELP,
            format!("{NAME}_bucket{{shard=\"{shard}\",method=\"{m}\",le=\"{le}\"}} {running}"),
        );
    }
    let count = lat.histogram_us.len();
    out.sample(
        NAME,
        "histogram",
        HELP,
        format!("{NAME}_bucket{{shard=\"{shard}\",method=\"{m}\",le=\"+Inf\"}} {count}"),
    );
    out.sample(
        NAME,
        "histogram",
        HELP,
        format!(
            "{NAME}_sum{{shard=\"{shard}\",method=\"{m}\"}} {}",
            lat.sum_us as f64 / 1e6
        ),
    );
    out.sample(
        NAME,
        "histogram",
        HELP,
        format!("{NAME}_count{{shard=\"{shard}\",method=\"{m}\"}} {count}"),
    );
}

/// The group-commit histogram, when the engine reports its buckets. Returns whether it did.
fn wal_group_histogram(out: &mut Out, shard: usize, storage: &BTreeMap<&str, u64>) -> bool {
    const NAME: &str = "corekv_storage_wal_group_commit_records";
    const HELP: &str = "Records carried by each WAL write (group commit batch size)";
    let (Some(inf), Some(sum)) = (
        storage.get(WAL_GROUP_BUCKET_INF),
        storage.get(WAL_GROUP_SUM),
    ) else {
        return false;
    };
    if !WAL_GROUP_BUCKETS.iter().all(|b| storage.contains_key(b.0)) {
        return false;
    }
    let mut running = 0;
    for (name, le) in WAL_GROUP_BUCKETS {
        running += storage.get(name).copied().unwrap_or(0);
        out.sample(
            NAME,
            "histogram",
            HELP,
            format!("{NAME}_bucket{{shard=\"{shard}\",le=\"{le}\"}} {running}"),
        );
    }
    running += inf;
    out.sample(
        NAME,
        "histogram",
        HELP,
        format!("{NAME}_bucket{{shard=\"{shard}\",le=\"+Inf\"}} {running}"),
    );
    out.sample(
        NAME,
        "histogram",
        HELP,
        format!("{NAME}_sum{{shard=\"{shard}\"}} {sum}"),
    );
    out.sample(
        NAME,
        "histogram",
        HELP,
        format!("{NAME}_count{{shard=\"{shard}\"}} {running}"),
    );
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::ShardMetrics;

    fn snapshot(shard: usize) -> ShardSnapshot {
        let m = ShardMetrics::new().unwrap();
        let t = m.start(Method::Get);
        m.finish(t);
        ShardSnapshot {
            shard,
            server: vec![
                ("calls_total", 7),
                ("get_ops_total", 5),
                ("connections_open", 1),
            ],
            storage: vec![
                ("memtable_bytes", 4096),
                ("durability_periodic_interval_ms", 50),
                ("wal_records_total", 10),
                ("wal_group_records_1_total", 2),
                ("wal_group_records_2_3_total", 1),
                ("wal_group_records_4_7_total", 1),
                ("wal_group_records_8_15_total", 0),
                ("wal_group_records_16_31_total", 0),
                ("wal_group_records_32_plus_total", 0),
                ("level0_files", 3),
                ("level0_bytes", 4096),
                ("level6_files", 1),
                ("level_size_ratio", 10),
            ],
            metrics: m.snapshot(),
        }
    }

    #[test]
    fn families_are_grouped_typed_and_labelled() {
        let text = render(&[snapshot(0), snapshot(1)]);
        for line in [
            "# TYPE corekv_operations_total counter",
            "corekv_operations_total{shard=\"1\",op=\"get\"} 5",
            "corekv_server_calls_total{shard=\"0\"} 7",
            "# TYPE corekv_server_connections_open gauge",
            "corekv_storage_memtable_bytes{shard=\"1\"} 4096",
            "corekv_storage_durability_periodic_interval_seconds{shard=\"0\"} 0.05",
            "# TYPE corekv_rpc_duration_seconds histogram",
            "corekv_rpc_duration_seconds_count{shard=\"0\",method=\"get\"} 1",
            "corekv_rpc_duration_seconds_bucket{shard=\"0\",method=\"put\",le=\"+Inf\"} 0",
            "corekv_storage_wal_group_commit_records_bucket{shard=\"0\",le=\"3\"} 3",
            "corekv_storage_wal_group_commit_records_bucket{shard=\"0\",le=\"+Inf\"} 4",
            "corekv_storage_wal_group_commit_records_sum{shard=\"0\"} 10",
            "corekv_network_sent_bytes_total{shard=\"0\"} 0",
            "# TYPE corekv_storage_level_files gauge",
            "corekv_storage_level_files{shard=\"1\",level=\"0\"} 3",
            "corekv_storage_level_files{shard=\"0\",level=\"6\"} 1",
            "corekv_storage_level_bytes{shard=\"0\",level=\"0\"} 4096",
            "corekv_storage_level_size_ratio{shard=\"0\"} 10",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in:\n{text}"
            );
        }
        // Bucket counters are folded into the histogram, not repeated.
        assert!(!text.contains("wal_group_records_1_total"));
        assert!(!text.contains("corekv_server_get_ops_total"));
        assert!(!text.contains("level0_files"));
        // One HELP and TYPE per family; a family's samples are contiguous.
        let mut seen = std::collections::HashSet::new();
        let mut current = String::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap().to_string();
                assert!(seen.insert(name.clone()), "TYPE twice for {name}");
                current = name;
            } else if !line.starts_with('#') {
                assert!(
                    line.starts_with(&current),
                    "{line} outside its family {current}"
                );
            }
        }
        // The get histogram's buckets are cumulative and end at the count.
        let buckets: Vec<u64> = text
            .lines()
            .filter(|l| {
                l.starts_with("corekv_rpc_duration_seconds_bucket{shard=\"0\",method=\"get\"")
            })
            .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
            .collect();
        assert_eq!(buckets.len(), RPC_BUCKETS_SECONDS.len() + 1);
        assert!(buckets.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(*buckets.last().unwrap(), 1);
    }

    #[test]
    fn unit_words_become_seconds() {
        assert_eq!(
            base_unit_name("flush_latency_us_max"),
            ("flush_latency_seconds_max".to_string(), 1e-6)
        );
        assert_eq!(
            base_unit_name("stall_ms_total"),
            ("stall_seconds_total".to_string(), 1e-3)
        );
        assert_eq!(
            base_unit_name("memtable_bytes"),
            ("memtable_bytes".to_string(), 1.0)
        );
    }
}
