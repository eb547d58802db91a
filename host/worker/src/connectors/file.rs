//! `file` source: lines of text files, one split per file.
//!
//! `path` names a file or a directory (its files, sorted by name, are the splits); split `i`
//! is read by subtask `i % parallelism`, so one file is always read in order by one subtask.
//! `format` is `lines` (each line as UTF-8 text) or `json` (each non-empty line is a JSON
//! document; the guest decodes it). `rate` limits each subtask to that many records per
//! second.
//!
//! The position is the byte offset reached in each split, by file name, so a checkpoint
//! taken at one parallelism restores at any other: each new subtask looks up its own splits.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::PathBuf;

use serde_json::{json, Value};
use weir_core::frame::{RecordBatch, RecordRef};
use weir_core::Connector;

use super::{parse, ConnectorError, SourceReader, Throttle};

const NAME: &str = "file";

/// One subtask of a `file` source.
pub struct FileReader {
    /// Splits not started yet, last first.
    splits: Vec<PathBuf>,
    current: Option<Current>,
    /// Offset to start each split at (restored), by split name.
    start_at: BTreeMap<String, u64>,
    /// Splits read to the end, by name.
    done: Vec<String>,
    skip_blank: bool,
    line: Vec<u8>,
    throttle: Throttle,
}

struct Current {
    name: String,
    path: PathBuf,
    reader: BufReader<File>,
    offset: u64,
}

/// A split's name in positions: its file name.
fn split_name(p: &std::path::Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
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
            start_at: BTreeMap::new(),
            done: Vec::new(),
            skip_blank,
            line: Vec::new(),
            throttle: Throttle::new(parse(NAME, c, "rate")?),
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
        let max = self.throttle.allow(max);
        let mut n = 0;
        while n < max {
            if self.current.is_none() {
                let Some(path) = self.splits.pop() else {
                    self.throttle.emitted(n);
                    return Ok(false);
                };
                let io = |source| ConnectorError::Io {
                    connector: NAME,
                    path: path.display().to_string(),
                    source,
                };
                let name = split_name(&path);
                let mut f = File::open(&path).map_err(io)?;
                let offset = self.start_at.get(&name).copied().unwrap_or(0);
                if offset > 0 {
                    f.seek(SeekFrom::Start(offset)).map_err(io)?;
                }
                self.current = Some(Current {
                    name,
                    path,
                    reader: BufReader::with_capacity(256 << 10, f),
                    offset,
                });
            }
            let c = self.current.as_mut().expect("just opened");
            self.line.clear();
            let read = c
                .reader
                .read_until(b'\n', &mut self.line)
                .map_err(|source| ConnectorError::Io {
                    connector: NAME,
                    path: c.path.display().to_string(),
                    source,
                })?;
            if read == 0 {
                let c = self.current.take().expect("current");
                self.done.push(c.name);
                continue;
            }
            c.offset += read as u64;
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
        self.throttle.emitted(n);
        Ok(true)
    }

    fn position(&self) -> Value {
        let mut splits = serde_json::Map::new();
        for d in &self.done {
            splits.insert(d.clone(), json!("done"));
        }
        if let Some(c) = &self.current {
            splits.insert(c.name.clone(), json!(c.offset));
        }
        for (name, &offset) in &self.start_at {
            if !splits.contains_key(name) && offset > 0 {
                splits.insert(name.clone(), json!(offset));
            }
        }
        json!({ "splits": splits })
    }

    fn restore(
        &mut self,
        positions: &[Option<Value>],
        _parallelism: u32,
    ) -> Result<(), ConnectorError> {
        let mut done = Vec::new();
        for p in positions.iter().flatten() {
            let Some(splits) = p.get("splits").and_then(Value::as_object) else {
                return Err(ConnectorError::Config {
                    connector: NAME,
                    message: format!("invalid checkpointed position {p}"),
                });
            };
            for (name, v) in splits {
                match (v.as_str(), v.as_u64()) {
                    (Some("done"), _) => done.push(name.clone()),
                    (_, Some(offset)) => {
                        self.start_at.insert(name.clone(), offset);
                    }
                    _ => {
                        return Err(ConnectorError::Config {
                            connector: NAME,
                            message: format!("invalid offset of split '{name}': {v}"),
                        })
                    }
                }
            }
        }
        // Only this subtask's splits matter; the others report theirs.
        let mine: Vec<String> = self.splits.iter().map(|p| split_name(p)).collect();
        self.splits.retain(|p| !done.contains(&split_name(p)));
        self.done = done.into_iter().filter(|d| mine.contains(d)).collect();
        self.start_at.retain(|name, _| mine.contains(name));
        Ok(())
    }
}
