//! Limits on what one request may ask, checked where a request enters the server (before any
//! forwarding) so that an oversized operation costs nothing beyond its rejection.

use corekv_proto::{ErrorCode, Op, OpError, ServerLimits, entity};
use corekv_storage::batch::TTL_MS_MAX;

/// Every limit the request path enforces. Defaults are in [`Limits::default`] and documented in
/// the schema file.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest key.
    pub key_size_bytes_max: usize,
    /// Largest value.
    pub value_size_bytes_max: usize,
    /// Most key and value bytes in one `batch` call.
    pub batch_size_bytes_max: usize,
    /// Most operations in one `batch` call.
    pub batch_ops_max: usize,
    /// Entries a scan returns when it asks for 0.
    pub scan_limit_default: u32,
    /// Most entries one scan page returns.
    pub scan_limit_max: u32,
    /// A scan page stops growing past this many key and value bytes (it has at least one entry).
    pub scan_reply_bytes_max: usize,
    /// Most bytes of results in a `batch` reply ([`corekv_proto::codec::result_wire_bytes`]):
    /// a result carrying data that would take the reply past it gets `batchTooLarge` instead.
    /// Below the 64 MiB a client reads with default settings, with room for the framing.
    pub reply_bytes_max: usize,
    /// Largest incoming message (frame); a larger one is a protocol failure.
    pub frame_bytes_max: usize,
    /// A connection with this many operations in flight is not read until some complete.
    pub connection_inflight_ops_max: usize,
    /// Most open connections per shard; more are closed as soon as accepted.
    pub shard_connections_max: usize,
    /// Bytes of large frames in progress a shard admits at once ([`crate::net::frames`]).
    pub frame_budget_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        let storage = corekv_storage::Options::default();
        Limits {
            key_size_bytes_max: storage.key_size_bytes_max,
            value_size_bytes_max: storage.value_size_bytes_max,
            batch_size_bytes_max: storage.batch_size_bytes_max,
            batch_ops_max: 10_000,
            scan_limit_default: 1000,
            scan_limit_max: 10_000,
            scan_reply_bytes_max: 4 << 20,
            reply_bytes_max: corekv_proto::codec::REPLY_RESULT_BYTES_MAX,
            frame_bytes_max: 80 << 20,
            connection_inflight_ops_max: 4096,
            shard_connections_max: 10_000,
            frame_budget_bytes: crate::config::DEFAULT_FRAME_BUDGET_BYTES,
        }
    }
}

/// Column names must be non-empty and each given once.
fn check_names<'a>(names: impl Iterator<Item = &'a [u8]>) -> Result<(), OpError> {
    // std's keyed SipHash: names come from clients.
    let mut seen = std::collections::HashSet::new();
    for name in names {
        if !entity::valid_name(name) {
            return Err(OpError::new(
                ErrorCode::InvalidArgument,
                "column names must be at least 1 byte",
            ));
        }
        if !seen.insert(name) {
            return Err(OpError::new(
                ErrorCode::InvalidArgument,
                format!(
                    "column {:?} is named twice in one operation",
                    String::from_utf8_lossy(name)
                ),
            ));
        }
    }
    Ok(())
}

/// A TTL the store can keep: 0 (none) or 1 ms ..= 100 years.
fn check_ttl(ttl_ms: u64) -> Result<(), OpError> {
    if ttl_ms > TTL_MS_MAX {
        return Err(OpError::new(
            ErrorCode::InvalidArgument,
            format!("ttlMs {ttl_ms} is more than 100 years ({TTL_MS_MAX}); use 0 for no expiry"),
        ));
    }
    Ok(())
}

impl Limits {
    /// The limits as `serverInfo` reports them.
    pub fn describe(&self) -> ServerLimits {
        ServerLimits {
            key_bytes_max: self.key_size_bytes_max as u64,
            value_bytes_max: self.value_size_bytes_max as u64,
            batch_ops_max: self.batch_ops_max as u64,
            batch_bytes_max: self.batch_size_bytes_max as u64,
            reply_bytes_max: self.reply_bytes_max as u64,
            scan_limit_default: self.scan_limit_default,
            scan_limit_max: self.scan_limit_max,
            scan_page_bytes_max: self.scan_reply_bytes_max as u64,
            ttl_ms_max: TTL_MS_MAX,
            frame_bytes_max: self.frame_bytes_max as u64,
            connection_inflight_ops_max: self.connection_inflight_ops_max as u64,
        }
    }

    /// Checks one operation; the error is the typed result the client gets.
    pub fn check_op(&self, op: &Op) -> Result<(), OpError> {
        match op {
            Op::Get { key } => self.check_key(key),
            Op::Delete { key } => self.check_write(key, None, 0),
            Op::Put { key, value, ttl_ms } => self.check_write(key, Some(value), *ttl_ms),
            Op::Cas(cas) => {
                self.check_key(&cas.key)?;
                check_ttl(cas.ttl_ms)?;
                if cas.ttl_ms > 0 && cas.new.is_none() {
                    return Err(OpError::new(
                        ErrorCode::InvalidArgument,
                        "cas: a TTL needs a new value (a delete cannot expire)",
                    ));
                }
                if let Some(v) = cas.expected.value() {
                    self.check_value(v)?;
                }
                if let Some(v) = &cas.new {
                    self.check_value(v)?;
                }
                Ok(())
            }
            Op::PutEntity(op) => {
                self.check_key(&op.key)?;
                check_ttl(op.ttl_ms)?;
                if op.columns.is_empty() {
                    return Err(OpError::new(
                        ErrorCode::InvalidArgument,
                        "putEntity needs at least one column (delete the key to remove it)",
                    ));
                }
                check_names(op.columns.iter().map(|(n, _)| n.as_slice()))?;
                self.check_entity_bytes(&op.columns)
            }
            Op::UpdateColumns(op) => {
                self.check_key(&op.key)?;
                check_ttl(op.ttl_ms)?;
                let set = op.set.iter().map(|(n, _)| n.as_slice());
                check_names(set.chain(op.remove.iter().map(Vec::as_slice)))?;
                self.check_entity_bytes(&op.set)
            }
            Op::GetColumns(op) => self.check_key(&op.key),
            Op::Increment(op) => {
                self.check_key(&op.key)?;
                check_ttl(op.ttl_ms)
            }
            Op::Scan(scan) => {
                // Bounds are not keys, but a continuation is a key plus one byte.
                let bound_max = self.key_size_bytes_max + 1;
                for (name, bound) in [("start", &scan.start), ("end", &scan.end)] {
                    if bound.len() > bound_max {
                        return Err(OpError::new(
                            ErrorCode::InvalidArgument,
                            format!(
                                "scan {name} is {} bytes; bounds longer than {bound_max} bytes \
                                 cannot match any key",
                                bound.len()
                            ),
                        ));
                    }
                }
                if !scan.end.is_empty() && scan.start > scan.end {
                    return Err(OpError::new(
                        ErrorCode::InvalidArgument,
                        "scan start is after its end; swap them, or set `reverse` to read \
                         backwards",
                    ));
                }
                Ok(())
            }
        }
    }

    /// Checks a put (`value` given) or a delete as [`Limits::check_op`] does, for callers that
    /// read them straight from a request without making an [`Op`].
    pub fn check_write(
        &self,
        key: &[u8],
        value: Option<&[u8]>,
        ttl_ms: u64,
    ) -> Result<(), OpError> {
        self.check_key(key)?;
        if let Some(value) = value {
            self.check_value(value)?;
        }
        check_ttl(ttl_ms)
    }

    fn check_key(&self, key: &[u8]) -> Result<(), OpError> {
        if key.is_empty() {
            return Err(OpError::new(
                ErrorCode::EmptyKey,
                "keys must be at least 1 byte",
            ));
        }
        if key.len() > self.key_size_bytes_max {
            return Err(OpError::too_large(
                ErrorCode::KeyTooLarge,
                "key",
                key.len() as u64,
                self.key_size_bytes_max as u64,
            ));
        }
        Ok(())
    }

    fn check_value(&self, value: &[u8]) -> Result<(), OpError> {
        self.check_value_bytes("value", value.len())
    }

    /// `what`, `bytes` long, must fit in a value.
    fn check_value_bytes(&self, what: &str, bytes: usize) -> Result<(), OpError> {
        if bytes > self.value_size_bytes_max {
            return Err(OpError::too_large(
                ErrorCode::ValueTooLarge,
                what,
                bytes as u64,
                self.value_size_bytes_max as u64,
            ));
        }
        Ok(())
    }

    /// An entity of `columns` (or an update setting them) must fit in a value.
    fn check_entity_bytes(&self, columns: &[(Vec<u8>, Vec<u8>)]) -> Result<(), OpError> {
        let bytes = entity::encoded_len(columns.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
        self.check_value_bytes("the entity's encoding", bytes)
    }

    /// The number of entries a scan page may hold for a requested `limit`.
    pub fn scan_limit(&self, limit: u32) -> u32 {
        match limit {
            0 => self.scan_limit_default,
            n => n.min(self.scan_limit_max),
        }
    }

    /// Checks a whole `batch` call: operation count and payload bytes.
    pub fn check_batch(&self, ops: usize, payload_bytes: usize) -> Result<(), OpError> {
        if ops > self.batch_ops_max {
            return Err(OpError {
                code: ErrorCode::BatchTooLarge,
                message: format!(
                    "batch of {ops} operations, more than the server's limit of {}; split it",
                    self.batch_ops_max
                ),
                limit: self.batch_ops_max as u64,
                actual: ops as u64,
                leader: None,
            });
        }
        if payload_bytes > self.batch_size_bytes_max {
            return Err(OpError::too_large(
                ErrorCode::BatchTooLarge,
                "batch payload",
                payload_bytes as u64,
                self.batch_size_bytes_max as u64,
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corekv_proto::{CasOp, ScanOp};

    fn small() -> Limits {
        Limits {
            key_size_bytes_max: 4,
            value_size_bytes_max: 8,
            ..Limits::default()
        }
    }

    #[test]
    fn keys_and_values_are_checked_with_their_sizes() {
        let l = small();
        assert!(
            l.check_op(&Op::Get {
                key: b"abcd".to_vec()
            })
            .is_ok()
        );
        let e = l.check_op(&Op::Get { key: vec![] }).unwrap_err();
        assert_eq!(e.code, ErrorCode::EmptyKey);
        let e = l
            .check_op(&Op::Delete {
                key: b"abcde".to_vec(),
            })
            .unwrap_err();
        assert_eq!((e.code, e.actual, e.limit), (ErrorCode::KeyTooLarge, 5, 4));
        let e = l
            .check_op(&Op::Put {
                key: b"k".to_vec(),
                value: vec![0; 9],
                ttl_ms: 0,
            })
            .unwrap_err();
        assert_eq!(
            (e.code, e.actual, e.limit),
            (ErrorCode::ValueTooLarge, 9, 8)
        );
        let e = l
            .check_op(&Op::Cas(CasOp {
                key: b"k".to_vec(),
                expected: corekv_proto::Expected::Absent,
                new: Some(vec![0; 9]),
                ttl_ms: 0,
            }))
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::ValueTooLarge);
        let put_ttl = |ttl_ms| {
            l.check_op(&Op::Put {
                key: b"k".to_vec(),
                value: vec![],
                ttl_ms,
            })
        };
        assert!(put_ttl(TTL_MS_MAX).is_ok());
        assert_eq!(
            put_ttl(TTL_MS_MAX + 1).unwrap_err().code,
            ErrorCode::InvalidArgument
        );
        let e = l
            .check_op(&Op::Cas(CasOp {
                key: b"k".to_vec(),
                expected: corekv_proto::Expected::Absent,
                new: None,
                ttl_ms: 5,
            }))
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidArgument);
    }

    #[test]
    fn scans_need_ordered_short_bounds() {
        let l = small();
        let scan = |start: &[u8], end: &[u8]| {
            l.check_op(&Op::Scan(ScanOp {
                start: start.to_vec(),
                end: end.to_vec(),
                limit: 0,
                reverse: false,
            }))
        };
        assert!(scan(b"", b"").is_ok());
        assert!(scan(b"b", b"").is_ok());
        assert!(scan(b"a", b"a").is_ok());
        assert!(scan(b"abcd\0", b"").is_ok());
        assert_eq!(
            scan(b"b", b"a").unwrap_err().code,
            ErrorCode::InvalidArgument
        );
        assert_eq!(
            scan(b"abcdef", b"").unwrap_err().code,
            ErrorCode::InvalidArgument
        );
        assert_eq!(l.scan_limit(0), 1000);
        assert_eq!(l.scan_limit(5), 5);
        assert_eq!(l.scan_limit(u32::MAX), 10_000);
    }

    #[test]
    fn batches_are_bounded_in_ops_and_bytes() {
        let l = Limits::default();
        assert!(l.check_batch(10_000, 64 << 20).is_ok());
        assert_eq!(
            l.check_batch(10_001, 0).unwrap_err().code,
            ErrorCode::BatchTooLarge
        );
        assert_eq!(
            l.check_batch(1, (64 << 20) + 1).unwrap_err().code,
            ErrorCode::BatchTooLarge
        );
    }
}
