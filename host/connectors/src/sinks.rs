//! `file`, `print` and `blackhole` sinks.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{AtFlags, Mode, OFlags};
use serde_json::{json, Value};
use weir_core::Connector;

use weir_core::logs::{Admit, LogBudget};

use super::{ConnectorError, SinkWriter};
use crate::paths::{self, Anchored};

/// Writes JSON lines into `part-<subtask>-<n>.jsonl` files under a directory, exactly once.
///
/// Records go to an in-progress file `.part-<subtask>-<n>.jsonl.inprogress`; a checkpoint
/// barrier (or the end of input) closes it into the pending transaction, and the job
/// renames it to its visible name once a checkpoint that holds it has completed
/// ([`FileSink::commit`], idempotent). Readers never see a file whose records could still be
/// rolled back.
///
/// The directory is opened once, beneath the allowed directory it lies in (see
/// [`crate::paths`]), and every file is created and renamed relative to that handle: the
/// directory swapped for a symlink later changes nothing about where the files go.
pub struct FileSink {
    dir: OwnedFd,
    /// The directory as it resolved, named in transactions.
    resolved: PathBuf,
    /// The directory as the job named it, for messages.
    shown: PathBuf,
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

fn io_at(path: &Path) -> impl Fn(std::io::Error) -> ConnectorError + '_ {
    move |source| ConnectorError::Io {
        connector: FILE,
        path: path.display().to_string(),
        source,
    }
}

fn path_error(source: paths::PathError) -> ConnectorError {
    ConnectorError::Path {
        connector: FILE,
        source,
    }
}

/// Whether `name` is one this sink gives its files (a transaction or a leftover names no
/// other file).
fn is_part_name(name: &str) -> bool {
    name.starts_with("part-") && name.ends_with(".jsonl") && !name.contains('/')
}

impl FileSink {
    /// Creates the directory if needed; new files are numbered after every visible one of
    /// this subtask, so a restarted job never overwrites committed output.
    pub fn new(
        c: &Connector,
        subtask: u32,
        allowed: Option<&[PathBuf]>,
    ) -> Result<Self, ConnectorError> {
        let anchored = Anchored::new(&sink_dir(c)?, allowed).map_err(path_error)?;
        anchored.create_dir_all().map_err(path_error)?;
        let dir = anchored
            .open(Path::new(""), paths::dir_flags(), Mode::empty())
            .map_err(path_error)?;
        let shown = anchored.shown().to_path_buf();
        let prefix = format!("part-{subtask}-");
        let mut next_part = 0;
        for (name, _) in paths::entries(dir.as_fd()).map_err(io_at(&shown))? {
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
            resolved: anchored.resolved(),
            shown,
            subtask,
            next_part,
            writer: None,
            pending: Vec::new(),
            count: 0,
        })
    }

    fn close_current(&mut self, checkpoint: u64) -> Result<(), ConnectorError> {
        if let Some((name, w)) = self.writer.take() {
            let path = self.shown.join(in_progress(&name));
            let f = w.into_inner().map_err(|e| io_at(&path)(e.into_error()))?;
            f.sync_all().map_err(io_at(&path))?;
            self.pending.push((checkpoint, name));
        }
        Ok(())
    }

    /// Makes a transaction's files visible; files already visible are left as they are.
    /// The transaction names its directory, as it resolved when the sink opened it (inside
    /// the allowed directories then): a job restored with another output path still
    /// completes what the snapshot's job wrote. That very directory is opened again,
    /// following no symlink (one put on its path since is refused), and the files are
    /// renamed relative to it.
    pub fn commit(_c: &Connector, pending: &Value) -> Result<(), ConnectorError> {
        let invalid = || ConnectorError::Config {
            connector: FILE,
            message: format!("invalid pending transaction {pending}"),
        };
        let dir = PathBuf::from(
            pending
                .get("dir")
                .and_then(Value::as_str)
                .ok_or_else(invalid)?,
        );
        let files = pending
            .get("files")
            .and_then(Value::as_array)
            .ok_or_else(invalid)?;
        let mut names = Vec::new();
        for f in files {
            let name = f.as_str().unwrap_or_default();
            // Only names this sink gives its files: a snapshot cannot rename anything else.
            if !is_part_name(name) || name.contains("..") {
                return Err(ConnectorError::Config {
                    connector: FILE,
                    message: format!("invalid file name {f} in a pending transaction"),
                });
            }
            names.push(name);
        }
        if names.is_empty() {
            return Ok(());
        }
        let handle = Anchored::as_resolved(&dir)
            .and_then(|a| a.open(Path::new(""), paths::dir_flags(), Mode::empty()))
            .map_err(path_error)?;
        for name in names {
            let tmp = in_progress(name);
            match rustix::fs::renameat(&handle, &tmp, &handle, name) {
                Ok(()) => {}
                Err(rustix::io::Errno::NOENT) => {
                    let visible =
                        rustix::fs::statat(&handle, name, AtFlags::SYMLINK_NOFOLLOW).is_ok();
                    if !visible {
                        // Removed by hand since: there is nothing left to commit.
                        tracing::warn!(dir = %dir.display(), file = %tmp, "a pending file is gone");
                    }
                }
                Err(e) => return Err(io_at(Path::new(&tmp))(e.into())),
            }
        }
        Ok(())
    }

    /// Deletes the in-progress files of transactions that were never committed.
    pub fn abort_uncommitted(
        c: &Connector,
        allowed: Option<&[PathBuf]>,
    ) -> Result<(), ConnectorError> {
        let anchored = Anchored::new(&sink_dir(c)?, allowed).map_err(path_error)?;
        let dir = match anchored.open(Path::new(""), paths::dir_flags(), Mode::empty()) {
            Ok(dir) => dir,
            // Nothing written yet.
            Err(paths::PathError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                return Ok(())
            }
            Err(e) => return Err(path_error(e)),
        };
        let shown = anchored.shown();
        for (name, _) in paths::entries(dir.as_fd()).map_err(io_at(shown))? {
            let name = name.to_string_lossy();
            if name.starts_with(".part-") && name.ends_with(".inprogress") {
                rustix::fs::unlinkat(&dir, &*name, AtFlags::empty())
                    .map_err(|e| io_at(&shown.join(&*name))(e.into()))?;
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
            let tmp = in_progress(&name);
            // A new file, never one already there, in the directory opened at the start: a
            // symlink planted under this name is refused rather than followed.
            let f = rustix::fs::openat(
                &self.dir,
                &tmp,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o666),
            )
            .map_err(|e| io_at(&self.shown.join(&tmp))(e.into()))?;
            self.writer = Some((name, BufWriter::with_capacity(256 << 10, File::from(f))));
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
        Ok(Some(json!({ "dir": self.resolved, "files": files })))
    }

    fn committed(&mut self, checkpoint: u64) {
        self.pending.retain(|(c, _)| *c > checkpoint);
    }
}

/// Prints records on standard output, prefixed `<subtask>> ` when parallel (as Flink does).
///
/// In a session cluster standard output is the server's, shared by every job: there each
/// record is kept on one line (control characters escaped) and a job prints at most its
/// share of lines ([`weir_core::logs::LogBudget`]); the others are counted as written and
/// dropped, and the next line printed says how many.
pub struct PrintSink {
    prefix: String,
    out: BufWriter<std::io::Stdout>,
    count: u64,
    shared: Option<Arc<LogBudget>>,
}

impl PrintSink {
    /// A print sink for one subtask; `shared`: standard output is shared, with this budget.
    pub fn new(subtask: u32, parallelism: u32, shared: Option<Arc<LogBudget>>) -> Self {
        PrintSink {
            prefix: if parallelism > 1 {
                format!("{}> ", subtask + 1)
            } else {
                String::new()
            },
            out: BufWriter::new(std::io::stdout()),
            count: 0,
            shared,
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
        self.count += 1;
        let Some(budget) = &self.shared else {
            self.out.write_all(self.prefix.as_bytes()).map_err(io)?;
            self.out.write_all(value).map_err(io)?;
            return self.out.write_all(b"\n").map_err(io);
        };
        match budget.admit() {
            Admit::Write { dropped } => {
                if dropped > 0 {
                    writeln!(
                        self.out,
                        "{}({dropped} records not printed: over the job's rate)",
                        self.prefix
                    )
                    .map_err(io)?;
                }
                let text = String::from_utf8_lossy(value);
                writeln!(
                    self.out,
                    "{}{}",
                    self.prefix,
                    weir_core::logs::one_line(&text)
                )
                .map_err(io)
            }
            Admit::Drop { .. } => Ok(()),
        }
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
        let mut sink = FileSink::new(&c, 0, None).unwrap();
        let e = sink.write(b"{}").unwrap_err();
        assert!(e.to_string().contains(".part-0-0.jsonl.inprogress"), "{e}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    }

    #[test]
    fn a_directory_swapped_for_a_symlink_takes_no_file_elsewhere() {
        let dir = tempfile::tempdir().unwrap();
        let allowed = dir.path().join("acme");
        let out = allowed.join("out");
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir_all(&elsewhere).unwrap();
        std::fs::create_dir_all(&allowed).unwrap();
        let c = Connector {
            name: "file".into(),
            config: [("path".to_string(), out.display().to_string())].into(),
        };
        let mut sink = FileSink::new(&c, 0, Some(std::slice::from_ref(&allowed))).unwrap();
        sink.write(b"{}").unwrap();
        let pending = sink.pre_commit(1).unwrap().unwrap();
        // Swapped once the sink is open: its files still go where it opened.
        std::fs::rename(&out, allowed.join("out.old")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &out).unwrap();
        sink.write(b"{}").unwrap();
        sink.finish().unwrap();
        assert!(visible(&elsewhere).is_empty());
        assert_eq!(visible(&allowed.join("out.old")).len(), 2);
        // A commit does not follow the symlink to rename files there.
        std::fs::write(elsewhere.join(".part-0-0.jsonl.inprogress"), b"theirs").unwrap();
        let e = FileSink::commit(&c, &pending).unwrap_err();
        assert!(e.to_string().contains("is not allowed"), "{e}");
        assert_eq!(visible(&elsewhere), [".part-0-0.jsonl.inprogress"]);
        // Nor does opening the sink again, or rolling back.
        let allowed = Some(std::slice::from_ref(&allowed));
        let e = FileSink::new(&c, 0, allowed).err().unwrap();
        assert!(e.to_string().contains("is not allowed"), "{e}");
        assert!(FileSink::abort_uncommitted(&c, allowed).is_err());
        assert_eq!(visible(&elsewhere), [".part-0-0.jsonl.inprogress"]);
    }

    #[test]
    fn files_become_visible_only_when_committed_and_commits_repeat_safely() {
        let dir = tempfile::tempdir().unwrap();
        let c = Connector {
            name: "file".into(),
            config: [("path".to_string(), dir.path().display().to_string())].into(),
        };
        let mut sink = FileSink::new(&c, 3, None).unwrap();
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
        FileSink::abort_uncommitted(&c, None).unwrap();
        assert_eq!(visible(dir.path()), ["part-3-0.jsonl", "part-3-1.jsonl"]);
        let mut again = FileSink::new(&c, 3, None).unwrap();
        again.write(b"{}").unwrap();
        again.finish().unwrap();
        assert!(dir.path().join(".part-3-2.jsonl.inprogress").exists());
        // A snapshot cannot make the sink rename files it did not write.
        std::fs::write(dir.path().join(".secret.inprogress"), b"x").unwrap();
        let evil = json!({ "dir": dir.path(), "files": ["secret"] });
        assert!(FileSink::commit(&c, &evil).is_err());
    }
}
