//! What a running job reports to whoever runs it.
//!
//! `weir run` ignores these; in a session cluster the TaskManager forwards them to the job's
//! master as messages, so nothing here refers to the job's threads or memory except
//! [`LiveCounters`], which the TaskManager samples into plain numbers before sending.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use weir_core::JobGraph;

use crate::plan::{ExecutionPlan, Route};
use crate::task::JobCounters;
use crate::OperatorSummary;

/// One thing that happened to a running job.
#[derive(Debug, Clone)]
pub enum JobEvent {
    /// An attempt's tasks are all running (attempt 0 is the first run).
    Running {
        /// Restarts before this attempt.
        attempt: u32,
        /// The attempt's record counters, live.
        counters: LiveCounters,
    },
    /// A task failed and the job restarts after `delay`.
    Restarting {
        /// The restart about to happen (1 is the first).
        attempt: u32,
        /// What failed.
        cause: String,
        /// Wait before the restart.
        delay: Duration,
    },
    /// A checkpoint or savepoint completed.
    Snapshot(SnapshotStats),
    /// A checkpoint or savepoint failed or expired (the job goes on unless it was the
    /// savepoint to stop with).
    SnapshotFailed {
        /// Its id.
        id: u64,
        /// A savepoint, not a checkpoint.
        savepoint: bool,
        /// The savepoint to stop with.
        stop: bool,
        /// Why.
        reason: String,
    },
}

/// A completed checkpoint or savepoint.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SnapshotStats {
    /// Checkpoint id (a savepoint: the id of its barrier).
    pub id: u64,
    /// A savepoint, not a checkpoint.
    pub savepoint: bool,
    /// Its directory, as a URL.
    pub location: String,
    /// From trigger to completion.
    pub duration_ms: u64,
    /// Bytes of state it references.
    pub state_bytes: u64,
    /// Wall-clock time of completion, ms since the epoch.
    pub completed_ms: i64,
}

/// The record counters of a running attempt.
#[derive(Clone)]
pub struct LiveCounters {
    pub(crate) graph: Arc<JobGraph>,
    pub(crate) plan: Arc<ExecutionPlan>,
    pub(crate) counters: Arc<JobCounters>,
}

impl std::fmt::Debug for LiveCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveCounters")
            .field("job", &self.graph.name)
            .finish_non_exhaustive()
    }
}

/// One operator's progress at one moment.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OperatorProgress {
    /// Records in and out so far.
    pub records: OperatorSummary,
    /// The smallest input watermark over its subtasks (`None` until every subtask has one;
    /// sources, which make watermarks rather than receive them, have none).
    pub watermark: Option<i64>,
    /// Time its chain's subtasks have spent blocked on full downstream channels, summed
    /// (operators chained together share it).
    pub blocked: Duration,
}

/// What a job's guest instances have used so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct JobUsage {
    /// Time in guest code, over all its instances.
    pub guest_time: Duration,
    /// Guest linear memory held now, over all its instances.
    pub guest_memory_bytes: u64,
}

impl LiveCounters {
    /// Every operator's counts so far, in topological order.
    pub fn operators(&self) -> Vec<OperatorProgress> {
        let watermarks = self.vertex_watermarks();
        let blocked = self.per_vertex(&self.counters.blocked_nanos);
        operator_summaries(&self.graph, &self.plan, &self.counters)
            .into_iter()
            .map(|records| {
                let v = self
                    .graph
                    .node_by_uid(&records.uid)
                    .map(|n| self.plan.vertex_of[n]);
                OperatorProgress {
                    records,
                    watermark: v.and_then(|v| watermarks[v]),
                    blocked: Duration::from_nanos(v.map_or(0, |v| blocked[v])),
                }
            })
            .collect()
    }

    /// Time in guest code and guest memory, over the whole attempt.
    pub fn usage(&self) -> JobUsage {
        let sum = |v: &[std::sync::atomic::AtomicU64]| {
            v.iter().map(|a| a.load(Ordering::Relaxed)).sum::<u64>()
        };
        JobUsage {
            guest_time: Duration::from_nanos(sum(&self.counters.guest_nanos)),
            guest_memory_bytes: sum(&self.counters.guest_memory),
        }
    }

    /// Per vertex, the range of its task indices (tasks are numbered vertex by vertex).
    fn vertex_tasks(&self) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
        let mut task = 0;
        self.plan.vertices.iter().map(move |v| {
            let range = task..task + v.parallelism as usize;
            task = range.end;
            range
        })
    }

    /// Per vertex, the sum of a per-task counter over its tasks.
    fn per_vertex(&self, per_task: &[std::sync::atomic::AtomicU64]) -> Vec<u64> {
        self.vertex_tasks()
            .map(|tasks| {
                tasks
                    .filter_map(|t| per_task.get(t))
                    .map(|a| a.load(Ordering::Relaxed))
                    .sum()
            })
            .collect()
    }

    /// Per vertex, the minimum of its tasks' input watermarks.
    fn vertex_watermarks(&self) -> Vec<Option<i64>> {
        self.vertex_tasks()
            .map(|tasks| {
                let w = tasks
                    .filter_map(|t| self.counters.watermarks.get(t))
                    .map(|w| w.load(Ordering::Relaxed))
                    .min()?;
                (w > i64::MIN).then_some(w)
            })
            .collect()
    }
}

/// Records in and out of every operator, in topological order.
pub(crate) fn operator_summaries(
    graph: &JobGraph,
    plan: &ExecutionPlan,
    counters: &JobCounters,
) -> Vec<OperatorSummary> {
    let node_in = |n: usize| counters.node_in[n].load(Ordering::Relaxed);
    graph
        .topological_order()
        .expect("validated")
        .into_iter()
        .map(|n| {
            let records_out = graph
                .edges
                .iter()
                .enumerate()
                .filter(|(_, e)| e.source == n)
                .map(|(i, e)| match plan.routes[i] {
                    Route::Chained => node_in(e.target),
                    _ => counters.edges[i].load(Ordering::Relaxed),
                })
                .sum();
            OperatorSummary {
                uid: graph.nodes[n].uid.clone(),
                vertex: plan.vertex_of[n],
                parallelism: graph.nodes[n].parallelism,
                records_in: node_in(n),
                records_out,
            }
        })
        .collect()
}
