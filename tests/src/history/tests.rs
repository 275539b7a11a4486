use super::*;

fn temp_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("corekv-history-{}-{name}", std::process::id()))
}

#[test]
fn event_json_matches_the_documented_format() {
    let put = Event::invoke(3, "k1", Op::Put(5), 1234);
    assert_eq!(
        serde_json::to_string(&put).unwrap(),
        r#"{"process":3,"type":"invoke","f":"put","key":"k1","value":5,"time_ns":1234}"#
    );
    let cas = Op::Cas { from: None, to: 7 };
    let ok = Event::ok(4, "k1", cas, Reply::Cas { applied: false }, 99);
    assert_eq!(
        serde_json::to_string(&ok).unwrap(),
        r#"{"process":4,"type":"ok","f":"cas","key":"k1","value":{"from":null,"to":7,"applied":false},"time_ns":99}"#
    );
    let get = Event::ok(5, "k2", Op::Get, Reply::Get(None), 7);
    assert_eq!(
        serde_json::to_string(&get).unwrap(),
        r#"{"process":5,"type":"ok","f":"get","key":"k2","value":null,"time_ns":7}"#
    );
}

#[test]
fn jsonl_round_trip_through_a_file() {
    let history = History::new();
    let a = history.invoke(1, "a", Op::Put(1));
    let b = history.invoke(2, "a", Op::Get);
    let c = history.invoke(
        3,
        "b",
        Op::Cas {
            from: Some(1),
            to: 2,
        },
    );
    let d = history.invoke(4, "b", Op::Cas { from: None, to: 3 });
    history.ok(a, Reply::Put);
    history.ok(b, Reply::Get(Some(1)));
    history.info(c);
    history.fail(d);
    let _never_ends = history.invoke(5, "a", Op::Put(9));
    let events = history.events();
    assert_eq!(events.len(), 9);
    assert!(events.windows(2).all(|w| w[0].time_ns <= w[1].time_ns));

    let path = temp_path("round-trip.jsonl");
    history.write_jsonl(&path).unwrap();
    let read = read_jsonl(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(read, events);

    let ops = operations(&read).unwrap();
    let summary: Vec<(u64, Op, bool)> = ops
        .iter()
        .map(|o| (o.process, o.op, o.completion == Completion::Unknown))
        .collect();
    assert_eq!(
        summary,
        vec![
            (1, Op::Put(1), false),
            (2, Op::Get, false),
            (
                3,
                Op::Cas {
                    from: Some(1),
                    to: 2
                },
                true
            ),
            (5, Op::Put(9), true),
        ]
    );
    assert!(matches!(
        ops[1].completion,
        Completion::Ok {
            reply: Reply::Get(Some(1)),
            ..
        }
    ));
}

#[test]
fn recorder_works_across_threads() {
    let history = History::new();
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let history = history.clone();
            s.spawn(move || {
                for i in 0..100 {
                    let inv = history.invoke(t, "k", Op::Put(t * 1000 + i));
                    history.ok(inv, Reply::Put);
                }
            });
        }
    });
    let ops = operations(&history.events()).unwrap();
    assert_eq!(ops.len(), 400);
}

#[test]
fn malformed_lines_are_named() {
    let good = r#"{"process":1,"type":"invoke","f":"get","key":"k","value":null,"time_ns":1}"#;
    let cases = [
        ("{not json", "line 2, column"),
        (
            r#"{"process":1,"type":"begin","f":"get","key":"k","value":null,"time_ns":1}"#,
            "line 2, column",
        ),
        (
            r#"{"process":1,"type":"ok","f":"get","key":"k","value":null}"#,
            "missing field `time_ns`",
        ),
        (
            r#"{"process":1,"type":"invoke","f":"put","key":"k","value":null,"time_ns":1}"#,
            "line 2: a put invoke event's value must be a number, found null",
        ),
        (
            r#"{"process":1,"type":"ok","f":"cas","key":"k","value":{"from":1,"to":2},"time_ns":1}"#,
            "line 2: a cas ok event's value must be",
        ),
        (
            r#"{"process":1,"type":"invoke","f":"cas","key":"k","value":3,"time_ns":1}"#,
            "line 2: a cas invoke event's value must be",
        ),
    ];
    for (bad, expected) in cases {
        let text = format!("{good}\n{bad}\n{good}\n");
        let error = parse_jsonl(&text).unwrap_err();
        assert!(error.contains(expected), "{bad}: {error}");
        assert!(error.starts_with("line 2"), "{bad}: {error}");
    }
    assert_eq!(
        parse_jsonl(&format!("{good}\n\n{good}\n")).unwrap().len(),
        2
    );

    let path = temp_path("malformed.jsonl");
    std::fs::write(&path, format!("{good}\n{good}\n{{\n")).unwrap();
    let error = read_jsonl(&path).unwrap_err();
    std::fs::remove_file(&path).unwrap();
    assert!(error.contains("malformed.jsonl: line 3"), "{error}");
}

#[test]
fn malformed_histories_are_rejected() {
    let put = Op::Put(1);
    let inv = |p, op| Event::invoke(p, "k", op, 10);
    let ok_put = |p| Event::ok(p, "k", put, Reply::Put, 20);
    let cases: Vec<(Vec<Event>, &str)> = vec![
        (vec![ok_put(1)], "an end without an invoke"),
        (vec![inv(1, put), inv(1, Op::Get)], "second invoke"),
        (
            vec![
                inv(1, put),
                Event::ok(1, "k", Op::Get, Reply::Get(None), 20),
            ],
            "does not match its invoke",
        ),
        (
            vec![inv(1, put), Event::ok(1, "other", put, Reply::Put, 20)],
            "does not match its invoke",
        ),
        (
            vec![inv(1, put), Event::ok(1, "k", Op::Put(2), Reply::Put, 20)],
            "does not match its invoke",
        ),
        (
            vec![inv(1, put), Event::info(1, "k", put, 20), inv(1, Op::Get)],
            "invokes again after its operation ended info",
        ),
        (
            vec![Event::invoke(1, "k", put, 30), ok_put(1)],
            "ends before its invoke",
        ),
    ];
    for (events, expected) in cases {
        let error = operations(&events).unwrap_err();
        assert!(error.contains(expected), "{events:?}: {error}");
    }
    // After a fail (nothing happened) the process may go on.
    let events = vec![
        inv(1, put),
        Event::fail(1, "k", put, 20),
        Event::invoke(1, "k", Op::Get, 30),
        Event::ok(1, "k", Op::Get, Reply::Get(None), 40),
    ];
    assert_eq!(operations(&events).unwrap().len(), 1);
}
