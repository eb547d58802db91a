//! Checkpoints, savepoints and restores of a running job (design note 0002).
//!
//! The coordinator runs on the thread that started the job. It triggers a checkpoint by
//! sending a barrier to every source task; sources snapshot their position and pass the
//! barrier downstream, tasks with several inputs align barriers (exactly-once) or only count
//! them (at-least-once), every task snapshots what it holds and acknowledges with the parts
//! it wrote. When every task has acknowledged (a finished task counts with its final parts),
//! the coordinator writes `_metadata`, commits the sinks' transactions and tells the tasks.
//! Tasks and coordinator only exchange messages, as they will across processes.

mod config;
mod coordinator;
mod restore;

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crossbeam_channel::Sender;
use weir_checkpoint::{list_checkpoints, Metadata, Storage, SubtaskState};
use weir_core::{Connector, JobGraph, NodeKind};

pub use config::{CheckpointConfig, CheckpointMode, RestartStrategy};
pub(crate) use coordinator::{Coordinator, Outcome};
pub use restore::Restore;

use crate::connectors;
use crate::JobError;

/// A checkpoint barrier, as it travels between tasks.
#[derive(Debug)]
pub struct BarrierInfo {
    /// Checkpoint id (ascending over a job's life).
    pub id: u64,
    /// When it was triggered.
    pub triggered: Instant,
    /// Where tasks write their state files.
    pub dir: Storage,
    /// A savepoint: canonical state only.
    pub savepoint: bool,
}

fn commit_pending(graph: &JobGraph, m: &Metadata) -> Result<(), JobError> {
    for (uid, op) in &m.operators {
        let Some(NodeKind::Sink(c)) = graph.node_by_uid(uid).map(|n| &graph.nodes[n].kind) else {
            continue;
        };
        for s in &op.subtasks {
            if let Some(p) = &s.pending {
                connectors::commit(c, p)?;
            }
        }
    }
    Ok(())
}

/// The next free checkpoint id under a job's directory.
pub(crate) fn next_checkpoint_id(job_dir: &Storage) -> Result<u64, JobError> {
    let (_, all) = list_checkpoints(job_dir).map_err(crate::RestoreError::Read)?;
    Ok(all.last().map_or(1, |n| n + 1))
}

/// A task's part of a snapshot: `(operator uid, subtask, state)`.
pub type Part = (String, u32, SubtaskState);

/// What tasks tell the coordinator.
pub enum Report {
    /// The task took its snapshot of checkpoint `id`.
    Ack {
        /// Checkpoint id.
        id: u64,
        /// Task index.
        task: usize,
        /// What it wrote.
        parts: Vec<Part>,
    },
    /// The task could not take its snapshot of checkpoint `id`.
    Decline {
        /// Checkpoint id.
        id: u64,
        /// Why.
        reason: String,
    },
    /// The task ended its input and finished; `parts` stand for it in later checkpoints.
    Finished {
        /// Task index.
        task: usize,
        /// Its final parts.
        parts: Vec<Part>,
    },
}

/// The coordinator's handles on one task.
pub struct TaskLink {
    /// Barrier triggers (source tasks).
    pub triggers: Option<Sender<Arc<BarrierInfo>>>,
    /// Completed checkpoint ids.
    pub notices: Sender<u64>,
}

/// Shared between the coordinator and the tasks of one attempt.
#[derive(Default)]
pub struct Control {
    /// Sources end their input now (stop with savepoint, draining).
    pub drain: AtomicBool,
    /// Where finishing tasks write full snapshots when draining.
    pub drain_target: Mutex<Option<Arc<BarrierInfo>>>,
}

/// The sink connectors of a graph, for cleaning up before a start.
pub(crate) fn sink_connectors(graph: &JobGraph) -> impl Iterator<Item = &Connector> {
    graph.nodes.iter().filter_map(|n| match &n.kind {
        NodeKind::Sink(c) => Some(c),
        _ => None,
    })
}
