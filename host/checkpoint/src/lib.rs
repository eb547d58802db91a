//! Checkpoints and savepoints of weir jobs on object storage (design note 0002).
//!
//! A completed checkpoint is a directory `<root>/<job-id>/chk-<n>/` whose `_metadata` is
//! written last: a directory without it does not exist. A savepoint has the same layout in a
//! directory of its own and holds only canonical state files, so it restores into any state
//! backend and at any parallelism. Every state file is listed in `_metadata` with its size
//! and SHA-256, and checked before anything is restored.
//!
//! ```no_run
//! use weir_checkpoint::{latest_checkpoint, Storage};
//! let jobs = Storage::open("file:///var/weir/checkpoints")?;
//! if let Some((id, dir)) = latest_checkpoint(&jobs.child("word-count"))? {
//!     println!("latest checkpoint: {id} at {}", dir.url());
//! }
//! # Ok::<(), weir_checkpoint::CheckpointError>(())
//! ```
#![deny(missing_docs)]

mod storage;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
pub use storage::{Storage, StorageError};

/// The metadata format this build writes and reads.
pub const METADATA_FORMAT: u32 = 1;
/// Name of the file that completes a checkpoint or savepoint.
pub const METADATA_FILE: &str = "_metadata";
const HEADER: &str = "WEIR-METADATA";

/// A checkpoint or savepoint cannot be written or read.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A file does not match what the metadata says, or cannot be parsed.
    #[error("corrupt checkpoint file {file}: {message}")]
    Corrupt {
        /// The file's URL.
        file: String,
        /// What is wrong.
        message: String,
    },
}

/// Checkpoint or savepoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotKind {
    /// Taken periodically for recovery, owned and deleted by weir.
    Checkpoint,
    /// Taken on request, owned by the user.
    Savepoint,
}

/// A file of a checkpoint, as `_metadata` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRef {
    /// Path relative to the checkpoint's directory.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the content, lowercase hex.
    pub sha256: String,
}

/// A declared state, as recorded with a keyed operator's files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateDecl {
    /// Name.
    pub name: String,
    /// `value`, `list` or `map`.
    pub kind: String,
    /// Schema version.
    pub version: u32,
    /// Time to live in ms, if the state has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
    /// The TTL restarts on reads too.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub refresh_on_read: bool,
}

/// A source's event-time progress, restored so that lateness is judged as before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GeneratorState {
    /// Largest timestamp seen.
    pub max_timestamp: Option<i64>,
    /// Last watermark emitted.
    pub emitted: i64,
}

/// One subtask's part of an operator's snapshot.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SubtaskState {
    /// The task had ended its input and finished (it is restored finished).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub finished: bool,
    /// The task's input watermark.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark: Option<i64>,
    /// A watermark generator's progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator: Option<GeneratorState>,
    /// Keyed state: the key groups this subtask held, `[start, end)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_groups: Option<[u32; 2]>,
    /// Keyed state: the canonical state file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileRef>,
    /// A source's position (connector-specific).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<serde_json::Value>,
    /// A sink's transaction to commit when the checkpoint completes (connector-specific).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<serde_json::Value>,
    /// Keyed state as the RocksDB backend's own files (incremental checkpoints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub native: Option<NativeState>,
}

/// A RocksDB database as files: immutable SST files shared between checkpoints (paths
/// relative to the job's `shared/` directory), the database's other files and the timers
/// (paths relative to the checkpoint's directory).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NativeState {
    /// SST files under `shared/`.
    pub shared: Vec<FileRef>,
    /// MANIFEST, CURRENT, OPTIONS: small, written with every checkpoint.
    pub private: Vec<FileRef>,
    /// The timers, as a canonical snapshot holding only timers.
    pub timers: FileRef,
}

/// The directory of shared files of the job whose checkpoint is in `checkpoint_dir`.
pub fn shared_dir(checkpoint_dir: &Storage) -> Storage {
    checkpoint_dir.parent().child("shared")
}

impl SubtaskState {
    /// Whether restoring needs this part (anything beyond progress markers).
    pub fn has_state(&self) -> bool {
        self.file.is_some()
            || self.native.is_some()
            || self.position.is_some()
            || self.pending.is_some()
    }

    /// Adds the fields `other` sets.
    pub fn merge(&mut self, other: SubtaskState) {
        self.finished |= other.finished;
        self.watermark = other.watermark.or(self.watermark);
        self.generator = other.generator.or(self.generator);
        self.key_groups = other.key_groups.or(self.key_groups);
        self.file = other.file.or(self.file.take());
        self.position = other.position.or(self.position.take());
        self.pending = other.pending.or(self.pending.take());
        self.native = other.native.or(self.native.take());
    }
}

/// One operator's snapshot, found by uid on restore.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OperatorState {
    /// Its parallelism when the snapshot was taken.
    pub parallelism: u32,
    /// Keyed operators: the states they declared.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub states: Vec<StateDecl>,
    /// Sources and sinks: the connector's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connector: Option<String>,
    /// Per subtask, indexed by subtask.
    pub subtasks: Vec<SubtaskState>,
}

/// The content of `_metadata`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    /// [`METADATA_FORMAT`].
    pub format: u32,
    /// Checkpoint or savepoint.
    pub kind: SnapshotKind,
    /// Checkpoint id (savepoints: the id of the barrier that took it).
    pub id: u64,
    /// The job's name (from its plan).
    pub job_name: String,
    /// The job id it was written under.
    pub job_id: String,
    /// Wall-clock time of completion, ms since the epoch.
    pub completed_ms: i64,
    /// From trigger to completion, in ms.
    #[serde(default)]
    pub duration_ms: u64,
    /// Key groups of the job.
    pub max_parallelism: u32,
    /// The state backend that took it (`memory`, `rocksdb`).
    pub backend: String,
    /// Every task had finished: the job ended.
    pub finished: bool,
    /// By operator uid.
    pub operators: BTreeMap<String, OperatorState>,
}

impl Metadata {
    /// Bytes of state the snapshot references (state files, and a RocksDB database's files
    /// including SSTs shared with earlier checkpoints).
    pub fn state_bytes(&self) -> u64 {
        let subtasks = self.operators.values().flat_map(|o| &o.subtasks);
        subtasks
            .map(|s| {
                let file = s.file.as_ref().map_or(0, |f| f.size);
                let native = s.native.as_ref().map_or(0, |n| {
                    let files = n.shared.iter().chain(&n.private);
                    files.map(|f| f.size).sum::<u64>() + n.timers.size
                });
                file + native
            })
            .sum()
    }
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    let digest = Sha256::digest(data);
    let mut s = String::with_capacity(64);
    for b in digest {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Writes `data` as `rel` under `dir` and describes it for `_metadata`.
pub fn put_file(dir: &Storage, rel: &str, data: Vec<u8>) -> Result<FileRef, CheckpointError> {
    let file = FileRef {
        path: rel.to_string(),
        size: data.len() as u64,
        sha256: sha256_hex(&data),
    };
    dir.put(rel, data)?;
    Ok(file)
}

/// Reads a file `_metadata` lists and checks it against its size and hash.
pub fn get_file(dir: &Storage, file: &FileRef) -> Result<Vec<u8>, CheckpointError> {
    if file.path.split('/').any(|p| p == ".." || p.is_empty()) {
        return Err(CheckpointError::Corrupt {
            file: dir.url_of(METADATA_FILE),
            message: format!("unsafe path '{}'", file.path),
        });
    }
    let data = dir.get(&file.path)?;
    let corrupt = |message: String| CheckpointError::Corrupt {
        file: dir.url_of(&file.path),
        message,
    };
    if data.len() as u64 != file.size {
        return Err(corrupt(format!(
            "{} bytes, the metadata says {}",
            data.len(),
            file.size
        )));
    }
    if sha256_hex(&data) != file.sha256 {
        return Err(corrupt("content does not match its SHA-256".into()));
    }
    Ok(data)
}

/// Writes `_metadata` into `dir`, completing the checkpoint or savepoint.
pub fn write_metadata(dir: &Storage, m: &Metadata) -> Result<(), CheckpointError> {
    let json = serde_json::to_vec_pretty(m).expect("metadata serializes");
    let mut out = format!("{HEADER} {METADATA_FORMAT} sha256={}\n", sha256_hex(&json)).into_bytes();
    out.extend_from_slice(&json);
    dir.put(METADATA_FILE, out)?;
    Ok(())
}

/// Reads and checks `_metadata` of `dir`.
pub fn read_metadata(dir: &Storage) -> Result<Metadata, CheckpointError> {
    let data = dir.get(METADATA_FILE)?;
    let corrupt = |message: String| CheckpointError::Corrupt {
        file: dir.url_of(METADATA_FILE),
        message,
    };
    let nl = data
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| corrupt("no header line".into()))?;
    let header = std::str::from_utf8(&data[..nl]).map_err(|_| corrupt("bad header".into()))?;
    let mut parts = header.split(' ');
    if parts.next() != Some(HEADER) {
        return Err(corrupt("not a weir metadata file".into()));
    }
    let format = parts.next().unwrap_or_default();
    if format != METADATA_FORMAT.to_string() {
        return Err(corrupt(format!(
            "metadata format {format}; this build reads format {METADATA_FORMAT}"
        )));
    }
    let body = &data[nl + 1..];
    let want = parts
        .next()
        .and_then(|h| h.strip_prefix("sha256="))
        .unwrap_or_default();
    if sha256_hex(body) != want {
        return Err(corrupt(
            "content does not match its SHA-256 (truncated or modified)".into(),
        ));
    }
    let m: Metadata =
        serde_json::from_slice(body).map_err(|e| corrupt(format!("invalid JSON: {e}")))?;
    if m.format != METADATA_FORMAT {
        return Err(corrupt(format!("metadata format {}", m.format)));
    }
    Ok(m)
}

/// Ids of the completed checkpoints (`chk-<n>` with `_metadata`) under a job's directory,
/// and of every `chk-<n>` directory, complete or not; both ascending.
pub fn list_checkpoints(job_dir: &Storage) -> Result<(Vec<u64>, Vec<u64>), CheckpointError> {
    let mut complete = Vec::new();
    let mut all = Vec::new();
    for p in job_dir.list("")? {
        let mut parts = p.split('/');
        let Some(id) = parts
            .next()
            .and_then(|d| d.strip_prefix("chk-"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        all.push(id);
        if parts.next() == Some(METADATA_FILE) && parts.next().is_none() {
            complete.push(id);
        }
    }
    for v in [&mut complete, &mut all] {
        v.sort_unstable();
        v.dedup();
    }
    Ok((complete, all))
}

/// The directory of checkpoint `id` under a job's directory.
pub fn checkpoint_dir(job_dir: &Storage, id: u64) -> Storage {
    job_dir.child(&format!("chk-{id}"))
}

/// The latest completed checkpoint under a job's directory.
pub fn latest_checkpoint(job_dir: &Storage) -> Result<Option<(u64, Storage)>, CheckpointError> {
    let (complete, _) = list_checkpoints(job_dir)?;
    Ok(complete.last().map(|&id| (id, checkpoint_dir(job_dir, id))))
}

/// Keeps the `retain` newest completed checkpoints; deletes older ones and every
/// incomplete one older than the newest completed.
pub fn prune_checkpoints(job_dir: &Storage, retain: usize) -> Result<(), CheckpointError> {
    let (complete, all) = list_checkpoints(job_dir)?;
    let Some(&newest) = complete.last() else {
        return Ok(());
    };
    let keep: Vec<u64> = complete.iter().rev().take(retain.max(1)).copied().collect();
    for id in all {
        if id < newest && !keep.contains(&id) {
            job_dir.delete_all(&format!("chk-{id}"))?;
        }
    }
    // Shared files no retained checkpoint references.
    let shared = job_dir.child("shared");
    let existing = shared.list("")?;
    if existing.is_empty() {
        return Ok(());
    }
    let mut referenced = std::collections::BTreeSet::new();
    for id in keep {
        let m = read_metadata(&checkpoint_dir(job_dir, id))?;
        for op in m.operators.values() {
            for s in &op.subtasks {
                for f in s.native.iter().flat_map(|n| &n.shared) {
                    referenced.insert(f.path.clone());
                }
            }
        }
    }
    for path in existing {
        if !referenced.contains(&path) {
            shared.delete(&path)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(id: u64) -> Metadata {
        let mut operators = BTreeMap::new();
        operators.insert(
            "count".to_string(),
            OperatorState {
                parallelism: 1,
                subtasks: vec![SubtaskState {
                    key_groups: Some([0, 128]),
                    ..SubtaskState::default()
                }],
                ..OperatorState::default()
            },
        );
        Metadata {
            format: METADATA_FORMAT,
            kind: SnapshotKind::Checkpoint,
            id,
            job_name: "j".into(),
            job_id: "j".into(),
            completed_ms: 0,
            duration_ms: 0,
            max_parallelism: 128,
            backend: "memory".into(),
            finished: false,
            operators,
        }
    }

    #[test]
    fn metadata_round_trips_and_damage_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::open(dir.path().to_str().unwrap()).unwrap();
        let chk = checkpoint_dir(&s, 3);
        write_metadata(&chk, &metadata(3)).unwrap();
        assert_eq!(read_metadata(&chk).unwrap(), metadata(3));
        let path = dir.path().join("chk-3/_metadata");
        let mut bytes = std::fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n - 5] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let e = read_metadata(&chk).unwrap_err().to_string();
        assert!(
            e.contains("corrupt checkpoint file") && e.contains("chk-3/_metadata"),
            "{e}"
        );
    }

    #[test]
    fn files_are_checked_against_the_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::open(dir.path().to_str().unwrap()).unwrap();
        let f = put_file(&s, "op/0.state", b"state bytes".to_vec()).unwrap();
        assert_eq!(get_file(&s, &f).unwrap(), b"state bytes");
        std::fs::write(dir.path().join("op/0.state"), b"state bytez").unwrap();
        let e = get_file(&s, &f).unwrap_err().to_string();
        assert!(e.contains("op/0.state") && e.contains("SHA-256"), "{e}");
        std::fs::write(dir.path().join("op/0.state"), b"state").unwrap();
        assert!(get_file(&s, &f).unwrap_err().to_string().contains("bytes"));
        let evil = FileRef {
            path: "../x".into(),
            ..f
        };
        assert!(get_file(&s, &evil).is_err());
    }

    #[test]
    fn latest_and_retention() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::open(dir.path().to_str().unwrap()).unwrap();
        for id in 1..=4 {
            let chk = checkpoint_dir(&s, id);
            chk.put("op/0.state", vec![1]).unwrap();
            if id != 3 {
                write_metadata(&chk, &metadata(id)).unwrap();
            }
        }
        checkpoint_dir(&s, 5).put("op/0.state", vec![1]).unwrap();
        s.put("shared/op/unreferenced.sst", vec![1]).unwrap();
        assert_eq!(latest_checkpoint(&s).unwrap().unwrap().0, 4);
        prune_checkpoints(&s, 2).unwrap();
        assert!(s.list("shared").unwrap().is_empty());
        let (complete, all) = list_checkpoints(&s).unwrap();
        assert_eq!(complete, [2, 4]);
        assert_eq!(
            all,
            [2, 4, 5],
            "an in-flight newer checkpoint is left alone"
        );
    }
}
