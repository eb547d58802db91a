//! `file` source: lines of text files, one split per file.
//!
//! `path` names a file or a directory (its files, sorted by name, are the splits); split `i`
//! is read by subtask `i % parallelism`, so one file is always read in order by one subtask.
//! `format` is `lines` (each line as UTF-8 text) or `json` (each non-empty line is a JSON
//! document; the guest decodes it).

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;

use weir_core::frame::{RecordBatch, RecordRef};
use weir_core::Connector;

use super::{ConnectorError, SourceReader};

const NAME: &str = "file";

/// One subtask of a `file` source.
pub struct FileReader {
    splits: Vec<PathBuf>,
    current: Option<(PathBuf, BufReader<File>)>,
    skip_blank: bool,
    line: Vec<u8>,
}

impl FileReader {
    /// Lists the splits and picks this subtask's.
    pub fn new(c: &Connector, subtask: u32, parallelism: u32) -> Result<Self, ConnectorError> {
        let path = PathBuf::from(c.get("path").ok_or_else(|| ConnectorError::Config {
            connector: NAME,
            message: "missing 'path'".into(),
        })?);
        let skip_blank = match c.get("format").unwrap_or("lines") {
            "lines" => false,
            "json" => true,
            other => {
                return Err(ConnectorError::Config {
                    connector: NAME,
                    message: format!("unknown format '{other}' (lines or json)"),
                })
            }
        };
        let io = |source| ConnectorError::Io {
            connector: NAME,
            path: path.display().to_string(),
            source,
        };
        let meta = std::fs::metadata(&path).map_err(io)?;
        let mut splits = if meta.is_dir() {
            let mut files = Vec::new();
            for entry in std::fs::read_dir(&path).map_err(io)? {
                let entry = entry.map_err(io)?;
                let name = entry.file_name();
                if entry.file_type().map_err(io)?.is_file()
                    && !name.to_string_lossy().starts_with('.')
                {
                    files.push(entry.path());
                }
            }
            files
        } else {
            vec![path.clone()]
        };
        splits.sort();
        let splits = splits
            .into_iter()
            .enumerate()
            .filter(|(i, _)| *i as u32 % parallelism == subtask)
            .map(|(_, p)| p)
            .rev()
            .collect();
        Ok(FileReader {
            splits,
            current: None,
            skip_blank,
            line: Vec::new(),
        })
    }
}

impl SourceReader for FileReader {
    fn is_empty(&self) -> bool {
        self.splits.is_empty() && self.current.is_none()
    }

    fn read_batch(
        &mut self,
        out: &mut RecordBatch,
        edge: u32,
        max: usize,
    ) -> Result<bool, ConnectorError> {
        let mut n = 0;
        while n < max {
            if self.current.is_none() {
                let Some(path) = self.splits.pop() else {
                    return Ok(false);
                };
                let f = File::open(&path).map_err(|source| ConnectorError::Io {
                    connector: NAME,
                    path: path.display().to_string(),
                    source,
                })?;
                self.current = Some((path, BufReader::with_capacity(256 << 10, f)));
            }
            let (path, reader) = self.current.as_mut().expect("just opened");
            self.line.clear();
            let read =
                reader
                    .read_until(b'\n', &mut self.line)
                    .map_err(|source| ConnectorError::Io {
                        connector: NAME,
                        path: path.display().to_string(),
                        source,
                    })?;
            if read == 0 {
                self.current = None;
                continue;
            }
            let mut line = self.line.as_slice();
            if let Some(l) = line.strip_suffix(b"\n") {
                line = l.strip_suffix(b"\r").unwrap_or(l);
            }
            if self.skip_blank && line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            out.push(RecordRef {
                edge,
                timestamp: None,
                key: None,
                value: line,
            });
            n += 1;
        }
        Ok(true)
    }
}
