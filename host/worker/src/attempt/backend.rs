//! A subtask's keyed state: opened on the job's backend and restored from the snapshot,
//! re-using a RocksDB checkpoint's files as they are when the key groups did not change.

use std::collections::HashMap;

use weir_checkpoint::{FileRef, Storage};
use weir_core::{KeyGroupRange, Node};
use weir_state::{KeyedStateBackend, MemoryStateBackend, TtlBackend};
use weir_state_rocksdb::RocksDbStateBackend;

use crate::checkpoint::Restore;
use crate::{JobError, StateBackendKind};

/// A subtask's keyed state, opened.
pub(super) struct Opened {
    pub backend: Box<dyn KeyedStateBackend>,
    /// Shared files the database already has in the job's storage, by local name (they
    /// are not uploaded again).
    pub uploaded: HashMap<String, FileRef>,
}

/// Opens the keyed state of `node` for `range`, restored from `restore` if given.
pub(super) fn open(
    node: &Node,
    restore: Option<&Restore>,
    job_dir: Option<&Storage>,
    kind: &StateBackendKind,
    range: KeyGroupRange,
) -> Result<Opened, JobError> {
    let states = node.states.clone();
    let uid = &node.uid;
    let scratch = match kind {
        StateBackendKind::RocksDb(dir) => dir.clone(),
        StateBackendKind::Memory => std::env::temp_dir(),
    };
    let native = restore.and_then(|r| r.native_for(uid, range, &states).map(|n| (r, n)));
    let mut uploaded = HashMap::new();
    let backend: Box<dyn KeyedStateBackend> = match (kind, native) {
        (StateBackendKind::RocksDb(dir), Some((r, n))) => {
            // Same key groups and states: the checkpoint's files are the database.
            let (b, up) = r.open_native(n, states, range, dir)?;
            // Its files are ours only if they are in this job's shared directory;
            // otherwise the next checkpoint uploads them here.
            if r.shares_files_with(job_dir) {
                uploaded = up;
            }
            Box::new(b)
        }
        (StateBackendKind::Memory, _) => {
            let mut b = MemoryStateBackend::new(states, range);
            if let Some(r) = restore {
                r.keyed_state(uid, &mut b, &scratch)?;
            }
            Box::new(b)
        }
        (StateBackendKind::RocksDb(dir), None) => {
            let mut b =
                RocksDbStateBackend::new(states, range, dir).map_err(|e| JobError::Resources {
                    what: "cannot open the task's state",
                    message: e.to_string(),
                })?;
            if let Some(r) = restore {
                r.keyed_state(uid, &mut b, &scratch)?;
            }
            Box::new(b)
        }
    };
    // States with a TTL: stamped and checked on every access.
    let backend: Box<dyn KeyedStateBackend> =
        if backend.descriptors().iter().any(|d| d.ttl.is_some()) {
            Box::new(TtlBackend::new(backend))
        } else {
            backend
        };
    Ok(Opened { backend, uploaded })
}
