//! Structured logs with `tracing`: human-readable lines by default, one JSON object per line
//! with `--log-format json`, filtered by `--log-level` (`EnvFilter` syntax, e.g.
//! `info,corekv_storage=debug`). Everything goes to stderr.
//!
//! glommio (and other dependencies) log through the `log` crate; installing the subscriber
//! also installs a `log` → `tracing` bridge, so their messages (for example glommio's warning
//! that it could not register I/O memory) appear in the same stream, with the same filter.
//!
//! A log that cannot be written (stderr on a full disk, a closed pipe) loses lines, never the
//! server: tracing-subscriber would otherwise report the failed write with `eprintln!`, which
//! panics when stderr fails, taking a shard down at its next log line.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber. Fails if `filter` is not a valid filter or a subscriber is
/// already installed.
pub fn init(format: LogFormat, filter: &str) -> Result<(), String> {
    let filter = EnvFilter::try_new(filter)
        .map_err(|e| format!("invalid --log-level {filter:?}: {e} (try `info` or `debug`)"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_thread_names(true)
        .log_internal_errors(false);
    // `try_init` also routes the `log` crate into tracing (tracing-subscriber's `tracing-log`
    // feature).
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(|e| format!("cannot install the log subscriber: {e}"))
}
