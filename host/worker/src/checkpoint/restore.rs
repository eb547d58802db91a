//! Starting from a completed checkpoint or savepoint: checks against the new plan, the
//! parts each subtask restores, RocksDB files reused as they are.

use std::collections::HashMap;
use std::path::Path;

use weir_checkpoint::{
    get_file, read_metadata, shared_dir, CheckpointError, FileRef, Metadata, NativeState,
    OperatorState, Storage, SubtaskState,
};
use weir_core::{JobGraph, KeyGroupRange, StateKind};
use weir_state::{KeyedStateBackend, SnapshotError};
use weir_state_rocksdb::RocksDbStateBackend;

use super::commit_pending;
use crate::{JobError, RestoreError};

/// A completed checkpoint or savepoint to start from.
#[derive(Debug, Clone)]
pub struct Restore {
    /// Its directory.
    pub dir: Storage,
    /// Its `_metadata`.
    pub metadata: Metadata,
}

impl Restore {
    /// Reads the checkpoint or savepoint in `dir`.
    pub fn load(dir: Storage) -> Result<Self, CheckpointError> {
        let metadata = read_metadata(&dir)?;
        Ok(Restore { dir, metadata })
    }

    /// The parts an operator's subtask restores from, merged over the old subtasks when
    /// the parallelism changed. `Ok(None)`: the snapshot does not know the operator.
    pub(crate) fn subtask(
        &self,
        uid: &str,
        parallelism: u32,
        subtask: u32,
    ) -> Result<Option<SubtaskState>, JobError> {
        let Some(op) = self.metadata.operators.get(uid) else {
            return Ok(None);
        };
        if op.parallelism == parallelism {
            return Ok(op.subtasks.get(subtask as usize).cloned());
        }
        let finished = op.subtasks.iter().filter(|s| s.finished).count();
        if finished != 0 && finished != op.subtasks.len() {
            return Err(RestoreError::Mismatch(format!(
                "operator '{uid}' had finished in {finished} of its {} subtasks; such a \
                 snapshot restores only at the same parallelism",
                op.subtasks.len()
            ))
            .into());
        }
        Ok(Some(SubtaskState {
            finished: finished != 0,
            // The least progress of any old subtask (none if one had none).
            watermark: op
                .subtasks
                .iter()
                .map(|s| s.watermark)
                .collect::<Option<Vec<i64>>>()
                .and_then(|w| w.into_iter().min()),
            ..SubtaskState::default()
        }))
    }

    /// The RocksDB files of `uid`'s subtask that held exactly `range`, if the snapshot has
    /// them: a RocksDB task at unchanged key groups opens them as its database.
    pub(crate) fn native_for(
        &self,
        uid: &str,
        range: KeyGroupRange,
        states: &[weir_core::StateDescriptor],
    ) -> Option<&NativeState> {
        let op = self.metadata.operators.get(uid)?;
        if old_descriptors(op) != states {
            // Another state layout: the files' state indices mean something else.
            return None;
        }
        op.subtasks
            .iter()
            .find(|s| s.key_groups == Some([range.start, range.end]))
            .and_then(|s| s.native.as_ref())
    }

    /// Downloads (and checks) a RocksDB database's files into `into`; returns the timers.
    fn download_native(&self, n: &NativeState, into: &Path) -> Result<Vec<u8>, JobError> {
        let shared = shared_dir(&self.dir);
        let fail = RestoreError::Read;
        let local = |e: std::io::Error| RestoreError::Local {
            path: into.display().to_string(),
            message: e.to_string(),
        };
        std::fs::create_dir_all(into).map_err(local)?;
        for (dir, f) in n
            .shared
            .iter()
            .map(|f| (&shared, f))
            .chain(n.private.iter().map(|f| (&self.dir, f)))
        {
            let data = get_file(dir, f).map_err(fail)?;
            let name = f.path.rsplit('/').next().unwrap_or_default();
            std::fs::write(into.join(name), data).map_err(local)?;
        }
        Ok(get_file(&self.dir, &n.timers).map_err(fail)?)
    }

    /// A RocksDB backend over the snapshot's files of `n`, and the shared files it holds
    /// (by local name), which later checkpoints need not upload again.
    pub(crate) fn open_native(
        &self,
        n: &NativeState,
        states: Vec<weir_core::StateDescriptor>,
        range: KeyGroupRange,
        parent: &Path,
    ) -> Result<(RocksDbStateBackend, HashMap<String, FileRef>), JobError> {
        // Downloaded next to the database's directory, so the files move in by renaming.
        let local = |e: std::io::Error| RestoreError::Local {
            path: parent.display().to_string(),
            message: e.to_string(),
        };
        std::fs::create_dir_all(parent).map_err(local)?;
        let scratch = tempfile::Builder::new()
            .prefix("weir-restore-")
            .tempdir_in(parent)
            .map_err(local)?;
        let timers = self.download_native(n, scratch.path())?;
        let b = RocksDbStateBackend::from_native(states, range, parent, scratch.path(), &timers)
            .map_err(|e| RestoreError::Local {
                path: parent.display().to_string(),
                message: e.to_string(),
            })?;
        let uploaded = n
            .shared
            .iter()
            .map(|f| {
                let name = f.path.rsplit('/').next().unwrap_or_default().to_string();
                (name, f.clone())
            })
            .collect();
        Ok((b, uploaded))
    }

    /// Fills a fresh backend with the keyed state of operator `uid` in its key groups
    /// (RocksDB files of other key-group ranges are opened under `scratch` and exported).
    pub(crate) fn keyed_state(
        &self,
        uid: &str,
        backend: &mut dyn KeyedStateBackend,
        scratch: &Path,
    ) -> Result<(), JobError> {
        let Some(op) = self.metadata.operators.get(uid) else {
            return Ok(());
        };
        let range = backend.key_groups();
        for s in &op.subtasks {
            if let (Some([start, end]), Some(n)) = (s.key_groups, s.native.as_ref()) {
                if end <= range.start || range.end <= start || start > end {
                    continue;
                }
                let old = KeyGroupRange::new(start, end);
                let (db, _) = self.open_native(n, old_descriptors(op), old, scratch)?;
                let state = |error| RestoreError::State {
                    operator: uid.to_string(),
                    error,
                    file: None,
                };
                let data =
                    weir_state::take_snapshot(&db).map_err(|e| state(SnapshotError::State(e)))?;
                weir_state::restore_snapshot(backend, &data).map_err(state)?;
                continue;
            }
            let (Some([start, end]), Some(file)) = (s.key_groups, s.file.as_ref()) else {
                continue;
            };
            if start > end || end > self.metadata.max_parallelism {
                return Err(RestoreError::Read(CheckpointError::Corrupt {
                    file: self.dir.url_of(weir_checkpoint::METADATA_FILE),
                    message: format!("key groups {start}..{end} of '{uid}'"),
                })
                .into());
            }
            let old = KeyGroupRange::new(start, end);
            if old.end <= range.start || range.end <= old.start {
                continue;
            }
            let data = get_file(&self.dir, file).map_err(RestoreError::Read)?;
            weir_state::restore_snapshot(backend, &data).map_err(|e| match e {
                // The file is fine; the operator's states changed.
                SnapshotError::Incompatible { .. } | SnapshotError::State(_) => {
                    RestoreError::State {
                        operator: uid.to_string(),
                        error: e,
                        file: Some(self.dir.url_of(&file.path)),
                    }
                }
                SnapshotError::Format(_) | SnapshotError::Malformed { .. } => {
                    RestoreError::Read(CheckpointError::Corrupt {
                        file: self.dir.url_of(&file.path),
                        message: e.to_string(),
                    })
                }
            })?;
        }
        Ok(())
    }

    /// Every old subtask's source position (by subtask) and their parallelism for `uid`.
    pub(crate) fn source_positions(
        &self,
        uid: &str,
    ) -> Option<(Vec<Option<serde_json::Value>>, u32)> {
        let op = self.metadata.operators.get(uid)?;
        let positions: Vec<_> = op.subtasks.iter().map(|s| s.position.clone()).collect();
        positions
            .iter()
            .any(Option::is_some)
            .then_some((positions, op.parallelism))
    }

    /// Whether this snapshot's shared files are those of the job directory `job_dir`.
    pub(crate) fn shares_files_with(&self, job_dir: Option<&Storage>) -> bool {
        job_dir.is_some_and(|d| shared_dir(&self.dir).url() == d.child("shared").url())
    }

    /// Checks that the snapshot fits `graph`: same key groups, and every operator with
    /// state still exists (unless `allow_non_restored`).
    pub(crate) fn check(&self, graph: &JobGraph, allow_non_restored: bool) -> Result<(), JobError> {
        if self.metadata.max_parallelism != graph.max_parallelism {
            return Err(RestoreError::Mismatch(format!(
                "the snapshot has {} key groups (max parallelism), the job {}; the max \
                 parallelism of a job cannot change",
                self.metadata.max_parallelism, graph.max_parallelism
            ))
            .into());
        }
        for (uid, op) in &self.metadata.operators {
            if graph.node_by_uid(uid).is_none() && op.subtasks.iter().any(|s| s.has_state()) {
                if allow_non_restored {
                    tracing::warn!(operator = %uid, "state of a removed operator is not restored");
                } else {
                    return Err(RestoreError::Mismatch(format!(
                        "the snapshot holds state of operator '{uid}', which the job no \
                         longer has (pass --allow-non-restored-state to drop it)"
                    ))
                    .into());
                }
            }
        }
        Ok(())
    }

    /// Commits the sink transactions recorded in the snapshot (idempotent).
    pub(crate) fn commit_sinks(&self, graph: &JobGraph) -> Result<(), JobError> {
        commit_pending(graph, &self.metadata)
    }
}

/// The states an operator declared when the snapshot was taken.
fn old_descriptors(op: &OperatorState) -> Vec<weir_core::StateDescriptor> {
    op.states
        .iter()
        .map(|d| weir_core::StateDescriptor {
            name: d.name.clone(),
            kind: match d.kind.as_str() {
                "list" => StateKind::List,
                "map" => StateKind::Map,
                _ => StateKind::Value,
            },
            version: d.version,
            ttl: d.ttl_ms.map(|ttl_ms| weir_core::StateTtl {
                ttl_ms,
                refresh_on_read: d.refresh_on_read,
            }),
        })
        .collect()
}
