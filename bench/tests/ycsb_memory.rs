//! The whole driver (threads, slots, generators, measurement, report) against the in-process
//! map, which plays a database that answers `NOT_FOUND` for a record never written.

// Test code: a failed set-up step should panic the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use corekv_bench::ycsb::args::YcsbArgs;
use corekv_bench::ycsb::backend::memory::MemoryBackend;
use corekv_bench::ycsb::measure::Status;
use corekv_bench::ycsb::report::{PhaseReport, parse_ycsb};
use corekv_bench::ycsb::workload::OpKind;
use corekv_bench::ycsb::{drive, record};

fn run(flags: &[&str]) -> (MemoryBackend, Vec<PhaseReport>) {
    let args = YcsbArgs::parse_flags(flags.iter().copied().chain(["--quiet"])).unwrap();
    let backend = MemoryBackend::new();
    // Not pinned: tests share the machine.
    let reports = drive(&backend, &args, Vec::new()).unwrap();
    (backend, reports)
}

fn ops(r: &PhaseReport, kind: OpKind) -> u64 {
    Status::ALL
        .iter()
        .map(|&s| r.measurements.returned(kind, s))
        .sum()
}

#[test]
fn load_inserts_every_record_once_with_hashed_keys() {
    let (db, reports) = run(&[
        "--phase",
        "load",
        "--records",
        "3000",
        "--threads",
        "2",
        "--connections",
        "3",
        "--inflight",
        "5",
    ]);
    assert_eq!(reports.len(), 1);
    let load = &reports[0];
    assert_eq!(load.measurements.returned(OpKind::Insert, Status::Ok), 3000);
    assert_eq!(load.measurements.transactions, 3000);
    assert_eq!(
        db.len(),
        3000,
        "every key number 0..3000 written exactly once"
    );
    let mut key = Vec::new();
    for n in [0u64, 1, 1499, 2999] {
        corekv_bench::ycsb::keys::key_name(n, &mut key);
        let value = db.get(&key).unwrap_or_else(|| panic!("record {n} missing"));
        let fields = record::decode_record(&value).unwrap();
        assert_eq!(fields.len(), 10);
        assert!(fields.iter().all(|(_, v)| v.len() == 100));
    }
}

#[test]
fn every_workload_has_ycsb_proportions_and_never_misses_a_record() {
    // (workload, [(kind, share)]); 20000 operations: binomial sd at p=0.05 is 0.0015, at
    // p=0.5 0.0035; tolerance 0.02 is > 5 sd.
    let cases: [(&str, &[(OpKind, f64)]); 6] = [
        ("a", &[(OpKind::Read, 0.5), (OpKind::Update, 0.5)]),
        ("b", &[(OpKind::Read, 0.95), (OpKind::Update, 0.05)]),
        ("c", &[(OpKind::Read, 1.0)]),
        ("d", &[(OpKind::Read, 0.95), (OpKind::Insert, 0.05)]),
        ("e", &[(OpKind::Scan, 0.95), (OpKind::Insert, 0.05)]),
        ("f", &[(OpKind::Read, 0.5), (OpKind::ReadModifyWrite, 0.5)]),
    ];
    for (name, mix) in cases {
        let (db, reports) = run(&[
            "--workload",
            name,
            "--records",
            "2000",
            "--operations",
            "20000",
            "--threads",
            "2",
            "--inflight",
            "8",
            "--value-size",
            "20",
        ]);
        let runp = &reports[1];
        assert_eq!(runp.measurements.transactions, 20_000, "workload {name}");
        for &(kind, share) in mix {
            // F's read-modify-writes also record their reads: count top-level reads only.
            let mut n = ops(runp, kind);
            if name == "f" && kind == OpKind::Read {
                n -= ops(runp, OpKind::ReadModifyWrite);
            }
            let got = n as f64 / 20_000.0;
            assert!(
                (got - share).abs() < 0.02,
                "workload {name} {kind:?}: {got} want {share}"
            );
        }
        // Reads and scans only ever target acknowledged records: nothing is NOT_FOUND, even
        // while D and E insert concurrently from two threads.
        assert_eq!(
            runp.measurements.failures(),
            0,
            "workload {name} had failures"
        );
        let inserts = runp.measurements.returned(OpKind::Insert, Status::Ok);
        assert_eq!(db.len() as u64, 2000 + inserts, "workload {name}");
        // The text report parses and agrees.
        let lines = parse_ycsb(&runp.to_ycsb_text()).unwrap();
        // Each read-modify-write also recorded a READ and an UPDATE: count those out.
        let number = |section: &str| {
            lines
                .iter()
                .find(|l| l.section == section && l.metric == "Operations")
                .and_then(|l| l.number())
                .unwrap_or(0.0)
        };
        let total = ["READ", "UPDATE", "INSERT", "SCAN", "READ-MODIFY-WRITE"]
            .into_iter()
            .map(number)
            .sum::<f64>()
            - 2.0 * number("READ-MODIFY-WRITE");
        assert_eq!(
            total, 20_000.0,
            "workload {name}: Operations lines sum to {total}"
        );
    }
}

#[test]
fn updates_change_one_field_unless_all_are_asked_for() {
    let (db, _) = run(&[
        "--workload",
        "a",
        "--records",
        "50",
        "--operations",
        "2000",
        "--threads",
        "1",
    ]);
    // Every record still has its ten fields after single-field read-merge-writes.
    let mut key = Vec::new();
    for n in 0..50 {
        corekv_bench::ycsb::keys::key_name(n, &mut key);
        let v = db.get(&key).unwrap();
        assert_eq!(record::decode_record(&v).unwrap().len(), 10);
    }
    let (_, reports) = run(&[
        "--workload",
        "a",
        "--records",
        "50",
        "--operations",
        "2000",
        "--write-all-fields",
    ]);
    assert_eq!(reports[1].measurements.failures(), 0);
}

#[test]
fn duration_bounds_the_run_phase() {
    let (_, reports) = run(&[
        "--workload",
        "c",
        "--records",
        "100",
        "--duration",
        "0.3",
        "--target",
        "1000",
    ]);
    let r = &reports[1];
    // 0.3 s at 1000 ops/s: about 300 operations, never more than the schedule allows.
    assert!(
        r.measurements.transactions <= 301 + 16,
        "{} ops",
        r.measurements.transactions
    );
    // No lower bound on the count: on a loaded 2-core machine the worker may get little CPU
    // in 0.3 s. The duration itself must hold.
    assert!(r.runtime.as_secs_f64() >= 0.29);
}

#[test]
fn bad_options_are_refused_with_a_clear_message() {
    for (flags, needle) in [
        (
            &["--threads", "4", "--connections", "2"][..],
            "--connections",
        ),
        (&["--threads", "0"], "--threads"),
        (&["--inflight", "0"], "--inflight"),
        (&["--records", "0"], "--records"),
        (&["--value-size", "99999999"], "--value-size"),
        (&["--target=-5"], "--target"),
        (&["--field-count", "0"], "--field-count"),
        (&["--operations", "0"], "--operations"),
    ] {
        let args = YcsbArgs::parse_flags(flags.iter().copied()).unwrap();
        let err = drive(&MemoryBackend::new(), &args, Vec::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle), "{flags:?}: {err}");
    }
}
