//! Engine options, with limits that every write is checked against at the boundary.

use crate::error::{Error, Limit, Result};

/// What an acknowledged write promises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// A write is acknowledged only after the WAL block holding it has been written and
    /// `fdatasync`ed: it survives a process crash and a power loss. Concurrent writers share
    /// one `fdatasync` (group commit).
    Sync,
    /// A write is acknowledged once written to the WAL file; the WAL is `fdatasync`ed at least
    /// every `interval_ms`. Survives a process crash (`kill -9`); a power loss can lose up to the
    /// last `interval_ms` of acknowledged writes.
    Periodic {
        /// Milliseconds between background `fdatasync`s; at least 1.
        interval_ms: u64,
    },
    /// A write is acknowledged once it is in the memtable; the WAL is written in the background
    /// and never explicitly synced while the engine runs (`close` still syncs). A crash can lose
    /// any acknowledged write that was not yet written.
    None,
}

impl std::str::FromStr for Durability {
    type Err = Error;

    /// Parses `sync`, `none` or `periodic:MS` (for example `periodic:100`).
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "sync" => Ok(Durability::Sync),
            "none" => Ok(Durability::None),
            _ => {
                let ms = s
                    .strip_prefix("periodic:")
                    .and_then(|ms| ms.parse::<u64>().ok())
                    .filter(|&ms| ms >= 1)
                    .ok_or_else(|| {
                        Error::InvalidArgument(format!(
                            "durability {s:?}: expected `sync`, `none` or `periodic:MS` with MS >= 1"
                        ))
                    })?;
                Ok(Durability::Periodic { interval_ms: ms })
            }
        }
    }
}

impl std::fmt::Display for Durability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Durability::Sync => f.write_str("sync"),
            Durability::Periodic { interval_ms } => write!(f, "periodic:{interval_ms}"),
            Durability::None => f.write_str("none"),
        }
    }
}

/// Options for one engine instance (one shard).
#[derive(Debug, Clone)]
pub struct Options {
    /// What an acknowledged write promises. Default: [`Durability::Sync`].
    pub durability: Durability,
    /// Largest key accepted. Default 16 KiB.
    pub key_size_bytes_max: usize,
    /// Largest value accepted. Default 8 MiB.
    pub value_size_bytes_max: usize,
    /// Largest atomic write (sum of key and value bytes of a batch). Default 64 MiB.
    pub batch_size_bytes_max: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            durability: Durability::Sync,
            key_size_bytes_max: 16 << 10,
            value_size_bytes_max: 8 << 20,
            batch_size_bytes_max: 64 << 20,
        }
    }
}

impl Options {
    /// Checks a key against the limits.
    pub fn check_key(&self, key: &[u8]) -> Result<()> {
        if key.is_empty() {
            return Err(Error::EmptyKey);
        }
        check(Limit::KeySize, key.len(), self.key_size_bytes_max)
    }

    /// Checks a value against the limits.
    pub fn check_value(&self, value: &[u8]) -> Result<()> {
        check(Limit::ValueSize, value.len(), self.value_size_bytes_max)
    }

    /// Checks the total payload of one atomic write.
    pub fn check_batch_bytes(&self, bytes: usize) -> Result<()> {
        check(Limit::BatchSize, bytes, self.batch_size_bytes_max)
    }
}

fn check(limit: Limit, actual: usize, max: usize) -> Result<()> {
    if actual > max {
        return Err(Error::LimitExceeded {
            limit,
            actual: actual as u64,
            max: max as u64,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durability_parses_and_prints_round_trip() {
        for text in ["sync", "none", "periodic:1", "periodic:250"] {
            let d: Durability = text.parse().unwrap();
            assert_eq!(d.to_string(), text);
        }
        assert_eq!(
            "periodic:5".parse::<Durability>().unwrap(),
            Durability::Periodic { interval_ms: 5 }
        );
    }

    #[test]
    fn durability_rejects_bad_text_with_a_helpful_message() {
        for bad in [
            "",
            "SYNC",
            "periodic",
            "periodic:",
            "periodic:0",
            "periodic:-3",
            "periodic:x",
        ] {
            let err = bad.parse::<Durability>().unwrap_err();
            assert!(err.to_string().contains("periodic:MS"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn limits_are_enforced_at_their_boundary() {
        let o = Options {
            key_size_bytes_max: 4,
            value_size_bytes_max: 8,
            ..Options::default()
        };
        assert!(matches!(o.check_key(b""), Err(Error::EmptyKey)));
        o.check_key(b"abcd").unwrap();
        match o.check_key(b"abcde") {
            Err(Error::LimitExceeded {
                limit: Limit::KeySize,
                actual: 5,
                max: 4,
            }) => {}
            other => panic!("unexpected {other:?}"),
        }
        o.check_value(b"").unwrap();
        o.check_value(&[0; 8]).unwrap();
        let err = o.check_value(&[0; 9]).unwrap_err();
        assert!(err.to_string().contains("value_size_bytes_max"), "{err}");
    }
}
