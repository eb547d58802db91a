//! Connectors built into the host: sources and sinks a job names in its plan.
//!
//! ```
//! use weir::connectors::{Datagen, Sink};
//! let gen = Datagen::bounded(1_000_000).keys(100_000).seed(7);
//! let out = Sink::file("/tmp/out");
//! # let _ = (gen, out);
//! ```

use serde::{Deserialize, Serialize};

use crate::codec::SinkFormat;

/// One record from the `datagen` source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatagenRecord {
    /// Sequence number, unique over all subtasks.
    pub seq: u64,
    /// A key in `0..keys`, pseudo-random from (seed, seq).
    pub key: u64,
    /// A value in `0..value_range`, pseudo-random from (seed, seq).
    pub value: i64,
    /// Event time: `start + seq * step` milliseconds.
    pub timestamp: i64,
}

/// Configuration of the deterministic `datagen` source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagen {
    pub(crate) config: Vec<(String, String)>,
}

impl Datagen {
    /// Generates `count` records, then ends.
    pub fn bounded(count: u64) -> Self {
        Datagen {
            config: vec![("count".into(), count.to_string())],
        }
    }

    /// Generates records until the job is cancelled.
    pub fn unbounded() -> Self {
        Datagen { config: vec![] }
    }

    fn set(mut self, key: &str, value: impl ToString) -> Self {
        self.config.retain(|(k, _)| k != key);
        self.config.push((key.into(), value.to_string()));
        self
    }

    /// Number of distinct keys (default 1,000).
    pub fn keys(self, keys: u64) -> Self {
        self.set("keys", keys)
    }

    /// Seed of the pseudo-random keys and values (default 0).
    pub fn seed(self, seed: u64) -> Self {
        self.set("seed", seed)
    }

    /// Records per second per subtask (default: as fast as possible).
    pub fn rate(self, per_second: u64) -> Self {
        self.set("rate", per_second)
    }

    /// Values are drawn from `0..range` (default 1,000).
    pub fn value_range(self, range: u64) -> Self {
        self.set("value-range", range)
    }

    /// Timestamp of record 0 (default 0) and step between records (default 1 ms).
    pub fn timestamps(self, start: i64, step_ms: i64) -> Self {
        self.set("ts-start", start).set("ts-step-ms", step_ms)
    }
}

/// Configuration of the `file` source: lines of a file, or of every file in a directory
/// (one split per file). Bounded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSource {
    pub(crate) config: Vec<(String, String)>,
}

impl FileSource {
    /// Each line of the file(s) at `path` as a UTF-8 string.
    pub fn lines(path: impl Into<String>) -> Self {
        FileSource {
            config: vec![
                ("path".into(), path.into()),
                ("format".into(), "lines".into()),
            ],
        }
    }

    /// At most `per_second` lines per second per subtask (default: as fast as possible).
    pub fn rate(mut self, per_second: u64) -> Self {
        self.config.retain(|(k, _)| k != "rate");
        self.config.push(("rate".into(), per_second.to_string()));
        self
    }
}

/// A sink connector implemented by the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sink {
    pub(crate) name: &'static str,
    pub(crate) config: Vec<(String, String)>,
    pub(crate) format: SinkFormat,
}

impl Sink {
    /// Writes one JSON record per line into files under the directory `path`
    /// (`part-<subtask>-<n>.jsonl`; files being written start with `.` and become visible
    /// when the checkpoint that covers them completes, or when the job finishes).
    pub fn file(path: impl Into<String>) -> Self {
        Sink {
            name: "file",
            config: vec![("path".into(), path.into())],
            format: SinkFormat::Json,
        }
    }

    /// Prints one JSON record per line on the host's standard output.
    pub fn print() -> Self {
        Sink {
            name: "print",
            config: vec![],
            format: SinkFormat::Json,
        }
    }

    /// Counts records and discards them.
    pub fn blackhole() -> Self {
        Sink {
            name: "blackhole",
            config: vec![],
            format: SinkFormat::Nothing,
        }
    }
}
