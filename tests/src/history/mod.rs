//! Histories of client operations on registers, for the linearizability checker
//! ([`crate::linearizability`]): the event format, a recorder, and the pairing of events into
//! operations.
//!
//! # Format
//!
//! A history is a JSON Lines file: one event per line, in the order they were recorded, in the
//! style of Jepsen's histories. An event is the start (`invoke`) or the end (`ok`, `fail`,
//! `info`) of one client operation on one key:
//!
//! ```text
//! {"process":3,"type":"invoke","f":"put","key":"k1","value":5,"time_ns":1234}
//! {"process":3,"type":"ok","f":"put","key":"k1","value":5,"time_ns":2345}
//! {"process":4,"type":"invoke","f":"cas","key":"k1","value":{"from":5,"to":6},"time_ns":2400}
//! {"process":4,"type":"ok","f":"cas","key":"k1","value":{"from":5,"to":6,"applied":true},"time_ns":2500}
//! {"process":5,"type":"invoke","f":"get","key":"k1","value":null,"time_ns":2600}
//! {"process":5,"type":"info","f":"get","key":"k1","value":null,"time_ns":9000}
//! ```
//!
//! | field     | meaning                                                                   |
//! |-----------|---------------------------------------------------------------------------|
//! | `process` | logical client id (u64): one operation at a time per process              |
//! | `type`    | `invoke`; or how the operation ended: `ok`, `fail` or `info` (below)      |
//! | `f`       | `get`, `put` or `cas` (compare-and-set)                                   |
//! | `key`     | the register's name; each key is an independent register                  |
//! | `value`   | the argument or result, by `f` and `type` (table below)                   |
//! | `time_ns` | nanoseconds since the run started, on a monotonic clock shared by all     |
//!
//! Register values are u64; `null` means the key is absent (every key starts absent).
//!
//! | `f`   | `invoke`                 | `ok`                                          | `fail`, `info`       |
//! |-------|--------------------------|-----------------------------------------------|----------------------|
//! | `get` | `null`                   | the value read (`null`: absent)               | `null`               |
//! | `put` | the value written        | the same                                      | the same             |
//! | `cas` | `{"from":F,"to":T}`      | `{"from":F,"to":T,"applied":true\|false}`     | `{"from":F,"to":T}`  |
//!
//! `cas` sets the register to `T` if it holds `F` (`F` = `null`: if it is absent). A cas that
//! compared and found another value ends `ok` with `"applied":false`: that is information (the
//! register did not hold `F` when the cas took effect), not a failure.
//!
//! The end types:
//! - `ok`: the operation took effect, once, between its invoke and this event.
//! - `fail`: the operation certainly did not take effect (a typed refusal). It is dropped.
//! - `info`: unknown (a timeout, a lost connection): it may have taken effect at any time after
//!   its invoke, even after this event, or never. An invoke with no end is read the same way.
//!
//! Rules, checked by [`operations`]: a process has at most one operation in flight; an end names
//! the same `f`, `key` and argument as its invoke and is not earlier than it; and, as in Jepsen,
//! a process whose operation ended `info` invokes nothing more (the client continues under a new
//! process id), since its lost operation may still be in flight.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// How an event relates to its operation (the JSON `type` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    /// The operation starts.
    Invoke,
    /// It took effect, with the result in `value`.
    Ok,
    /// It certainly did not take effect.
    Fail,
    /// Unknown whether it took effect, or when.
    Info,
}

/// The operation's function (the JSON `f` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Function {
    /// Read the register.
    Get,
    /// Write the register.
    Put,
    /// Compare-and-set.
    Cas,
}

impl fmt::Display for Function {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Function::Get => "get",
            Function::Put => "put",
            Function::Cas => "cas",
        })
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EventType::Invoke => "invoke",
            EventType::Ok => "ok",
            EventType::Fail => "fail",
            EventType::Info => "info",
        })
    }
}

/// A cas event's `value`: `{"from":F,"to":T}`, plus `"applied"` on `ok`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CasValue {
    /// The value expected (`None`: absent).
    pub from: Option<u64>,
    /// The value to write.
    pub to: u64,
    /// On `ok` only: whether the register held `from`, so `to` was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied: Option<bool>,
}

/// An event's `value` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EventValue {
    /// A cas's arguments (and result).
    Cas(CasValue),
    /// A register value, or `null`.
    Register(Option<u64>),
}

/// One line of a history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// Logical client id.
    pub process: u64,
    /// Invoke, or how the operation ended.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// The function.
    pub f: Function,
    /// The register.
    pub key: String,
    /// Argument or result (see the module doc).
    pub value: EventValue,
    /// Nanoseconds since the run started (monotonic).
    pub time_ns: u64,
}

/// An operation as invoked: function and arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// Read the register.
    Get,
    /// Write this value.
    Put(u64),
    /// Write `to` if the register holds `from` (`None`: absent).
    Cas {
        /// Expected value.
        from: Option<u64>,
        /// New value.
        to: u64,
    },
}

/// The result of an operation that ended `ok`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reply {
    /// The value read (`None`: absent).
    Get(Option<u64>),
    /// The write took effect.
    Put,
    /// Whether the cas found `from` and wrote `to`.
    Cas {
        /// `false`: the register held another value.
        applied: bool,
    },
}

impl Op {
    /// The function this operation calls.
    pub fn function(&self) -> Function {
        match self {
            Op::Get => Function::Get,
            Op::Put(_) => Function::Put,
            Op::Cas { .. } => Function::Cas,
        }
    }

    /// The `value` of this operation's invoke, `fail` and `info` events.
    fn argument_value(&self) -> EventValue {
        match *self {
            Op::Get => EventValue::Register(None),
            Op::Put(v) => EventValue::Register(Some(v)),
            Op::Cas { from, to } => EventValue::Cas(CasValue {
                from,
                to,
                applied: None,
            }),
        }
    }

    /// The `value` of this operation's `ok` event.
    ///
    /// # Panics
    /// If `reply` is for another function: a harness bug.
    fn ok_value(&self, reply: Reply) -> EventValue {
        match (*self, reply) {
            (Op::Get, Reply::Get(v)) => EventValue::Register(v),
            (Op::Put(v), Reply::Put) => EventValue::Register(Some(v)),
            (Op::Cas { from, to }, Reply::Cas { applied }) => EventValue::Cas(CasValue {
                from,
                to,
                applied: Some(applied),
            }),
            (op, reply) => panic!("reply {reply:?} does not answer {op:?}"),
        }
    }
}

fn show_value(v: Option<u64>) -> String {
    match v {
        Some(v) => v.to_string(),
        None => "absent".to_string(),
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Op::Get => f.write_str("get"),
            Op::Put(v) => write!(f, "put({v})"),
            Op::Cas { from, to } => write!(f, "cas({} -> {to})", show_value(from)),
        }
    }
}

impl Event {
    /// The invoke event of `op`.
    pub fn invoke(process: u64, key: &str, op: Op, time_ns: u64) -> Event {
        Event {
            process,
            kind: EventType::Invoke,
            f: op.function(),
            key: key.to_string(),
            value: op.argument_value(),
            time_ns,
        }
    }

    /// The `ok` event of `op`, with its reply.
    ///
    /// # Panics
    /// If `reply` is for another function.
    pub fn ok(process: u64, key: &str, op: Op, reply: Reply, time_ns: u64) -> Event {
        Event {
            kind: EventType::Ok,
            value: op.ok_value(reply),
            ..Event::invoke(process, key, op, time_ns)
        }
    }

    /// The `fail` event of `op`.
    pub fn fail(process: u64, key: &str, op: Op, time_ns: u64) -> Event {
        Event {
            kind: EventType::Fail,
            ..Event::invoke(process, key, op, time_ns)
        }
    }

    /// The `info` event of `op`.
    pub fn info(process: u64, key: &str, op: Op, time_ns: u64) -> Event {
        Event {
            kind: EventType::Info,
            ..Event::invoke(process, key, op, time_ns)
        }
    }

    /// The operation this event belongs to, and its reply if the event is `ok`; an error if
    /// `value` has the wrong shape for `f` and `type` (module doc).
    pub fn decode(&self) -> Result<(Op, Option<Reply>), String> {
        let shape_error = || {
            let expected = match (self.f, self.kind) {
                (Function::Get, EventType::Ok) => "a number or null",
                (Function::Get, _) => "null",
                (Function::Put, _) => "a number",
                (Function::Cas, EventType::Ok) => r#"{"from":..,"to":..,"applied":true|false}"#,
                (Function::Cas, _) => r#"{"from":..,"to":..} without "applied""#,
            };
            let found = serde_json::to_string(&self.value).unwrap_or_default();
            format!(
                "a {} {} event's value must be {expected}, found {found}",
                self.f, self.kind
            )
        };
        let ok = self.kind == EventType::Ok;
        match (self.f, self.value) {
            (Function::Get, EventValue::Register(v)) if ok => Ok((Op::Get, Some(Reply::Get(v)))),
            (Function::Get, EventValue::Register(None)) => Ok((Op::Get, None)),
            (Function::Put, EventValue::Register(Some(v))) => {
                Ok((Op::Put(v), ok.then_some(Reply::Put)))
            }
            (Function::Cas, EventValue::Cas(c)) => {
                let op = Op::Cas {
                    from: c.from,
                    to: c.to,
                };
                match (ok, c.applied) {
                    (true, Some(applied)) => Ok((op, Some(Reply::Cas { applied }))),
                    (false, None) => Ok((op, None)),
                    _ => Err(shape_error()),
                }
            }
            _ => Err(shape_error()),
        }
    }
}

/// What became of an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// It took effect between its call and `return_ns`, with this reply.
    Ok {
        /// The result.
        reply: Reply,
        /// When its `ok` event was recorded.
        return_ns: u64,
    },
    /// It ended `info`, or never ended: it may have taken effect at any time after its call,
    /// or never.
    Unknown,
}

/// An invoke paired with its end. Operations that ended `fail` are not operations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    /// The process that ran it.
    pub process: u64,
    /// The register.
    pub key: String,
    /// Function and arguments.
    pub op: Op,
    /// When it was invoked.
    pub call_ns: u64,
    /// Its result, if known.
    pub completion: Completion,
}

/// `1.234567890 s`: nanoseconds since the start, readable, nothing lost.
pub fn show_time(ns: u64) -> String {
    format!("{}.{:09} s", ns / 1_000_000_000, ns % 1_000_000_000)
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "process {} {}", self.process, self.op)?;
        match self.completion {
            Completion::Ok { reply, return_ns } => {
                match reply {
                    Reply::Get(v) => write!(f, " -> {}", show_value(v))?,
                    Reply::Put => f.write_str(" -> ok")?,
                    Reply::Cas { applied: true } => f.write_str(" -> applied")?,
                    Reply::Cas { applied: false } => f.write_str(" -> not applied")?,
                }
                write!(
                    f,
                    "  [{} .. {}]",
                    show_time(self.call_ns),
                    show_time(return_ns)
                )
            }
            Completion::Unknown => write!(f, " -> unknown  [{} .. ]", show_time(self.call_ns)),
        }
    }
}

/// Pairs each invoke with its process's next event, in slice order: the operations, in invoke
/// order. `fail` operations are left out; `info` ones and invokes without an end are
/// [`Completion::Unknown`]. An error names the first event that breaks a rule (module doc).
pub fn operations(events: &[Event]) -> Result<Vec<Operation>, String> {
    struct InFlight {
        event_index: usize,
        op: Op,
    }
    let mut in_flight: HashMap<u64, InFlight> = HashMap::new();
    // process -> index of the event that ended its operation `info`.
    let mut retired: HashMap<u64, usize> = HashMap::new();
    // (index of the invoke event, operation)
    let mut paired: Vec<(usize, Operation)> = Vec::with_capacity(events.len() / 2 + 1);

    for (i, e) in events.iter().enumerate() {
        let at = |text: String| {
            format!(
                "event {} (process {}, {} {} of key {:?} at {}): {text}",
                i + 1,
                e.process,
                e.f,
                e.kind,
                e.key,
                show_time(e.time_ns)
            )
        };
        let (op, reply) = e.decode().map_err(at)?;
        if e.kind == EventType::Invoke {
            if let Some(&info) = retired.get(&e.process) {
                return Err(at(format!(
                    "the process invokes again after its operation ended info at event {}; \
                     a client must continue under a new process id",
                    info + 1
                )));
            }
            if let Some(pending) = in_flight.get(&e.process) {
                return Err(at(format!(
                    "second invoke while the process's invoke at event {} has not ended",
                    pending.event_index + 1
                )));
            }
            in_flight.insert(e.process, InFlight { event_index: i, op });
            continue;
        }
        let Some(pending) = in_flight.remove(&e.process) else {
            return Err(at("an end without an invoke in flight".to_string()));
        };
        let invoke = &events[pending.event_index];
        if invoke.f != e.f || invoke.key != e.key || pending.op != op {
            return Err(at(format!(
                "does not match its invoke at event {}: {} of key {:?}",
                pending.event_index + 1,
                pending.op,
                invoke.key
            )));
        }
        if e.time_ns < invoke.time_ns {
            return Err(at(format!(
                "ends before its invoke at event {} ({})",
                pending.event_index + 1,
                show_time(invoke.time_ns)
            )));
        }
        let completion = match (e.kind, reply) {
            (EventType::Ok, Some(reply)) => Completion::Ok {
                reply,
                return_ns: e.time_ns,
            },
            (EventType::Fail, _) => continue,
            (EventType::Info, _) => {
                retired.insert(e.process, i);
                Completion::Unknown
            }
            // decode() gives a reply for exactly the ok events.
            _ => return Err(at("an ok event without a result".to_string())),
        };
        paired.push((
            pending.event_index,
            Operation {
                process: e.process,
                key: e.key.clone(),
                op,
                call_ns: invoke.time_ns,
                completion,
            },
        ));
    }
    for (process, pending) in in_flight {
        let invoke = &events[pending.event_index];
        paired.push((
            pending.event_index,
            Operation {
                process,
                key: invoke.key.clone(),
                op: pending.op,
                call_ns: invoke.time_ns,
                completion: Completion::Unknown,
            },
        ));
    }
    paired.sort_unstable_by_key(|(event_index, _)| *event_index);
    Ok(paired.into_iter().map(|(_, op)| op).collect())
}

/// Writes `events` to `path` as JSON Lines, replacing the file.
pub fn write_jsonl(path: &Path, events: &[Event]) -> Result<(), String> {
    let error = |e: &dyn fmt::Display| format!("writing history {}: {e}", path.display());
    let file = File::create(path).map_err(|e| error(&e))?;
    let mut out = BufWriter::new(file);
    for event in events {
        serde_json::to_writer(&mut out, event).map_err(|e| error(&e))?;
        out.write_all(b"\n").map_err(|e| error(&e))?;
    }
    out.flush().map_err(|e| error(&e))
}

/// Reads a JSON Lines history written by [`write_jsonl`] (or by hand). An error names the
/// file and the line.
pub fn read_jsonl(path: &Path) -> Result<Vec<Event>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("reading history {}: {e}", path.display()))?;
    parse_jsonl(&text).map_err(|e| format!("history {}: {e}", path.display()))
}

/// Parses JSON Lines text into events, checking each value's shape ([`Event::decode`]).
/// Blank lines are skipped; an error names the line (1-based).
pub fn parse_jsonl(text: &str) -> Result<Vec<Event>, String> {
    let mut events = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let event: Event = serde_json::from_str(line).map_err(|e| {
            // serde_json counts lines within `line`: keep its message, give the file's line.
            let full = e.to_string();
            let suffix = format!(" at line {} column {}", e.line(), e.column());
            let message = full.strip_suffix(&suffix).unwrap_or(&full);
            format!("line {}, column {}: {message}", i + 1, e.column())
        })?;
        event.decode().map_err(|e| format!("line {}: {e}", i + 1))?;
        events.push(event);
    }
    Ok(events)
}

/// A started operation, to be ended with [`History::ok`], [`History::fail`] or
/// [`History::info`].
#[derive(Debug)]
#[must_use = "an invocation must be ended with ok, fail or info"]
pub struct Invocation {
    process: u64,
    key: String,
    op: Op,
}

impl Invocation {
    /// The process that invoked it.
    pub fn process(&self) -> u64 {
        self.process
    }

    /// The register.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Function and arguments.
    pub fn op(&self) -> Op {
        self.op
    }
}

/// A history being recorded. Clones share it: hand one to each task or thread.
///
/// Record an invoke just before sending the request and its end just after the reply (or the
/// error) arrives, so that the operation's real span lies inside the recorded one.
#[derive(Debug, Clone)]
pub struct History {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    start: Instant,
    events: Mutex<Vec<Event>>,
}

impl Default for History {
    fn default() -> Self {
        History::new()
    }
}

impl History {
    /// An empty history; `time_ns` counts from now.
    pub fn new() -> History {
        History {
            shared: Arc::new(Shared {
                start: Instant::now(),
                events: Mutex::new(Vec::new()),
            }),
        }
    }

    fn record(&self, event: impl FnOnce(u64) -> Event) {
        // A panic in another recorder leaves the list whole (each push is one step).
        let mut events = self
            .shared
            .events
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Read the clock under the lock so that the file's order is the time order.
        let time_ns = u64::try_from(self.shared.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        events.push(event(time_ns));
    }

    /// Records that `process` starts `op` on `key`.
    pub fn invoke(&self, process: u64, key: &str, op: Op) -> Invocation {
        self.record(|t| Event::invoke(process, key, op, t));
        Invocation {
            process,
            key: key.to_string(),
            op,
        }
    }

    /// Records that the operation took effect, with `reply`.
    ///
    /// # Panics
    /// If `reply` is for another function than the invocation's.
    pub fn ok(&self, invocation: Invocation, reply: Reply) {
        let Invocation { process, key, op } = invocation;
        self.record(|t| Event::ok(process, &key, op, reply, t));
    }

    /// Records that the operation certainly did not take effect.
    pub fn fail(&self, invocation: Invocation) {
        let Invocation { process, key, op } = invocation;
        self.record(|t| Event::fail(process, &key, op, t));
    }

    /// Records that the operation's outcome is unknown. The process must not invoke again:
    /// continue under a new process id.
    pub fn info(&self, invocation: Invocation) {
        let Invocation { process, key, op } = invocation;
        self.record(|t| Event::info(process, &key, op, t));
    }

    /// A copy of the events so far.
    pub fn events(&self) -> Vec<Event> {
        self.shared
            .events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Writes the events so far to `path` ([`write_jsonl`]).
    pub fn write_jsonl(&self, path: &Path) -> Result<(), String> {
        write_jsonl(path, &self.events())
    }
}

#[cfg(test)]
mod tests;
