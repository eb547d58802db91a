//! `file`, `print` and `blackhole` sinks.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use serde_json::{json, Value};
use weir_core::Connector;

use super::{ConnectorError, SinkWriter};

/// Writes JSON lines into `part-<subtask>-<n>.jsonl` files under a directory, exactly once.
///
/// Records go to an in-progress file `.part-<subtask>-<n>.jsonl.inprogress`; a checkpoint
/// barrier (or the end of input) closes it into the pending transaction, and the job
/// renames it to its visible name once a checkpoint that holds it has completed
/// ([`FileSink::commit`], idempotent). Readers never see a file whose records could still be
/// rolled back.
pub struct FileSink {
    dir: PathBuf,
    subtask: u32,
    next_part: u64,
    writer: Option<(String, BufWriter<File>)>,
    /// Closed files not yet known to be committed, with the checkpoint that closed them.
    pending: Vec<(u64, String)>,
    count: u64,
}

const FILE: &str = "file";

fn sink_dir(c: &Connector) -> Result<PathBuf, ConnectorError> {
    Ok(PathBuf::from(c.get("path").ok_or_else(|| {
        ConnectorError::Config {
            connector: FILE,
            message: "missing 'path'".into(),
        }
    })?))
}

fn in_progress(name: &str) -> String {
    format!(".{name}.inprogress")
}

fn io_at(path: &std::path::Path) -> impl Fn(std::io::Error) -> ConnectorError + '_ {
    move |source| ConnectorError::Io {
        connector: FILE,
        path: path.display().to_string(),
        source,
    }
}

impl FileSink {
    /// Creates the directory if needed; new files are numbered after every visible one of
    /// this subtask, so a restarted job never overwrites committed output.
    pub fn new(c: &Connector, subtask: u32) -> Result<Self, ConnectorError> {
        let dir = sink_dir(c)?;
        std::fs::create_dir_all(&dir).map_err(io_at(&dir))?;
        let dir = dir.canonicalize().map_err(io_at(&dir))?;
        let prefix = format!("part-{subtask}-");
        let mut next_part = 0;
        for entry in std::fs::read_dir(&dir).map_err(io_at(&dir))? {
            let name = entry.map_err(io_at(&dir))?.file_name();
            let name = name.to_string_lossy();
            if let Some(n) = name
                .strip_prefix(&prefix)
                .and_then(|r| r.strip_suffix(".jsonl"))
                .and_then(|n| n.parse::<u64>().ok())
            {
                next_part = next_part.max(n + 1);
            }
        }
        Ok(FileSink {
            dir,
            subtask,
            next_part,
            writer: None,
            pending: Vec::new(),
            count: 0,
        })
    }

    fn close_current(&mut self, checkpoint: u64) -> Result<(), ConnectorError> {
        if let Some((name, w)) = self.writer.take() {
            let path = self.dir.join(in_progress(&name));
            let f = w.into_inner().map_err(|e| io_at(&path)(e.into_error()))?;
            f.sync_all().map_err(io_at(&path))?;
            self.pending.push((checkpoint, name));
        }
        Ok(())
    }

    /// Makes a transaction's files visible; files already visible are left as they are.
    /// The transaction names its directory: a job restored with another output path still
    /// completes what the snapshot's job wrote.
    pub fn commit(_c: &Connector, pending: &Value) -> Result<(), ConnectorError> {
        let dir = PathBuf::from(pending.get("dir").and_then(Value::as_str).ok_or_else(|| {
            ConnectorError::Config {
                connector: FILE,
                message: format!("invalid pending transaction {pending}"),
            }
        })?);
        let files = pending
            .get("files")
            .and_then(Value::as_array)
            .ok_or_else(|| ConnectorError::Config {
                connector: FILE,
                message: format!("invalid pending transaction {pending}"),
            })?;
        for f in files {
            let name = f.as_str().unwrap_or_default();
            // Only names this sink gives its files: a snapshot cannot rename anything else.
            let ours = name.starts_with("part-") && name.ends_with(".jsonl");
            if !ours || name.contains('/') || name.contains("..") {
                return Err(ConnectorError::Config {
                    connector: FILE,
                    message: format!("invalid file name {f} in a pending transaction"),
                });
            }
            let target = dir.join(name);
            let tmp = dir.join(in_progress(name));
            match std::fs::rename(&tmp, &target) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if !target.exists() {
                        // Removed by hand since: there is nothing left to commit.
                        tracing::warn!(file = %tmp.display(), "a pending file is gone");
                    }
                }
                Err(e) => return Err(io_at(&tmp)(e)),
            }
        }
        Ok(())
    }

    /// Deletes the in-progress files of transactions that were never committed.
    pub fn abort_uncommitted(c: &Connector) -> Result<(), ConnectorError> {
        let dir = sink_dir(c)?;
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(());
        };
        for entry in entries {
            let entry = entry.map_err(io_at(&dir))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(".part-") && name.ends_with(".inprogress") {
                std::fs::remove_file(entry.path()).map_err(io_at(&entry.path()))?;
            }
        }
        Ok(())
    }
}

impl SinkWriter for FileSink {
    fn write(&mut self, value: &[u8]) -> Result<(), ConnectorError> {
        if self.writer.is_none() {
            let name = format!("part-{}-{}.jsonl", self.subtask, self.next_part);
            self.next_part += 1;
            let path = self.dir.join(in_progress(&name));
            // A new file, never one already there: a symlink planted under this name is
            // refused rather than followed.
            let f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(io_at(&path))?;
            self.writer = Some((name, BufWriter::with_capacity(256 << 10, f)));
        }
        let (name, w) = self.writer.as_mut().expect("just opened");
        w.write_all(value)
            .and_then(|_| w.write_all(b"\n"))
            .map_err(|e| ConnectorError::Io {
                connector: FILE,
                path: name.clone(),
                source: e,
            })?;
        self.count += 1;
        Ok(())
    }

    fn finish(&mut self) -> Result<(), ConnectorError> {
        self.close_current(u64::MAX)
    }

    fn count(&self) -> u64 {
        self.count
    }

    fn pre_commit(&mut self, checkpoint: u64) -> Result<Option<Value>, ConnectorError> {
        self.close_current(checkpoint)?;
        let files: Vec<&str> = self.pending.iter().map(|(_, n)| n.as_str()).collect();
        Ok(Some(json!({ "dir": self.dir, "files": files })))
    }

    fn committed(&mut self, checkpoint: u64) {
        self.pending.retain(|(c, _)| *c > checkpoint);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn visible(dir: &std::path::Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_symlink_planted_where_a_part_file_goes_is_refused_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir_all(&out).unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        std::os::unix::fs::symlink(&victim, out.join(".part-0-0.jsonl.inprogress")).unwrap();
        let c = Connector {
            name: "file".into(),
            config: [("path".to_string(), out.display().to_string())].into(),
        };
        let mut sink = FileSink::new(&c, 0).unwrap();
        let e = sink.write(b"{}").unwrap_err();
        assert!(e.to_string().contains(".part-0-0.jsonl.inprogress"), "{e}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    }

    #[test]
    fn files_become_visible_only_when_committed_and_commits_repeat_safely() {
        let dir = tempfile::tempdir().unwrap();
        let c = Connector {
            name: "file".into(),
            config: [("path".to_string(), dir.path().display().to_string())].into(),
        };
        let mut sink = FileSink::new(&c, 3).unwrap();
        sink.write(b"{\"a\":1}").unwrap();
        let first = sink.pre_commit(1).unwrap().unwrap();
        sink.write(b"{\"a\":2}").unwrap();
        let second = sink.pre_commit(2).unwrap().unwrap();
        assert_eq!(
            visible(dir.path()),
            [".part-3-0.jsonl.inprogress", ".part-3-1.jsonl.inprogress"]
        );
        // Checkpoint 1 completes; 2 still holds file 0 until it is known committed.
        FileSink::commit(&c, &first).unwrap();
        sink.committed(1);
        assert_eq!(second["files"].as_array().unwrap().len(), 2);
        FileSink::commit(&c, &second).unwrap();
        FileSink::commit(&c, &second).unwrap();
        assert_eq!(visible(dir.path()), ["part-3-0.jsonl", "part-3-1.jsonl"]);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("part-3-1.jsonl")).unwrap(),
            "{\"a\":2}\n"
        );
        // What was never committed is rolled back; new files never reuse a visible name.
        sink.write(b"{\"a\":3}").unwrap();
        sink.pre_commit(3).unwrap();
        FileSink::abort_uncommitted(&c).unwrap();
        assert_eq!(visible(dir.path()), ["part-3-0.jsonl", "part-3-1.jsonl"]);
        let mut again = FileSink::new(&c, 3).unwrap();
        again.write(b"{}").unwrap();
        again.finish().unwrap();
        assert!(dir.path().join(".part-3-2.jsonl.inprogress").exists());
        // A snapshot cannot make the sink rename files it did not write.
        std::fs::write(dir.path().join(".secret.inprogress"), b"x").unwrap();
        let evil = json!({ "dir": dir.path(), "files": ["secret"] });
        assert!(FileSink::commit(&c, &evil).is_err());
    }
}
