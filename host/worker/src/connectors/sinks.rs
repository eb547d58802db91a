//! `file`, `print` and `blackhole` sinks.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use weir_core::Connector;

use super::{ConnectorError, SinkWriter};

/// Writes `part-<subtask>.jsonl` under a directory; until finished the file is named
/// `.part-<subtask>.jsonl.inprogress`, so readers never see a half-written file.
pub struct FileSink {
    dir: PathBuf,
    name: String,
    writer: Option<BufWriter<File>>,
    count: u64,
}

const FILE: &str = "file";

impl FileSink {
    /// Creates the directory if needed and opens the in-progress file.
    pub fn new(c: &Connector, subtask: u32) -> Result<Self, ConnectorError> {
        let dir = PathBuf::from(c.get("path").ok_or_else(|| ConnectorError::Config {
            connector: FILE,
            message: "missing 'path'".into(),
        })?);
        let io = |source| ConnectorError::Io {
            connector: FILE,
            path: dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(io)?;
        let name = format!("part-{subtask}.jsonl");
        let tmp = dir.join(format!(".{name}.inprogress"));
        let f = File::create(&tmp).map_err(|source| ConnectorError::Io {
            connector: FILE,
            path: tmp.display().to_string(),
            source,
        })?;
        Ok(FileSink {
            dir,
            name,
            writer: Some(BufWriter::with_capacity(256 << 10, f)),
            count: 0,
        })
    }

    fn io(&self, source: std::io::Error) -> ConnectorError {
        ConnectorError::Io {
            connector: FILE,
            path: self.dir.join(&self.name).display().to_string(),
            source,
        }
    }
}

impl SinkWriter for FileSink {
    fn write(&mut self, value: &[u8]) -> Result<(), ConnectorError> {
        let w = self
            .writer
            .as_mut()
            .expect("file sink written after finish");
        w.write_all(value)
            .and_then(|_| w.write_all(b"\n"))
            .map_err(|e| ConnectorError::Io {
                connector: FILE,
                path: self.name.clone(),
                source: e,
            })?;
        self.count += 1;
        Ok(())
    }

    fn finish(&mut self) -> Result<(), ConnectorError> {
        if let Some(w) = self.writer.take() {
            let f = w.into_inner().map_err(|e| self.io(e.into_error()))?;
            f.sync_all().map_err(|e| self.io(e))?;
            let tmp = self.dir.join(format!(".{}.inprogress", self.name));
            std::fs::rename(&tmp, self.dir.join(&self.name)).map_err(|e| self.io(e))?;
        }
        Ok(())
    }

    fn count(&self) -> u64 {
        self.count
    }
}

/// Prints records on standard output, prefixed `<subtask>> ` when parallel (as Flink does).
pub struct PrintSink {
    prefix: String,
    out: BufWriter<std::io::Stdout>,
    count: u64,
}

impl PrintSink {
    /// A print sink for one subtask.
    pub fn new(subtask: u32, parallelism: u32) -> Self {
        PrintSink {
            prefix: if parallelism > 1 {
                format!("{}> ", subtask + 1)
            } else {
                String::new()
            },
            out: BufWriter::new(std::io::stdout()),
            count: 0,
        }
    }
}

impl SinkWriter for PrintSink {
    fn write(&mut self, value: &[u8]) -> Result<(), ConnectorError> {
        let io = |source| ConnectorError::Io {
            connector: "print",
            path: "stdout".into(),
            source,
        };
        self.out.write_all(self.prefix.as_bytes()).map_err(io)?;
        self.out.write_all(value).map_err(io)?;
        self.out.write_all(b"\n").map_err(io)?;
        self.count += 1;
        Ok(())
    }

    fn finish(&mut self) -> Result<(), ConnectorError> {
        self.out.flush().map_err(|source| ConnectorError::Io {
            connector: "print",
            path: "stdout".into(),
            source,
        })
    }

    fn count(&self) -> u64 {
        self.count
    }
}

/// Counts and discards.
#[derive(Default)]
pub struct BlackholeSink {
    count: u64,
}

impl SinkWriter for BlackholeSink {
    fn write(&mut self, _value: &[u8]) -> Result<(), ConnectorError> {
        self.count += 1;
        Ok(())
    }

    fn finish(&mut self) -> Result<(), ConnectorError> {
        Ok(())
    }

    fn count(&self) -> u64 {
        self.count
    }
}
