//! Connectors built into the host: `datagen` and `file` sources; `file`, `print` and
//! `blackhole` sinks — and the rules of which files a tenant's connectors may use
//! ([`paths`]). Connectors know nothing of guests or tasks: a task gives a source reader a
//! place to put record batches and gives a sink writer the batches to write.
//!
//! File connectors open their files beneath the allowed directory their path lies in (a
//! tenant's `allowed_paths`, given to the `*_within` functions; see [`crate::paths`]), and
//! follow no symlink once their path is anchored. The other functions (local runs) anchor
//! the path beneath `/` as it resolves when they are called.
#![deny(missing_docs)]

mod datagen;
mod file;
pub mod paths;
mod sinks;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use weir_core::frame::RecordBatch;
use weir_core::Connector;

pub use datagen::DatagenReader;
pub use file::FileReader;
pub use sinks::{BlackholeSink, FileSink, PrintSink};

/// A connector's configuration is wrong or its I/O failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// No such connector.
    #[error("unknown {kind} connector '{name}' (known: {known})")]
    Unknown {
        /// `source` or `sink`.
        kind: &'static str,
        /// The name asked for.
        name: String,
        /// The names this host knows.
        known: &'static str,
    },
    /// A configuration value is missing or invalid.
    #[error("connector '{connector}': {message}")]
    Config {
        /// Connector name.
        connector: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A path is not allowed, or cannot be used.
    #[error("connector '{connector}': {source}")]
    Path {
        /// Connector name.
        connector: &'static str,
        /// Why.
        #[source]
        source: crate::paths::PathError,
    },
    /// Reading or writing failed.
    #[error("connector '{connector}': {path}: {source}")]
    Io {
        /// Connector name.
        connector: &'static str,
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Reads one subtask's share of a source.
pub trait SourceReader: Send {
    /// Appends up to `max` records to `out` on `edge`; returns `false` once the source has
    /// nothing more (bounded sources only).
    fn read_batch(
        &mut self,
        out: &mut RecordBatch,
        edge: u32,
        max: usize,
    ) -> Result<bool, ConnectorError>;

    /// Whether this subtask is known, from its assignment alone, never to produce a record
    /// (no split assigned). Its downstream then does not wait for its watermark, so results
    /// do not depend on when it happens to finish.
    fn is_empty(&self) -> bool {
        false
    }

    /// Where reading stands: everything read so far is behind it. Stored in checkpoints.
    fn position(&self) -> Value;

    /// Continues from the positions every subtask of an earlier run (of `parallelism`
    /// subtasks, indexed by subtask) had checkpointed.
    fn restore(
        &mut self,
        positions: &[Option<Value>],
        parallelism: u32,
    ) -> Result<(), ConnectorError>;
}

/// Writes one subtask's share of a sink.
pub trait SinkWriter: Send {
    /// Writes one record (the guest encoded it for this sink: a JSON document for text sinks).
    fn write(&mut self, value: &[u8]) -> Result<(), ConnectorError>;
    /// Makes everything written visible (sinks without transactions), or closes the
    /// current transaction (transactional sinks: the job commits it).
    fn finish(&mut self) -> Result<(), ConnectorError>;
    /// Records written.
    fn count(&self) -> u64;

    /// Transactional sinks: closes what was written since the last call into the
    /// transaction of checkpoint `checkpoint` and returns everything not yet known to be
    /// committed, to be committed (by [`commit`]) once a checkpoint that holds it completes.
    fn pre_commit(&mut self, _checkpoint: u64) -> Result<Option<Value>, ConnectorError> {
        Ok(None)
    }

    /// Checkpoint `checkpoint` completed: its transactions are committed.
    fn committed(&mut self, _checkpoint: u64) {}

    /// Continues after the transactions every subtask of an earlier run had pending.
    fn restore(&mut self, _pending: &[Value]) {}
}

/// Commits a sink transaction that [`SinkWriter::pre_commit`] returned. Idempotent:
/// committing the same transaction again (after a restart) changes nothing.
pub fn commit(c: &Connector, pending: &Value) -> Result<(), ConnectorError> {
    match c.name.as_str() {
        "file" => FileSink::commit(c, pending),
        _ => Ok(()),
    }
}

/// Removes what uncommitted transactions of a sink left behind (before a job starts, after
/// the restored checkpoint's transactions were committed), in a local run.
pub fn abort_uncommitted(c: &Connector) -> Result<(), ConnectorError> {
    abort_uncommitted_within(c, None)
}

/// [`abort_uncommitted`] for a sink whose files must lie under `allowed` (when given).
pub fn abort_uncommitted_within(
    c: &Connector,
    allowed: Option<&[PathBuf]>,
) -> Result<(), ConnectorError> {
    match c.name.as_str() {
        "file" => FileSink::abort_uncommitted(c, allowed),
        _ => Ok(()),
    }
}

/// Limits a source to `rate` records per second.
pub(crate) struct Throttle {
    rate: Option<u64>,
    started: Instant,
    emitted: u64,
}

impl Throttle {
    pub(crate) fn new(rate: Option<u64>) -> Self {
        Throttle {
            rate: rate.filter(|&r| r > 0),
            started: Instant::now(),
            emitted: 0,
        }
    }

    /// How many of `max` records may be read now, sleeping (at most 100 ms, so that the
    /// caller can see a cancellation) until the next one is due; 0 when none is yet.
    pub(crate) fn allow(&mut self, max: usize) -> usize {
        let Some(rate) = self.rate else {
            return max;
        };
        let due = Duration::from_secs_f64(self.emitted as f64 / rate as f64);
        let elapsed = self.started.elapsed();
        if due > elapsed {
            std::thread::sleep((due - elapsed).min(Duration::from_millis(100)));
        }
        let allowed = (self.started.elapsed().as_secs_f64() * rate as f64) as u64 + 1;
        (max as u64).min(allowed.saturating_sub(self.emitted)) as usize
    }

    pub(crate) fn emitted(&mut self, n: usize) {
        self.emitted += n as u64;
    }
}

pub(crate) fn parse<T: std::str::FromStr>(
    connector: &'static str,
    c: &Connector,
    key: &str,
) -> Result<Option<T>, ConnectorError>
where
    T::Err: std::fmt::Display,
{
    c.get(key)
        .map(|v| {
            v.parse().map_err(|e| ConnectorError::Config {
                connector,
                message: format!("{key}={v:?}: {e}"),
            })
        })
        .transpose()
}

/// Opens the reader of subtask `subtask` of `parallelism` for a source connector, in a
/// local run (any path).
pub fn open_source(
    c: &Connector,
    subtask: u32,
    parallelism: u32,
) -> Result<Box<dyn SourceReader>, ConnectorError> {
    open_source_within(c, subtask, parallelism, None)
}

/// Opens the reader of subtask `subtask` of `parallelism` for a source connector, whose
/// files must lie under `allowed` (when given).
pub fn open_source_within(
    c: &Connector,
    subtask: u32,
    parallelism: u32,
    allowed: Option<&[PathBuf]>,
) -> Result<Box<dyn SourceReader>, ConnectorError> {
    match c.name.as_str() {
        "datagen" => Ok(Box::new(DatagenReader::new(c, subtask, parallelism)?)),
        "file" => Ok(Box::new(FileReader::new(c, subtask, parallelism, allowed)?)),
        other => Err(ConnectorError::Unknown {
            kind: "source",
            name: other.to_string(),
            known: "datagen, file",
        }),
    }
}

/// Opens the writer of subtask `subtask` of `parallelism` for a sink connector, in a local
/// run (any path).
pub fn open_sink(
    c: &Connector,
    subtask: u32,
    parallelism: u32,
) -> Result<Box<dyn SinkWriter>, ConnectorError> {
    open_sink_within(c, subtask, parallelism, None, None)
}

/// Opens the writer of subtask `subtask` of `parallelism` for a sink connector, whose files
/// must lie under `allowed` (when given); `shared_output`: standard output is shared with
/// other jobs, and a print sink takes lines from this budget.
pub fn open_sink_within(
    c: &Connector,
    subtask: u32,
    parallelism: u32,
    allowed: Option<&[PathBuf]>,
    shared_output: Option<Arc<weir_core::logs::LogBudget>>,
) -> Result<Box<dyn SinkWriter>, ConnectorError> {
    match c.name.as_str() {
        "file" => Ok(Box::new(FileSink::new(c, subtask, allowed)?)),
        "print" => Ok(Box::new(PrintSink::new(
            subtask,
            parallelism,
            shared_output,
        ))),
        "blackhole" => Ok(Box::new(BlackholeSink::default())),
        other => Err(ConnectorError::Unknown {
            kind: "sink",
            name: other.to_string(),
            known: "file, print, blackhole",
        }),
    }
}
