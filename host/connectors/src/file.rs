//! `file` source: lines of text files, one split per file.
//!
//! `path` names a file or a directory (its regular files, sorted by name, are the splits);
//! split `i` is read by subtask `i % parallelism`, so one file is always read in order by one
//! subtask. `format` is `lines` (each line as UTF-8 text) or `json` (each non-empty line is a
//! JSON document; the guest decodes it). `rate` limits each subtask to that many records per
//! second.
//!
//! Every file is opened as it is reached, beneath the allowed directory the path lies in and
//! following no symlink (see [`crate::paths`]), and refused unless it is a regular file: a
//! FIFO or a device would block or never end. Files are read on a thread of their own, so
//! that a read that blocks (a stalled network filesystem) never holds up the task: a batch
//! returns after at most [`MAX_WAIT`], and the task sees a cancellation between batches.
//!
//! The position is the byte offset reached in each split, by file name, so a checkpoint
//! taken at one parallelism restores at any other: each new subtask looks up its own splits.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use rustix::fs::{FileType, Mode, OFlags};
use serde_json::{json, Value};
use weir_core::frame::{RecordBatch, RecordRef};
use weir_core::Connector;

use super::{parse, ConnectorError, SourceReader, Throttle};
use crate::paths::{self, Anchored};

const NAME: &str = "file";

/// Bytes read at a time.
const CHUNK: u64 = 256 << 10;

/// The longest a batch waits for the file thread before returning what it has.
const MAX_WAIT: Duration = Duration::from_millis(100);

/// One subtask of a `file` source.
pub struct FileReader {
    path: Anchored,
    /// Splits not started yet, last first.
    splits: Vec<Split>,
    current: Option<Current>,
    /// Offset to start each split at (restored), by split name.
    start_at: BTreeMap<String, u64>,
    /// Splits read to the end, by name.
    done: Vec<String>,
    skip_blank: bool,
    /// What the file thread sends; started at the first batch (after a restore).
    fetched: Option<Receiver<Fetched>>,
    /// The chunk being split into lines, and how far.
    chunk: Vec<u8>,
    at: usize,
    /// The start of a line that goes on in the next chunk.
    carry: Vec<u8>,
    throttle: Throttle,
}

/// A file to read.
#[derive(Clone)]
struct Split {
    /// Its name in positions: its file name.
    name: String,
    /// Beneath the source's path (empty when the path is the file).
    sub: PathBuf,
}

struct Current {
    name: String,
    offset: u64,
}

/// What the file thread sends, in order: for each split, `Started`, its bytes, `Ended`.
enum Fetched {
    Started,
    Bytes(Vec<u8>),
    Ended,
    Failed(ConnectorError),
}

fn path_error(source: paths::PathError) -> ConnectorError {
    ConnectorError::Path {
        connector: NAME,
        source,
    }
}

fn io_at(path: &Path) -> impl Fn(std::io::Error) -> ConnectorError + '_ {
    move |source| ConnectorError::Io {
        connector: NAME,
        path: path.display().to_string(),
        source,
    }
}

/// Opens `sub` beneath `path` without blocking (a FIFO with no writer would) and refuses
/// anything but `want`, before any read.
fn open_checked(
    path: &Anchored,
    sub: &Path,
    want: &[FileType],
) -> Result<(OwnedFd, FileType), ConnectorError> {
    let fd = path
        .open(sub, OFlags::RDONLY | OFlags::NONBLOCK, Mode::empty())
        .map_err(path_error)?;
    let shown = path.shown_at(sub);
    let kind = paths::file_type(fd.as_fd()).map_err(io_at(&shown))?;
    if !want.contains(&kind) {
        return Err(ConnectorError::Config {
            connector: NAME,
            message: paths::not_regular(&shown),
        });
    }
    Ok((fd, kind))
}

impl FileReader {
    /// Lists the splits and picks this subtask's; the files must lie under `allowed` (when
    /// given).
    pub fn new(
        c: &Connector,
        subtask: u32,
        parallelism: u32,
        allowed: Option<&[PathBuf]>,
    ) -> Result<Self, ConnectorError> {
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
        let anchored = Anchored::new(&path, allowed).map_err(path_error)?;
        let (fd, kind) = open_checked(
            &anchored,
            Path::new(""),
            &[FileType::RegularFile, FileType::Directory],
        )?;
        let mut splits = if kind == FileType::Directory {
            let mut files = Vec::new();
            for (name, kind) in paths::entries(fd.as_fd()).map_err(io_at(&path))? {
                let shown = name.to_string_lossy().into_owned();
                // Symlinks, FIFOs and devices are no splits; dot-files are hidden.
                if kind == FileType::RegularFile && !shown.starts_with('.') {
                    files.push(Split {
                        name: shown,
                        sub: PathBuf::from(name),
                    });
                }
            }
            files
        } else {
            vec![Split {
                name: path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                sub: PathBuf::new(),
            }]
        };
        splits.sort_by(|a, b| a.sub.cmp(&b.sub));
        let splits = splits
            .into_iter()
            .enumerate()
            .filter(|(i, _)| *i as u32 % parallelism == subtask)
            .map(|(_, s)| s)
            .rev()
            .collect();
        Ok(FileReader {
            path: anchored,
            splits,
            current: None,
            start_at: BTreeMap::new(),
            done: Vec::new(),
            skip_blank,
            fetched: None,
            chunk: Vec::new(),
            at: 0,
            carry: Vec::new(),
            throttle: Throttle::new(parse(NAME, c, "rate")?),
        })
    }

    /// Starts the file thread on the splits left, each from its restored offset.
    fn start_fetching(&mut self) {
        let (tx, rx) = crossbeam_channel::bounded(2);
        let todo: Vec<(Split, u64)> = self
            .splits
            .iter()
            .rev()
            .map(|s| (s.clone(), self.start_at.get(&s.name).copied().unwrap_or(0)))
            .collect();
        let path = self.path.clone();
        let spawned = std::thread::Builder::new()
            .name("weir-file-source".into())
            .spawn(move || fetch(&path, todo, &tx));
        if let Err(e) = spawned {
            // Reported at the next batch, as the thread would have.
            let (tx, failed) = crossbeam_channel::bounded(1);
            let _ = tx.send(Fetched::Failed(io_at(self.path.shown())(e)));
            self.fetched = Some(failed);
        } else {
            self.fetched = Some(rx);
        }
    }
}

/// The file thread: reads the splits in order, in chunks, into `tx`; stops when the reader
/// is dropped (its next send fails), or at the first error.
fn fetch(path: &Anchored, todo: Vec<(Split, u64)>, tx: &Sender<Fetched>) {
    for (split, offset) in todo {
        let read = (|| -> Result<(), ConnectorError> {
            let shown = path.shown_at(&split.sub);
            let (fd, _) = open_checked(path, &split.sub, &[FileType::RegularFile])?;
            let mut f = File::from(fd);
            if offset > 0 {
                f.seek(SeekFrom::Start(offset)).map_err(io_at(&shown))?;
            }
            if tx.send(Fetched::Started).is_err() {
                return Ok(());
            }
            loop {
                let mut bytes = Vec::with_capacity(CHUNK as usize);
                let n = (&mut f)
                    .take(CHUNK)
                    .read_to_end(&mut bytes)
                    .map_err(io_at(&shown))?;
                if n == 0 {
                    let _ = tx.send(Fetched::Ended);
                    return Ok(());
                }
                if tx.send(Fetched::Bytes(bytes)).is_err() {
                    return Ok(());
                }
            }
        })();
        if let Err(e) = read {
            let _ = tx.send(Fetched::Failed(e));
            return;
        }
    }
}

/// Pushes `line` (with its line end) as a record, unless it is blank and those are skipped;
/// answers whether it did.
fn push_line(out: &mut RecordBatch, edge: u32, line: &[u8], skip_blank: bool) -> bool {
    let mut line = line;
    if let Some(l) = line.strip_suffix(b"\n") {
        line = l.strip_suffix(b"\r").unwrap_or(l);
    }
    if skip_blank && line.iter().all(u8::is_ascii_whitespace) {
        return false;
    }
    out.push(RecordRef {
        edge,
        timestamp: None,
        key: None,
        value: line,
    });
    true
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
        let deadline = Instant::now() + MAX_WAIT;
        let mut n = 0;
        while n < max {
            // The next whole line of the current chunk, if there is one.
            if let Some(c) = self.current.as_mut() {
                let rest = &self.chunk[self.at..];
                if let Some(i) = memchr::memchr(b'\n', rest) {
                    let line = if self.carry.is_empty() {
                        &rest[..=i]
                    } else {
                        self.carry.extend_from_slice(&rest[..=i]);
                        &self.carry
                    };
                    c.offset += line.len() as u64;
                    n += usize::from(push_line(out, edge, line, self.skip_blank));
                    self.at += i + 1;
                    self.carry.clear();
                    continue;
                }
                self.carry.extend_from_slice(rest);
                self.at = self.chunk.len();
            }
            if self.fetched.is_none() {
                if self.splits.is_empty() {
                    self.throttle.emitted(n);
                    return Ok(false);
                }
                self.start_fetching();
            }
            let fetched = self.fetched.as_ref().expect("just started");
            match fetched.recv_deadline(deadline) {
                Ok(Fetched::Started) => {
                    let split = self.splits.pop().expect("the thread reads these splits");
                    let offset = self.start_at.get(&split.name).copied().unwrap_or(0);
                    self.current = Some(Current {
                        name: split.name,
                        offset,
                    });
                }
                Ok(Fetched::Bytes(bytes)) => {
                    self.chunk = bytes;
                    self.at = 0;
                }
                Ok(Fetched::Ended) => {
                    let mut c = self.current.take().expect("a split was started");
                    // The last line, without a line end.
                    if !self.carry.is_empty() {
                        c.offset += self.carry.len() as u64;
                        n += usize::from(push_line(out, edge, &self.carry, self.skip_blank));
                        self.carry.clear();
                    }
                    self.done.push(c.name);
                }
                Ok(Fetched::Failed(e)) => return Err(e),
                // Slow: the task gets what there is, and a chance to see a cancellation.
                Err(RecvTimeoutError::Timeout) => break,
                // Every split was read.
                Err(RecvTimeoutError::Disconnected) if self.is_empty() => {
                    self.throttle.emitted(n);
                    return Ok(false);
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(io_at(self.path.shown())(std::io::Error::other(
                        "the thread reading the files stopped",
                    )))
                }
            }
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
        let mine: Vec<String> = self.splits.iter().map(|s| s.name.clone()).collect();
        self.splits.retain(|s| !done.contains(&s.name));
        self.done = done.into_iter().filter(|d| mine.contains(d)).collect();
        self.start_at.retain(|name, _| mine.contains(name));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(path: &Path, format: &str) -> Connector {
        Connector {
            name: "file".into(),
            config: [
                ("path".to_string(), path.display().to_string()),
                ("format".to_string(), format.to_string()),
            ]
            .into(),
        }
    }

    /// Reads batches of up to `max` until `stop` says so or the source ends.
    fn read(
        r: &mut FileReader,
        max: usize,
        mut stop: impl FnMut(&[String]) -> bool,
    ) -> Result<Vec<String>, ConnectorError> {
        let mut lines = Vec::new();
        let mut batch = RecordBatch::default();
        loop {
            batch.clear();
            let more = r.read_batch(&mut batch, 0, max)?;
            for rec in batch.iter() {
                lines.push(String::from_utf8(rec.unwrap().value.to_vec()).unwrap());
            }
            if !more || stop(&lines) {
                return Ok(lines);
            }
        }
    }

    fn mkfifo(path: &Path) {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            path,
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
    }

    #[test]
    fn lines_across_chunks_and_restores_from_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in");
        std::fs::create_dir_all(&input).unwrap();
        // Longer than several chunks; CRLF, blank lines, a last line without its end.
        let mut text = String::new();
        let mut expected = Vec::new();
        for i in 0..60_000 {
            let line = format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(i % 17));
            text.push_str(&line);
            text.push_str(if i % 3 == 0 { "\r\n" } else { "\n" });
            if i % 1000 == 0 {
                text.push_str("  \n");
            }
            expected.push(line);
        }
        text.push_str("{\"last\":true}");
        expected.push("{\"last\":true}".into());
        std::fs::write(input.join("a.jsonl"), &text).unwrap();
        std::fs::write(input.join(".hidden"), "not read\n").unwrap();
        std::os::unix::fs::symlink(input.join("a.jsonl"), input.join("b-link")).unwrap();
        let c = source(&input, "json");
        let allowed = [dir.path().to_path_buf()];
        let mut r = FileReader::new(&c, 0, 1, Some(&allowed)).unwrap();
        let first = read(&mut r, 1000, |l| l.len() >= 20_000).unwrap();
        let position = r.position();
        drop(r);
        let mut again = FileReader::new(&c, 0, 1, Some(&allowed)).unwrap();
        again.restore(&[Some(position)], 1).unwrap();
        let rest = read(&mut again, 1000, |_| false).unwrap();
        assert_eq!([first, rest].concat(), expected);
        assert_eq!(again.position(), json!({"splits": {"a.jsonl": "done"}}));
    }

    #[test]
    fn fifos_and_devices_are_refused_before_any_read() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        mkfifo(&fifo);
        let started = Instant::now();
        for path in [fifo.as_path(), Path::new("/dev/zero")] {
            let e = FileReader::new(&source(path, "lines"), 0, 1, None)
                .err()
                .unwrap();
            assert!(e.to_string().contains("not a regular file"), "{e}");
        }
        // A file that becomes a FIFO before it is reached: refused as it is opened.
        let input = dir.path().join("in");
        std::fs::create_dir_all(&input).unwrap();
        std::fs::write(input.join("a"), "x\n").unwrap();
        let mut r = FileReader::new(&source(&input, "lines"), 0, 1, None).unwrap();
        std::fs::remove_file(input.join("a")).unwrap();
        mkfifo(&input.join("a"));
        let e = read(&mut r, 10, |_| false).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(5), "it blocked");
    }

    #[test]
    fn a_file_swapped_for_a_symlink_while_earlier_files_are_read_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let allowed = dir.path().join("acme");
        let input = allowed.join("in");
        std::fs::create_dir_all(&input).unwrap();
        // Large enough that the second file is not opened yet after the first batch.
        let a: String = (0..200_000).map(|i| format!("a{i}\n")).collect();
        std::fs::write(input.join("a"), a).unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "SECRET\n").unwrap();
        for swap_dir in [false, true] {
            let _ = std::fs::remove_file(input.join("b"));
            std::fs::write(input.join("b"), "b\n").unwrap();
            let mut r = FileReader::new(
                &source(&input, "lines"),
                0,
                1,
                Some(std::slice::from_ref(&allowed)),
            )
            .unwrap();
            let mut seen = read(&mut r, 100, |_| true).unwrap();
            if swap_dir {
                // The whole directory, for one holding a file of the same name.
                let elsewhere = dir.path().join("elsewhere");
                std::fs::create_dir_all(&elsewhere).unwrap();
                std::fs::copy(&secret, elsewhere.join("b")).unwrap();
                std::fs::rename(&input, allowed.join("in.old")).unwrap();
                std::os::unix::fs::symlink(&elsewhere, &input).unwrap();
            } else {
                std::fs::remove_file(input.join("b")).unwrap();
                std::os::unix::fs::symlink(&secret, input.join("b")).unwrap();
            }
            let e = match read(&mut r, 10_000, |_| false) {
                Ok(lines) => {
                    seen.extend(lines);
                    panic!("read to the end (swap_dir {swap_dir})")
                }
                Err(e) => e,
            };
            assert!(e.to_string().contains("is not allowed"), "{e}");
            assert!(!e.to_string().contains("secret"), "{e}");
            assert!(!seen.iter().any(|l| l.contains("SECRET")));
        }
    }
}
