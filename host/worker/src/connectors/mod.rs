//! Connectors built into the host: `datagen` and `file` sources; `file`, `print` and
//! `blackhole` sinks.

mod datagen;
mod file;
mod sinks;

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
}

/// Writes one subtask's share of a sink.
pub trait SinkWriter: Send {
    /// Writes one record (the guest encoded it for this sink: a JSON document for text sinks).
    fn write(&mut self, value: &[u8]) -> Result<(), ConnectorError>;
    /// Makes everything written visible.
    fn finish(&mut self) -> Result<(), ConnectorError>;
    /// Records written.
    fn count(&self) -> u64;
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

/// Opens the reader of subtask `subtask` of `parallelism` for a source connector.
pub fn open_source(
    c: &Connector,
    subtask: u32,
    parallelism: u32,
) -> Result<Box<dyn SourceReader>, ConnectorError> {
    match c.name.as_str() {
        "datagen" => Ok(Box::new(DatagenReader::new(c, subtask, parallelism)?)),
        "file" => Ok(Box::new(FileReader::new(c, subtask, parallelism)?)),
        other => Err(ConnectorError::Unknown {
            kind: "source",
            name: other.to_string(),
            known: "datagen, file",
        }),
    }
}

/// Opens the writer of subtask `subtask` of `parallelism` for a sink connector.
pub fn open_sink(
    c: &Connector,
    subtask: u32,
    parallelism: u32,
) -> Result<Box<dyn SinkWriter>, ConnectorError> {
    match c.name.as_str() {
        "file" => Ok(Box::new(FileSink::new(c, subtask)?)),
        "print" => Ok(Box::new(PrintSink::new(subtask, parallelism))),
        "blackhole" => Ok(Box::new(BlackholeSink::default())),
        other => Err(ConnectorError::Unknown {
            kind: "sink",
            name: other.to_string(),
            known: "file, print, blackhole",
        }),
    }
}
