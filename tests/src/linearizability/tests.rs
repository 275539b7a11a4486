use super::*;
use crate::history::EventValue;

fn ok(process: u64, call_ns: u64, return_ns: u64, op: Op, reply: Reply) -> Operation {
    Operation {
        process,
        key: "k".to_string(),
        op,
        call_ns,
        completion: Completion::Ok { reply, return_ns },
    }
}

fn put(process: u64, call_ns: u64, return_ns: u64, v: u64) -> Operation {
    ok(process, call_ns, return_ns, Op::Put(v), Reply::Put)
}

fn get(process: u64, call_ns: u64, return_ns: u64, v: Option<u64>) -> Operation {
    ok(process, call_ns, return_ns, Op::Get, Reply::Get(v))
}

fn cas(
    process: u64,
    call_ns: u64,
    return_ns: u64,
    (from, to): (Option<u64>, u64),
    applied: bool,
) -> Operation {
    ok(
        process,
        call_ns,
        return_ns,
        Op::Cas { from, to },
        Reply::Cas { applied },
    )
}

/// The operation `cas(from, to)`.
fn cas_op(from: Option<u64>, to: u64) -> Op {
    Op::Cas { from, to }
}

fn unknown(process: u64, call_ns: u64, op: Op) -> Operation {
    Operation {
        process,
        key: "k".to_string(),
        op,
        call_ns,
        completion: Completion::Unknown,
    }
}

fn verdict(ops: &[Operation]) -> Verdict {
    let report = check(ops);
    assert_eq!(report.keys.len(), 1);
    report.verdict
}

fn assert_rejected(ops: &[Operation]) -> Report {
    let report = check(ops);
    assert_eq!(report.verdict, Verdict::NotLinearizable, "{report}");
    report
}

fn assert_accepted(ops: &[Operation]) {
    let report = check(ops);
    assert_eq!(report.verdict, Verdict::Linearizable, "{report}");
}

#[test]
fn rejects_a_stale_read() {
    let report = assert_rejected(&[put(1, 0, 10, 1), get(2, 20, 30, None)]);
    let text = report.to_string();
    assert!(text.contains("key \"k\": NOT linearizable"), "{text}");
    assert!(text.contains("process 2 get -> absent"), "{text}");
    let stuck = report.keys[0].stuck.as_ref().unwrap();
    assert_eq!(stuck.ok_linearized, 1);
    assert_eq!(stuck.value, Some(1));
    assert_eq!(stuck.pending, vec![get(2, 20, 30, None)]);
}

#[test]
fn rejects_a_lost_write() {
    assert_rejected(&[put(1, 0, 10, 1), put(1, 20, 30, 2), get(2, 40, 50, Some(1))]);
}

#[test]
fn rejects_a_cas_applied_twice() {
    assert_rejected(&[
        put(1, 0, 10, 0),
        cas(2, 20, 40, (Some(0), 1), true),
        cas(3, 25, 45, (Some(0), 2), true),
    ]);
    // Either one alone is fine.
    assert_accepted(&[
        put(1, 0, 10, 0),
        cas(2, 20, 40, (Some(0), 1), true),
        cas(3, 25, 45, (Some(0), 2), false),
    ]);
}

#[test]
fn rejects_a_read_of_a_value_never_written() {
    assert_rejected(&[put(1, 0, 10, 1), get(2, 5, 20, Some(7))]);
    assert_rejected(&[get(2, 5, 20, Some(0))]);
}

#[test]
fn rejects_a_cas_not_applied_when_it_should_have() {
    assert_rejected(&[put(1, 0, 10, 3), cas(2, 20, 30, (Some(3), 4), false)]);
    assert_rejected(&[cas(2, 20, 30, (None, 4), false)]);
    assert_accepted(&[cas(2, 20, 30, (None, 4), true), get(1, 31, 32, Some(4))]);
}

#[test]
fn rejects_a_read_going_back_in_time() {
    let writes = [put(1, 0, 10, 1), put(2, 0, 10, 2)];
    let mut ops = writes.to_vec();
    ops.extend([get(3, 20, 30, Some(2)), get(3, 40, 50, Some(1))]);
    assert_rejected(&ops);
    // Each read alone is fine: the writes were concurrent.
    let mut ops = writes.to_vec();
    ops.extend([get(3, 20, 30, Some(1)), get(4, 40, 50, Some(1))]);
    assert_accepted(&ops);
}

#[test]
fn mit_quiz_examples() {
    // 6.824 2017 quiz 2, section VII, as in Porcupine's tests (absent for 0).
    assert_accepted(&[
        put(0, 0, 100, 100),
        get(1, 25, 75, Some(100)),
        get(2, 30, 60, None),
    ]);
    assert_rejected(&[
        put(0, 0, 100, 200),
        get(1, 10, 30, Some(200)),
        get(2, 40, 90, None),
    ]);
}

#[test]
fn accepts_a_concurrent_put_and_get_seeing_either_value() {
    for seen in [1, 2] {
        assert_accepted(&[
            put(1, 0, 10, 1),
            put(1, 20, 40, 2),
            get(2, 25, 35, Some(seen)),
        ]);
    }
    assert_rejected(&[put(1, 0, 10, 1), put(1, 20, 40, 2), get(2, 25, 35, None)]);
}

#[test]
fn touching_operations_are_concurrent() {
    // The put returned at 10, the get was called at 10: either order is allowed.
    assert_accepted(&[put(1, 0, 10, 1), get(2, 10, 20, None)]);
    assert_rejected(&[put(1, 0, 10, 1), get(2, 11, 20, None)]);
}

#[test]
fn accepts_an_unknown_put_seen_later() {
    assert_accepted(&[
        put(1, 0, 10, 1),
        unknown(2, 20, Op::Put(2)),
        get(3, 100, 110, Some(2)),
        get(3, 120, 130, Some(2)),
    ]);
    // Once seen, it stays: the register cannot go back to 1.
    assert_rejected(&[
        put(1, 0, 10, 1),
        unknown(2, 20, Op::Put(2)),
        get(3, 100, 110, Some(2)),
        get(3, 120, 130, Some(1)),
    ]);
    // It cannot take effect before its call.
    assert_rejected(&[
        put(1, 0, 10, 1),
        get(3, 12, 15, Some(2)),
        unknown(2, 20, Op::Put(2)),
    ]);
}

#[test]
fn accepts_an_unknown_put_never_seen() {
    assert_accepted(&[
        put(1, 0, 10, 1),
        unknown(2, 20, Op::Put(2)),
        get(3, 100, 110, Some(1)),
        put(4, 120, 130, 3),
        get(3, 140, 150, Some(3)),
    ]);
    // It may take effect late: after reads that did not see it.
    assert_accepted(&[
        put(1, 0, 10, 1),
        unknown(2, 20, Op::Put(2)),
        get(3, 100, 110, Some(1)),
        get(3, 200, 210, Some(2)),
    ]);
}

#[test]
fn accepts_unknown_cas() {
    let start = [put(1, 0, 10, 1), unknown(2, 20, cas_op(Some(1), 5))];
    for seen in [1, 5] {
        let mut ops = start.to_vec();
        ops.push(get(3, 30, 40, Some(seen)));
        assert_accepted(&ops);
    }
    // A cas that cannot apply cannot explain a read of its value.
    assert_rejected(&[
        put(1, 0, 10, 1),
        unknown(2, 20, cas_op(Some(9), 5)),
        get(3, 30, 40, Some(5)),
    ]);
    // A chain of unknown operations: a put, then a cas that depends on it.
    assert_accepted(&[
        put(1, 0, 10, 1),
        unknown(2, 20, Op::Put(7)),
        unknown(3, 21, cas_op(Some(7), 8)),
        get(4, 30, 40, Some(8)),
    ]);
    // The same chain where the put of 7 came after the read.
    assert_rejected(&[
        put(1, 0, 10, 1),
        unknown(3, 21, cas_op(Some(7), 8)),
        get(4, 30, 40, Some(8)),
        unknown(2, 50, Op::Put(7)),
    ]);
}

#[test]
fn an_unknown_operation_takes_effect_at_most_once() {
    // Read 5 twice with a put of 1 between: the one unknown put of 5 cannot explain both.
    // (The first, relaxed search accepts this; the exact one must not.)
    let ops = [
        put(1, 0, 10, 1),
        unknown(2, 20, Op::Put(5)),
        get(3, 30, 40, Some(5)),
        put(1, 50, 60, 1),
        get(3, 70, 80, Some(5)),
    ];
    let report = assert_rejected(&ops);
    let stuck = report.keys[0].stuck.as_ref().unwrap();
    assert_eq!(stuck.ok_linearized, 3, "{report}");
    // A second unknown put of 5 can.
    let mut ops = ops.to_vec();
    ops.push(unknown(4, 21, Op::Put(5)));
    assert_accepted(&ops);
}

#[test]
fn an_unknown_put_can_explain_a_cas_that_did_not_apply() {
    assert_accepted(&[
        put(1, 0, 10, 1),
        unknown(2, 20, Op::Put(2)),
        cas(3, 30, 40, (Some(1), 3), false),
    ]);
    assert_rejected(&[
        put(1, 0, 10, 1),
        unknown(2, 20, Op::Get),
        cas(3, 30, 40, (Some(1), 3), false),
    ]);
}

#[test]
fn accepts_an_etcd_style_history() {
    // Five clients on one key with overlapping reads, writes and cas, in the shape of the
    // Jepsen etcd histories Porcupine is tested on: cas that do not apply, writes that time
    // out (each client then continues as a new process).
    let ops = [
        get(4, 0, 5, None),
        put(1, 10, 40, 1),
        cas(2, 12, 50, (Some(2), 4), true),
        cas(3, 13, 55, (Some(1), 2), true),
        cas(0, 14, 45, (Some(1), 4), false),
        put(4, 60, 70, 0),
        put(1, 72, 80, 2),
        get(0, 82, 90, Some(2)),
        cas(2, 92, 100, (Some(0), 2), false),
        cas(3, 93, 105, (Some(2), 3), true),
        get(4, 106, 110, Some(3)),
        unknown(1, 111, Op::Put(3)),
        put(0, 112, 130, 2),
        put(2, 113, 125, 0),
        cas(3, 131, 140, (Some(0), 4), false),
        cas(4, 132, 141, (Some(3), 4), true),
        unknown(6, 142, Op::Put(1)),
        unknown(5, 143, cas_op(Some(4), 0)),
        put(0, 144, 150, 3),
        get(2, 151, 160, Some(3)),
        get(3, 152, 161, Some(1)),
        cas(4, 162, 170, (Some(1), 0), true),
        get(0, 171, 180, Some(0)),
    ];
    assert_accepted(&ops);
    // The same with the last read seeing the overwritten 3.
    let mut bad = ops.to_vec();
    bad[22] = get(0, 171, 180, Some(3));
    assert_rejected(&bad);
}

#[test]
fn keys_are_independent() {
    let mut a = put(1, 0, 10, 1);
    a.key = "a".to_string();
    let mut b = get(2, 20, 30, Some(1));
    b.key = "b".to_string();
    let report = check(&[a.clone(), b]);
    assert_eq!(report.verdict, Verdict::NotLinearizable);
    assert_eq!(report.keys[0].verdict, Verdict::Linearizable);
    assert_eq!(report.keys[1].verdict, Verdict::NotLinearizable);
    let mut b = get(2, 20, 30, Some(1));
    b.key = "a".to_string();
    assert_eq!(verdict(&[a, b]), Verdict::Linearizable);
}

#[test]
fn exhausted_budget_is_unknown() {
    // Twelve concurrent writes and reads that no order explains (a read of 99): the search
    // must try many orders.
    let mut ops: Vec<Operation> = (0..12).map(|p| put(p, 0, 100, p)).collect();
    ops.extend((12..20).map(|p| get(p, 1, 100, Some(p - 12))));
    ops.push(get(20, 2, 100, Some(99)));
    let limits = Limits {
        steps_per_key_max: 100,
        duration_max: Duration::from_secs(60),
    };
    let report = check_with_limits(&ops, &limits);
    assert_eq!(report.verdict, Verdict::Unknown, "{report}");
    assert!(
        report
            .to_string()
            .contains("unknown (search budget exhausted)")
    );
    assert_eq!(check(&ops).verdict, Verdict::NotLinearizable);
}

#[test]
fn an_explanation_shows_the_latest_unknown_operations() {
    let mut ops: Vec<Operation> = (0..20).map(|p| unknown(p, p, Op::Put(100 + p))).collect();
    ops.extend([put(30, 30, 40, 1), get(31, 50, 60, Some(7))]);
    let report = assert_rejected(&ops);
    let stuck = report.keys[0].stuck.as_ref().unwrap();
    assert_eq!(stuck.pending.len(), 21, "{report}");
    let text = report.to_string();
    assert!(
        text.contains("(12 unknown operations called earlier, not shown)"),
        "{text}"
    );
    assert!(text.contains("process 19 put(119) -> unknown"), "{text}");
    assert!(!text.contains("process 11 put(111)"), "{text}");
    assert!(text.contains("* process 31 get -> 7"), "{text}");
}

#[test]
fn check_events_pairs_then_checks() {
    let events = [
        Event::invoke(1, "k", Op::Put(1), 0),
        Event::ok(1, "k", Op::Put(1), Reply::Put, 10),
        Event::invoke(2, "k", Op::Get, 20),
        Event::ok(2, "k", Op::Get, Reply::Get(None), 30),
    ];
    let report = check_events(&events).unwrap();
    assert_eq!(report.verdict, Verdict::NotLinearizable);
    assert!(check_events(&events[1..]).is_err());
}

/// Whether some order of `ops` is a linearization: tries every order that real time allows,
/// each unknown operation taking effect at any point or never. Exponential: a few ops only.
fn brute_force(ops: &[Operation], value: Option<u64>) -> bool {
    if ops.iter().all(|o| o.completion == Completion::Unknown) {
        return true;
    }
    let return_ns = |o: &Operation| match o.completion {
        Completion::Ok { return_ns, .. } => return_ns,
        Completion::Unknown => u64::MAX,
    };
    (0..ops.len()).any(|i| {
        let o = &ops[i];
        if ops.iter().any(|p| return_ns(p) < o.call_ns) {
            return false;
        }
        let rest: Vec<Operation> = ops
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != i)
            .map(|(_, p)| p.clone())
            .collect();
        let after = match (o.op, o.completion) {
            (Op::Get, Completion::Ok { reply, .. }) => {
                (reply == Reply::Get(value)).then_some(value)
            }
            (Op::Put(v), _) => Some(Some(v)),
            (Op::Cas { from, to }, Completion::Ok { reply, .. }) => {
                let applied = value == from;
                (reply == Reply::Cas { applied }).then_some(if applied { Some(to) } else { value })
            }
            (Op::Cas { from, to }, Completion::Unknown) => {
                Some(if value == from { Some(to) } else { value })
            }
            (Op::Get, Completion::Unknown) => Some(value),
        };
        let never = o.completion == Completion::Unknown && brute_force(&rest, value);
        never || after.is_some_and(|v| brute_force(&rest, v))
    })
}

#[test]
fn agrees_with_brute_force_on_small_random_histories() {
    let mut rng = Rng(5);
    let mut verdicts = [0; 2];
    for case in 0..20_000 {
        let count = 1 + rng.below(7);
        let ops: Vec<Operation> = (0..count)
            .map(|p| {
                let call_ns = rng.below(20);
                let return_ns = call_ns + rng.below(8);
                let v = rng.below(3);
                let maybe = |rng: &mut Rng| (rng.below(4) != 0).then(|| rng.below(3));
                let (op, reply) = match rng.below(3) {
                    0 => (Op::Get, Reply::Get(maybe(&mut rng))),
                    1 => (Op::Put(v), Reply::Put),
                    _ => {
                        let from = maybe(&mut rng);
                        let applied = rng.below(2) == 0;
                        (Op::Cas { from, to: v }, Reply::Cas { applied })
                    }
                };
                if rng.below(5) == 0 {
                    unknown(p, call_ns, op)
                } else {
                    ok(p, call_ns, return_ns, op, reply)
                }
            })
            .collect();
        let expected = brute_force(&ops, None);
        verdicts[usize::from(expected)] += 1;
        let report = check(&ops);
        let want = if expected {
            Verdict::Linearizable
        } else {
            Verdict::NotLinearizable
        };
        assert_eq!(report.verdict, want, "case {case}: {ops:#?}\n{report}");
    }
    println!(
        "brute force: {} not linearizable, {} linearizable",
        verdicts[0], verdicts[1]
    );
    assert!(verdicts.iter().all(|&n| n > 2_000), "{verdicts:?}");
}

/// SplitMix64: a seeded generator, so a failure replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What a simulated history looks like.
struct Shape {
    clients: u64,
    keys: u64,
    ops: u64,
    /// Per mille of operations that end `info` (half of them take effect).
    unknown_per_mille: u64,
    /// Per mille that end `fail` (none takes effect).
    fail_per_mille: u64,
    /// Values are drawn from 0..values: small domains make cas and reads ambiguous.
    values: u64,
}

/// A history of a real linearizable register per key: each operation takes effect at a
/// random point inside its span (an unknown one possibly later, or never), and its reply is
/// the register's at that point.
fn simulate(seed: u64, shape: &Shape) -> Vec<Event> {
    struct Planned {
        process: u64,
        key: String,
        op: Op,
        call_ns: u64,
        end_ns: u64,
        /// 0 ok, 1 fail, 2 info, 3 no end.
        end: u8,
        effect_ns: Option<u64>,
        reply: Option<Reply>,
    }
    let mut rng = Rng(seed);
    let mut planned: Vec<Planned> = Vec::new();
    let mut next_process = shape.clients;
    for client in 0..shape.clients {
        let mut process = client;
        let mut t = rng.below(1_000);
        let count = shape.ops / shape.clients;
        for i in 0..count {
            let call_ns = t + rng.below(20_000);
            let span_ns = 1 + rng.below(100_000);
            let end_ns = call_ns + span_ns;
            t = end_ns;
            let value = rng.below(shape.values);
            let op = match rng.below(10) {
                0..=3 => Op::Get,
                4..=6 => Op::Put(value),
                _ => cas_op((rng.below(5) != 0).then(|| rng.below(shape.values)), value),
            };
            let r = rng.below(1_000);
            let end = if r < shape.unknown_per_mille {
                if i + 1 == count && rng.below(2) == 0 {
                    3
                } else {
                    2
                }
            } else if r < shape.unknown_per_mille + shape.fail_per_mille {
                1
            } else {
                0
            };
            let effect_ns = match end {
                0 => Some(call_ns + rng.below(span_ns + 1)),
                1 => None,
                // An unknown operation may take effect after its info, or never.
                _ => (rng.below(2) == 0).then(|| call_ns + rng.below(span_ns * 2)),
            };
            planned.push(Planned {
                process,
                key: format!("key{}", rng.below(shape.keys)),
                op,
                call_ns,
                end_ns,
                end,
                effect_ns,
                reply: None,
            });
            if end >= 2 {
                process = next_process;
                next_process += 1;
            }
        }
    }
    let mut order: Vec<usize> = (0..planned.len())
        .filter(|&i| planned[i].effect_ns.is_some())
        .collect();
    order.sort_by_key(|&i| planned[i].effect_ns);
    let mut registers: HashMap<String, Option<u64>> = HashMap::new();
    for i in order {
        let p = &mut planned[i];
        let register = registers.entry(p.key.clone()).or_default();
        p.reply = Some(match p.op {
            Op::Get => Reply::Get(*register),
            Op::Put(v) => {
                *register = Some(v);
                Reply::Put
            }
            Op::Cas { from, to } => {
                let applied = *register == from;
                if applied {
                    *register = Some(to);
                }
                Reply::Cas { applied }
            }
        });
    }
    // (time, ends before invokes at equal times, event)
    let mut events: Vec<(u64, u8, Event)> = Vec::new();
    for p in &planned {
        events.push((
            p.call_ns,
            1,
            Event::invoke(p.process, &p.key, p.op, p.call_ns),
        ));
        let end = match (p.end, p.reply) {
            (0, Some(reply)) => Event::ok(p.process, &p.key, p.op, reply, p.end_ns),
            (1, _) => Event::fail(p.process, &p.key, p.op, p.end_ns),
            (2, _) => Event::info(p.process, &p.key, p.op, p.end_ns),
            _ => continue,
        };
        events.push((p.end_ns, 0, end));
    }
    events.sort_by_key(|(t, kind, _)| (*t, *kind));
    events.into_iter().map(|(_, _, e)| e).collect()
}

const SHAPE_10K: Shape = Shape {
    clients: 10,
    keys: 5,
    ops: 10_000,
    unknown_per_mille: 10,
    fail_per_mille: 10,
    values: 5,
};

#[test]
fn accepts_a_sequential_history_of_10k_operations() {
    let shape = Shape {
        clients: 1,
        keys: 1,
        ops: 10_000,
        unknown_per_mille: 0,
        fail_per_mille: 0,
        values: 100,
    };
    let events = simulate(7, &shape);
    let report = check_events(&events).unwrap();
    assert!(report.is_linearizable(), "{report}");
    assert_eq!(report.ok_count, 10_000);
}

#[test]
fn random_concurrent_history_of_10k_operations() {
    for seed in [1, 2, 3] {
        let events = simulate(seed, &SHAPE_10K);
        let report = check_events(&events).unwrap();
        println!("seed {seed}: {report}");
        let steps: Vec<u64> = report.keys.iter().map(|k| k.steps).collect();
        println!("  steps per key: {steps:?}");
        assert!(report.is_linearizable(), "seed {seed}: {report}");
        assert!(report.unknown_count > 50, "seed {seed}: {report}");

        // One read in the middle sees a value nobody wrote.
        let mut bad = events.clone();
        let middle = bad.len() / 2;
        let read = bad[middle..]
            .iter_mut()
            .find(|e| e.kind == history::EventType::Ok && e.f == history::Function::Get)
            .unwrap();
        read.value = EventValue::Register(Some(1_000_000));
        let key = read.key.clone();
        let report = check_events(&bad).unwrap();
        assert_eq!(
            report.verdict,
            Verdict::NotLinearizable,
            "seed {seed}: {report}"
        );
        let failed: Vec<&str> = report.failures().map(|k| k.key.as_str()).collect();
        assert_eq!(failed, [key.as_str()]);
        assert!(report.to_string().contains("get -> 1000000"), "{report}");
    }
}

#[test]
fn random_history_with_ten_clients_on_one_key() {
    let shape = Shape {
        keys: 1,
        ops: 3_000,
        unknown_per_mille: 20,
        ..SHAPE_10K
    };
    for seed in [11, 12] {
        let report = check_events(&simulate(seed, &shape)).unwrap();
        println!("seed {seed}: {report}  steps {}", report.keys[0].steps);
        assert!(report.is_linearizable(), "seed {seed}: {report}");
    }
}

#[test]
fn a_10k_operation_history_is_accepted_and_one_bad_read_rejects_it() {
    let mut events = simulate(42, &SHAPE_10K);
    let time = |events: &[Event]| {
        let ops = history::operations(events).unwrap();
        let started = Instant::now();
        let report = check(&ops);
        (report, started.elapsed().as_secs_f64() * 1e3)
    };
    let (report, accept_ms) = time(&events);
    assert!(report.is_linearizable(), "{report}");
    // The last read of the history sees a value nobody wrote.
    let read = events
        .iter_mut()
        .rev()
        .find(|e| e.kind == history::EventType::Ok && e.f == history::Function::Get)
        .unwrap();
    read.value = EventValue::Register(Some(1_000_000));
    let (bad, reject_ms) = time(&events);
    assert_eq!(bad.verdict, Verdict::NotLinearizable, "{bad}");
    println!(
        "10k-operation check ({} ok, {} unknown, 10 clients, 5 keys): accepted in {accept_ms:.1} \
         ms; with the last read changed, rejected in {reject_ms:.1} ms",
        report.ok_count, report.unknown_count,
    );
}
