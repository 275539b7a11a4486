//! One benchmark's result, printed as db_bench prints it, plus a line of corekv detail.

use hdrhistogram::Histogram;

/// What one benchmark measured.
#[derive(Debug, Clone)]
pub struct BenchResult {
    /// db_bench's benchmark name.
    pub name: String,
    /// Operations over all tasks.
    pub ops: u64,
    /// Wall time from the first task's start to the last task's end.
    pub elapsed_secs: f64,
    /// Sum over tasks of each task's own running time (db_bench's `micros/op` divides this).
    pub task_secs_sum: f64,
    /// Key + value bytes written or read.
    pub bytes: u64,
    /// `(found, looked up)` for reads.
    pub found: Option<(u64, u64)>,
    /// Per-operation latency, nanoseconds.
    pub latency_ns: Histogram<u64>,
    /// WAL records written during the benchmark.
    pub wal_records: u64,
    /// WAL writes (group commits) during the benchmark.
    pub wal_writes: u64,
    /// WAL fdatasyncs during the benchmark.
    pub wal_syncs: u64,
    /// Most records in one WAL write (since open).
    pub wal_group_max: u64,
    /// WAL writes by records carried: 1, 2-3, 4-7, 8-15, 16-31, 32+.
    pub wal_groups: [u64; 6],
}

impl BenchResult {
    /// Operations per second over the wall time.
    pub fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed_secs.max(1e-9)
    }

    /// db_bench's line, byte for byte in its format (RocksDB 7.x `Stats::Report`):
    /// `fillrandom   :       6.334 micros/op 157885 ops/sec 6.334 seconds 1000000 operations;   17.5 MB/s`
    pub fn db_bench_line(&self) -> String {
        let done = self.ops.max(1);
        let mut extra = String::new();
        if self.bytes > 0 {
            extra = format!(
                "{:6.1} MB/s",
                self.bytes as f64 / 1_048_576.0 / self.elapsed_secs.max(1e-9)
            );
        }
        if let Some((found, of)) = self.found {
            if !extra.is_empty() {
                extra.push(' ');
            }
            extra.push_str(&format!("({found} of {of} found)"));
        }
        format!(
            "{:<12} : {:>11.3} micros/op {} ops/sec {:.3} seconds {} operations;{}{}",
            self.name,
            self.task_secs_sum * 1e6 / done as f64,
            self.ops_per_sec() as i64,
            self.elapsed_secs,
            done,
            if extra.is_empty() { "" } else { " " },
            extra
        )
    }

    /// corekv's detail line: latency percentiles and group-commit sizes.
    pub fn detail_line(&self) -> String {
        let us = |q: f64| self.latency_ns.value_at_quantile(q) as f64 / 1000.0;
        let mut s = format!(
            "{:<12} : latency_us p50={:.1} p99={:.1} p99.9={:.1} max={:.1}",
            self.name,
            us(0.5),
            us(0.99),
            us(0.999),
            self.latency_ns.max() as f64 / 1000.0
        );
        if self.wal_writes > 0 {
            s.push_str(&format!(
                " | wal records={} writes={} syncs={} records_per_write={:.1} group_max={} \
                 groups[1,2-3,4-7,8-15,16-31,32+]={:?}",
                self.wal_records,
                self.wal_writes,
                self.wal_syncs,
                self.wal_records as f64 / self.wal_writes as f64,
                self.wal_group_max,
                self.wal_groups
            ));
        }
        s
    }
}

/// corekv's engine line: the LSM's state and cumulative counters since the engine was opened
/// (fill benchmarks open a fresh one): user bytes, bytes written by the WAL, flushes and
/// compactions, write amplification, stalls, the block cache and the bloom filters.
///
/// Write amplification = (flush + compaction bytes written) / user key+value bytes
/// (`wamp_tables`, comparable to RocksDB's compaction stats `W-Amp` summed over levels), and
/// the same plus the WAL's bytes (`wamp_total`, all bytes the engine wrote).
pub fn engine_line(name: &str, s: &corekv_storage::Stats) -> String {
    let user = s.write_payload_bytes_total.max(1) as f64;
    let tables = (s.flush_bytes_written_total + s.compaction_bytes_written_total) as f64;
    let mib = |b: u64| b as f64 / 1_048_576.0;
    let levels = s.levels();
    let levels: Vec<String> = levels
        .iter()
        .enumerate()
        .filter(|(_, (files, _))| *files > 0)
        .map(|(l, (files, bytes))| format!("L{l}:{files}/{:.1}MiB", mib(*bytes)))
        .collect();
    let lookups = s.block_cache_hits_total + s.block_cache_misses_total;
    format!(
        "{:<12} : engine since open: user_MiB={:.1} wal_MiB={:.1} flush_MiB={:.1} \
         compaction_MiB={:.1} (read {:.1}) wamp_tables={:.2} wamp_total={:.2} flushes={} \
         compactions={} pending_MiB={:.1} imm={} bg_shares={} stalls={} stall_ms={} levels=[{}] \
         cache hits={} misses={} hit%={:.1} data_MiB={:.1} pinned_MiB={:.1} cap_MiB={:.1} \
         bloom useful={} fp={}",
        name,
        mib(s.write_payload_bytes_total),
        mib(s.wal_write_bytes_total),
        mib(s.flush_bytes_written_total),
        mib(s.compaction_bytes_written_total),
        mib(s.compaction_bytes_read_total),
        tables / user,
        (tables + s.wal_write_bytes_total as f64) / user,
        s.flushes_total,
        s.compactions_total,
        mib(s.compaction_pending_bytes),
        s.memtables_immutable,
        s.background_shares,
        s.write_stalls_total,
        s.write_stall_us_total / 1000,
        levels.join(" "),
        s.block_cache_hits_total,
        s.block_cache_misses_total,
        if lookups > 0 {
            100.0 * s.block_cache_hits_total as f64 / lookups as f64
        } else {
            0.0
        },
        mib(s.block_cache_data_bytes),
        mib(s.block_cache_pinned_bytes),
        mib(s.block_cache_capacity_bytes),
        s.bloom_useful_total,
        s.bloom_false_positive_total,
    )
}

/// One parsed db_bench line: name, micros/op, ops/sec, operations.
#[derive(Debug, Clone, PartialEq)]
pub struct DbBenchLine {
    /// Benchmark name.
    pub name: String,
    /// micros/op.
    pub micros_per_op: f64,
    /// ops/sec.
    pub ops_per_sec: u64,
    /// operations.
    pub operations: u64,
}

/// Parses a db_bench result line (ours or RocksDB's); None for other lines.
pub fn parse_db_bench_line(line: &str) -> Option<DbBenchLine> {
    let (name, rest) = line.split_once(" : ")?;
    let w: Vec<&str> = rest.split_whitespace().collect();
    if w.get(1) != Some(&"micros/op") || w.get(3) != Some(&"ops/sec") {
        return None;
    }
    Some(DbBenchLine {
        name: name.trim().to_string(),
        micros_per_op: w.first()?.parse().ok()?,
        ops_per_sec: w.get(2)?.parse().ok()?,
        operations: w.get(6)?.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(
        name: &str,
        ops: u64,
        secs: f64,
        bytes: u64,
        found: Option<(u64, u64)>,
    ) -> BenchResult {
        BenchResult {
            name: name.into(),
            ops,
            elapsed_secs: secs,
            task_secs_sum: secs,
            bytes,
            found,
            latency_ns: Histogram::new(3).unwrap(),
            wal_records: 0,
            wal_writes: 0,
            wal_syncs: 0,
            wal_group_max: 0,
            wal_groups: [0; 6],
        }
    }

    #[test]
    fn lines_match_db_bench_byte_for_byte() {
        // From RocksDB 7.8.3's db_bench on this machine.
        let r = result("fillseq", 100_000, 1.246, 100_000 * 116, None);
        let line = r.db_bench_line();
        assert!(line.starts_with("fillseq      :      12.460 micros/op 80256 ops/sec 1.246 seconds 100000 operations;   "), "{line}");
        assert!(line.ends_with(" MB/s"));
        let r = result("seekrandom", 100_000, 0.873, 0, Some((86_548, 100_000)));
        assert_eq!(
            r.db_bench_line(),
            "seekrandom   :       8.730 micros/op 114547 ops/sec 0.873 seconds 100000 operations; (86548 of 100000 found)"
        );
        let r = result("readrandom", 100_000, 1.0, 1_048_576 * 8, Some((5, 6)));
        assert_eq!(
            r.db_bench_line(),
            "readrandom   :      10.000 micros/op 100000 ops/sec 1.000 seconds 100000 operations;    8.0 MB/s (5 of 6 found)"
        );
    }

    #[test]
    fn parses_its_own_and_rocksdbs_lines() {
        let rocks = "fillsync16   :    1205.421 micros/op 13090 ops/sec 2.445 seconds 32000 operations;    1.4 MB/s";
        assert_eq!(
            parse_db_bench_line(rocks),
            Some(DbBenchLine {
                name: "fillsync16".into(),
                micros_per_op: 1205.421,
                ops_per_sec: 13090,
                operations: 32000
            })
        );
        let ours = result("readseq", 10, 0.5, 0, None).db_bench_line();
        assert_eq!(parse_db_bench_line(&ours).unwrap().operations, 10);
        assert_eq!(parse_db_bench_line("fillseq      : latency_us p50=1"), None);
    }
}
