//! How `corekv-cli` prints results: human-readable lines (the default), or one JSON object
//! per result (`--output json`, as `etcdctl -w json`).
//!
//! JSON objects, one per line (keys and values base64, or hex with `--hex`):
//!
//! ```text
//! put, delete   {"ok":true,"sequence":N}
//! get           {"found":true,"value":"...","sequence":N} | {"found":false}
//! cas           {"succeeded":true,"sequence":N}
//!               {"succeeded":false,"current":"..." | null,"sequence":N}   (N: the current
//!               value's version, 0 when absent)
//! scan          {"entries":[{"key":"...","value":"..."}...],"more":B[,"continuation":"..."]}
//! stats         {"shards":[{"id":N,"counters":{"name":N,...}}...]}
//! topology      {"shard_count":N,"hash":"...","shards":[{"id":N,"host":"...","port":N}...]}
//! info          {"version":"...","protocol_version":N,...,"limits":{...}}
//! any failure   {"error":{"outcome":"refused"|"not_sent"|"unknown","code":"...",
//!                "message":"...","limit":N,"actual":N}}
//! ```

use std::io::Write;

use corekv_proto::{CasResult, ServerInfo, ShardStats, Topology, Versioned, VersionedColumns};
use serde_json::{Value, json};

use super::escape;
use super::{EXIT_OUTPUT, Failure};

/// The output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Lines of escaped text (hex with `--hex`).
    Human,
    /// One JSON object per result.
    Json,
}

/// Encodes keys and values for the terminal or for JSON, and writes results.
pub struct Printer<'w> {
    /// Hex instead of escaped text (human) or base64 (JSON).
    pub hex: bool,
    /// The format.
    pub format: Format,
    /// Where results go.
    pub out: &'w mut dyn Write,
}

impl Printer<'_> {
    /// `bytes` as human output writes them.
    pub fn text(&self, bytes: &[u8]) -> String {
        if self.hex {
            escape::to_hex(bytes)
        } else {
            escape::escape(bytes)
        }
    }

    /// `bytes` as a JSON string.
    fn json_bytes(&self, bytes: &[u8]) -> Value {
        Value::String(if self.hex {
            escape::to_hex(bytes)
        } else {
            base64(bytes)
        })
    }

    /// Writes one line.
    pub fn line(&mut self, line: std::fmt::Arguments<'_>) -> Result<(), Failure> {
        self.out
            .write_fmt(line)
            .and_then(|()| self.out.write_all(b"\n"))
            .and_then(|()| self.out.flush())
            .map_err(output_failure)
    }

    /// Writes raw bytes (`get --raw`).
    pub fn raw(&mut self, bytes: &[u8]) -> Result<(), Failure> {
        self.out
            .write_all(bytes)
            .and_then(|()| self.out.flush())
            .map_err(output_failure)
    }

    fn json(&mut self, value: &Value) -> Result<(), Failure> {
        self.line(format_args!("{value}"))
    }

    /// A write's result.
    pub fn written(&mut self, sequence: u64) -> Result<(), Failure> {
        match self.format {
            Format::Human => self.line(format_args!("OK")),
            Format::Json => self.json(&json!({"ok": true, "sequence": sequence})),
        }
    }

    /// A get's result; `with_sequence` prints the version in human output too.
    pub fn got(&mut self, found: Option<&Versioned>, with_sequence: bool) -> Result<(), Failure> {
        match (self.format, found) {
            (Format::Json, Some(v)) => {
                let value = self.json_bytes(&v.value);
                self.json(&json!({"found": true, "value": value, "sequence": v.sequence}))
            }
            (Format::Json, None) => self.json(&json!({"found": false})),
            (Format::Human, Some(v)) if with_sequence => {
                let text = self.text(&v.value);
                self.line(format_args!("{}\t{text}", v.sequence))
            }
            (Format::Human, Some(v)) => {
                let text = self.text(&v.value);
                self.line(format_args!("{text}"))
            }
            (Format::Human, None) => {
                eprintln!("(not found)");
                Ok(())
            }
        }
    }

    /// A getColumns result.
    pub fn columns(&mut self, found: Option<&VersionedColumns>) -> Result<(), Failure> {
        match (self.format, found) {
            (Format::Json, Some(c)) => {
                let columns: Vec<Value> = c
                    .columns
                    .iter()
                    .map(|(n, v)| json!({"name": self.json_bytes(n), "value": self.json_bytes(v)}))
                    .collect();
                self.json(&json!({"found": true, "columns": columns, "sequence": c.sequence}))
            }
            (Format::Json, None) => self.json(&json!({"found": false})),
            (Format::Human, Some(c)) => {
                for (n, v) in &c.columns {
                    let (n, v) = (self.text(n), self.text(v));
                    self.line(format_args!("{n}\t{v}"))?;
                }
                Ok(())
            }
            (Format::Human, None) => {
                eprintln!("(not found)");
                Ok(())
            }
        }
    }

    /// An increment's result: the counter's new value.
    pub fn incremented(&mut self, value: i64, sequence: u64) -> Result<(), Failure> {
        match self.format {
            Format::Human => self.line(format_args!("{value}")),
            Format::Json => self.json(&json!({"value": value, "sequence": sequence})),
        }
    }

    /// A shard's leader after `cluster transfer-leader`.
    pub fn leader(&mut self, shard: u32, node: u64) -> Result<(), Failure> {
        match self.format {
            Format::Human => self.line(format_args!("{shard}\t{node}")),
            Format::Json => self.json(&json!({"shard": shard, "leader": node})),
        }
    }

    /// A cas result.
    pub fn cas(&mut self, r: &CasResult) -> Result<(), Failure> {
        match self.format {
            Format::Json if r.succeeded => {
                self.json(&json!({"succeeded": true, "sequence": r.sequence}))
            }
            Format::Json => {
                let current = r
                    .current
                    .as_deref()
                    .map_or(Value::Null, |v| self.json_bytes(v));
                self.json(&json!({
                    "succeeded": false, "current": current, "sequence": r.sequence
                }))
            }
            Format::Human if r.succeeded => self.line(format_args!("OK")),
            Format::Human => match &r.current {
                Some(v) => {
                    let text = self.text(v);
                    self.line(format_args!("{text}"))
                }
                // On stderr, as `get`'s "(not found)": a stored value "(absent)" prints on
                // stdout, so the two cannot be confused.
                None => {
                    eprintln!("(absent)");
                    Ok(())
                }
            },
        }
    }

    /// A scan: entries, whether the range holds more, and where to continue.
    pub fn scanned(
        &mut self,
        entries: &[(Vec<u8>, Vec<u8>)],
        more: bool,
        continuation: &[u8],
    ) -> Result<(), Failure> {
        match self.format {
            Format::Human => {
                for (k, v) in entries {
                    let (k, v) = (self.text(k), self.text(v));
                    self.line(format_args!("{k}\t{v}"))?;
                }
                Ok(())
            }
            Format::Json => {
                let entries: Vec<Value> = entries
                    .iter()
                    .map(|(k, v)| json!({"key": self.json_bytes(k), "value": self.json_bytes(v)}))
                    .collect();
                let mut obj = json!({"entries": entries, "more": more});
                if more {
                    obj["continuation"] = self.json_bytes(continuation);
                }
                self.json(&obj)
            }
        }
    }

    /// Every shard's counters.
    pub fn stats(&mut self, shards: &[ShardStats]) -> Result<(), Failure> {
        match self.format {
            Format::Human => {
                for shard in shards {
                    for (name, value) in &shard.counters {
                        self.line(format_args!("{}\t{name}\t{value}", shard.id))?;
                    }
                }
                Ok(())
            }
            Format::Json => {
                let shards: Vec<Value> = shards
                    .iter()
                    .map(|s| {
                        let counters: serde_json::Map<String, Value> = s
                            .counters
                            .iter()
                            .map(|(n, v)| (n.clone(), json!(v)))
                            .collect();
                        json!({"id": s.id, "counters": counters})
                    })
                    .collect();
                self.json(&json!({ "shards": shards }))
            }
        }
    }

    /// The topology.
    pub fn topology(&mut self, t: &Topology) -> Result<(), Failure> {
        match self.format {
            Format::Human => {
                self.line(format_args!("shards {} hash {}", t.shard_count, t.hash))?;
                for s in &t.shards {
                    if s.replicas.is_empty() {
                        self.line(format_args!("{}\t{}:{}", s.id, s.host, s.port))?;
                    } else {
                        let replicas: Vec<String> = s
                            .replicas
                            .iter()
                            .map(|r| format!("{}={}:{}", r.node, r.host, r.port))
                            .collect();
                        self.line(format_args!(
                            "{}\t{}:{}\tleader {}\t{}",
                            s.id,
                            s.host,
                            s.port,
                            s.leader,
                            replicas.join(" ")
                        ))?;
                    }
                }
                Ok(())
            }
            Format::Json => {
                let shards: Vec<Value> = t
                    .shards
                    .iter()
                    .map(|s| {
                        let replicas: Vec<Value> = s
                            .replicas
                            .iter()
                            .map(|r| json!({"node": r.node, "host": r.host, "port": r.port}))
                            .collect();
                        json!({"id": s.id, "host": s.host, "port": s.port,
                            "leader": s.leader, "replicas": replicas})
                    })
                    .collect();
                self.json(&json!({
                    "shard_count": t.shard_count, "hash": t.hash, "shards": shards
                }))
            }
        }
    }

    /// `cluster status`: one row per replica of each shard.
    pub fn cluster_status(&mut self, rows: &[ReplicaRow]) -> Result<(), Failure> {
        match self.format {
            Format::Human => {
                self.line(format_args!(
                    "shard\tnode\taddress\trole\tterm\tcommit\tapplied\tlag"
                ))?;
                for r in rows {
                    match &r.state {
                        Some(st) => self.line(format_args!(
                            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                            r.shard,
                            r.node,
                            r.address,
                            st.role,
                            st.term,
                            st.commit,
                            st.applied,
                            st.lag
                        ))?,
                        None => self.line(format_args!(
                            "{}\t{}\t{}\tunreachable\t-\t-\t-\t-",
                            r.shard, r.node, r.address
                        ))?,
                    }
                }
                Ok(())
            }
            Format::Json => {
                let rows: Vec<Value> = rows
                    .iter()
                    .map(|r| match &r.state {
                        Some(st) => json!({"shard": r.shard, "node": r.node,
                            "address": r.address, "role": st.role, "term": st.term,
                            "commit": st.commit, "applied": st.applied, "lag": st.lag}),
                        None => json!({"shard": r.shard, "node": r.node,
                            "address": r.address, "role": "unreachable"}),
                    })
                    .collect();
                self.json(&json!({ "replicas": rows }))
            }
        }
    }

    /// What the server is and its limits.
    pub fn info(&mut self, i: &ServerInfo) -> Result<(), Failure> {
        let l = &i.limits;
        let limits = json!({
            "key_bytes_max": l.key_bytes_max,
            "value_bytes_max": l.value_bytes_max,
            "batch_ops_max": l.batch_ops_max,
            "batch_bytes_max": l.batch_bytes_max,
            "reply_bytes_max": l.reply_bytes_max,
            "scan_limit_default": l.scan_limit_default,
            "scan_limit_max": l.scan_limit_max,
            "scan_page_bytes_max": l.scan_page_bytes_max,
            "ttl_ms_max": l.ttl_ms_max,
            "frame_bytes_max": l.frame_bytes_max,
            "connection_inflight_ops_max": l.connection_inflight_ops_max,
        });
        match self.format {
            Format::Json => self.json(&json!({
                "version": i.version,
                "protocol_version": i.protocol_version,
                "node_id": i.node_id,
                "durability": i.durability,
                "shard_count": i.shard_count,
                "limits": limits,
            })),
            Format::Human => {
                for (name, value) in [
                    ("version", json!(i.version)),
                    ("protocol_version", json!(i.protocol_version)),
                    ("node_id", json!(i.node_id)),
                    ("durability", json!(i.durability)),
                    ("shard_count", json!(i.shard_count)),
                ]
                .into_iter()
                .chain(
                    limits
                        .as_object()
                        .into_iter()
                        .flatten()
                        .map(|(k, v)| (k.as_str(), v.clone())),
                ) {
                    let value = match value {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    self.line(format_args!("{name}\t{value}"))?;
                }
                Ok(())
            }
        }
    }

    /// Reports a failure: its message on standard error after `prefix`, and in JSON mode its
    /// object on standard output. Returns its exit status.
    pub fn report(&mut self, f: &Failure, prefix: &str) -> u8 {
        // A failure to print the failure changes nothing: the status says what happened.
        let _ = self.failure(f);
        eprintln!("{prefix}{}", f.message);
        f.status
    }

    fn failure(&mut self, f: &Failure) -> Result<(), Failure> {
        if self.format != Format::Json {
            return Ok(());
        }
        let mut error = json!({"outcome": f.outcome(), "message": f.message});
        if let Some(e) = &f.server {
            error["code"] = json!(e.code.name());
            if e.limit > 0 || e.actual > 0 {
                error["limit"] = json!(e.limit);
                error["actual"] = json!(e.actual);
            }
        }
        self.json(&json!({ "error": error }))
    }
}

fn output_failure(e: std::io::Error) -> Failure {
    Failure::new(
        EXIT_OUTPUT,
        format!("cannot write the result to stdout: {e}"),
    )
}

/// Standard base64 with padding (RFC 4648).
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
        assert_eq!(base64(&[0xff, 0xfe, 0x00]), "//4A");
    }
}

/// One replica in `cluster status`.
#[derive(Debug, Clone)]
pub struct ReplicaRow {
    /// The shard.
    pub shard: u32,
    /// The node holding the replica.
    pub node: u64,
    /// Its client address (`?` when unknown).
    pub address: String,
    /// What it said about itself; None when it could not be asked.
    pub state: Option<ReplicaState>,
}

/// A replica's Raft state as its `stats` report it.
#[derive(Debug, Clone)]
pub struct ReplicaState {
    /// `leader`, `follower`, `candidate`, `pre-candidate`.
    pub role: &'static str,
    /// Its term.
    pub term: u64,
    /// Its commit index.
    pub commit: u64,
    /// The last entry applied to its engine.
    pub applied: u64,
    /// Entries behind the highest commit index among the shard's replicas.
    pub lag: u64,
}
