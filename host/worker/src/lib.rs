//! Runs weir job graphs in one process: tasks, exchanges, watermarks, timers, connectors.
//!
//! [`run_job`] asks a component for its plan, chains it into vertices ([`plan`]), opens one
//! guest instance per subtask, wires the subtasks with bounded channels (a slow operator
//! backpressures its sources), and runs every subtask on its own thread until the input
//! ends, the job is cancelled, or a task fails — in which case the whole job stops with an
//! error that names the failing operator.
//!
//! ```no_run
//! use std::sync::Arc;
//! use weir_runtime::{Runtime, RuntimeConfig};
//! use weir_worker::{run_job, JobLink, JobOptions};
//!
//! let runtime = Runtime::new(RuntimeConfig::default())?;
//! let component = runtime.load(&std::fs::read("word_count.wasm")?)?;
//! let options = JobOptions::new(2).arg("input", "in.txt").arg("output", "out");
//! let summary = run_job(&component, &options, JobLink::unsteered())?;
//! println!("{summary}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

mod attempt;
mod checkpoint;
mod control;
mod error;
mod events;
mod exchange;
mod plan;
mod task;

use weir_connectors as connectors;
use weir_connectors::paths;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use checkpoint::{CheckpointConfig, CheckpointMode, RestartStrategy, Restore};
use control::Requests;
pub use control::{JobCommand, JobHandle, JobLink};
pub use error::{CheckpointFailure, JobError, RestoreError, TaskError};
pub use events::{JobEvent, JobUsage, LiveCounters, OperatorProgress, SnapshotStats};
use plan::ExecutionPlan;
use weir_checkpoint::Storage;
use weir_core::{JobGraph, NodeKind};
use weir_runtime::JobComponent;

/// What to run and how: a plain description (serde-encodable, as a TaskManager in another
/// process will receive it). What steers the job while it runs is its [`JobLink`].
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct JobOptions {
    /// Default parallelism of every operator.
    pub parallelism: u32,
    /// Job arguments (`--arg k=v`).
    pub args: Vec<(String, String)>,
    /// Batches buffered per channel before the sender blocks.
    pub channel_capacity: usize,
    /// Checkpointing.
    pub checkpoints: CheckpointConfig,
    /// The job's id under the checkpoint root (default: its name).
    pub job_id: Option<String>,
    /// What to do when a task fails (default: exponential backoff when checkpointing,
    /// otherwise none).
    pub restart: Option<RestartStrategy>,
    /// Start from the latest completed checkpoint under the checkpoint root, if any.
    pub resume: bool,
    /// Start from this savepoint (or retained checkpoint) directory.
    pub from_savepoint: Option<Storage>,
    /// Drop state of operators the job no longer has instead of failing.
    pub allow_non_restored_state: bool,
    /// Where savepoints are written (stop-with-savepoint and savepoints the job goes on
    /// after).
    pub savepoint_dir: Option<Storage>,
    /// Where keyed state lives.
    pub state_backend: StateBackendKind,
    /// A stop whose savepoint fails leaves the job running, as Flink does (otherwise the
    /// attempt fails, and a restart stops it again).
    pub keep_running_if_stop_fails: bool,
    /// When set, file connectors may only use paths under these directories (checked with
    /// symlinks and `..` resolved, again at every start of the job's tasks).
    pub allowed_paths: Option<Vec<std::path::PathBuf>>,
    /// Standard output is shared with other jobs (a session cluster): print sinks keep each
    /// record on one line and print at most the job's rate of lines (its guest-log budget).
    pub shared_output: bool,
}

/// The limits on a job's keyed state, enforced as it grows.
#[derive(Debug, Clone)]
pub struct StateLimits {
    /// The job's, its tenant's, the server's.
    pub accounts: Vec<Arc<weir_state::StateAccount>>,
    /// The largest value (a map entry: user key and value) one write may store.
    pub max_value: u64,
}

impl Default for StateLimits {
    fn default() -> Self {
        StateLimits {
            accounts: Vec::new(),
            max_value: u64::MAX,
        }
    }
}

/// Where keyed state lives; the guest cannot tell.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum StateBackendKind {
    /// On the heap.
    Memory,
    /// In RocksDB databases under this local directory (deleted when the job ends).
    RocksDb(std::path::PathBuf),
}

impl StateBackendKind {
    /// The name recorded in checkpoints.
    pub fn name(&self) -> &'static str {
        match self {
            StateBackendKind::Memory => "memory",
            StateBackendKind::RocksDb(_) => "rocksdb",
        }
    }
}

impl JobOptions {
    /// Options with the given default parallelism.
    pub fn new(parallelism: u32) -> Self {
        JobOptions {
            parallelism,
            args: Vec::new(),
            channel_capacity: 4,
            checkpoints: CheckpointConfig::default(),
            job_id: None,
            restart: None,
            resume: false,
            from_savepoint: None,
            allow_non_restored_state: false,
            savepoint_dir: None,
            state_backend: StateBackendKind::Memory,
            keep_running_if_stop_fails: false,
            allowed_paths: None,
            shared_output: false,
        }
    }

    /// Adds a job argument.
    pub fn arg(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.args.push((key.into(), value.into()));
        self
    }
}

/// Records in and out of one operator, over all its subtasks.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OperatorSummary {
    /// The operator's uid.
    pub uid: String,
    /// Index of the chained vertex it ran in (operators with the same one ran chained).
    pub vertex: usize,
    /// Subtasks.
    pub parallelism: u32,
    /// Records it took in (a source: produced).
    pub records_in: u64,
    /// Records it sent on, summed over its outputs (side outputs included).
    pub records_out: u64,
}

/// What a finished job did.
#[derive(Debug, Clone)]
pub struct JobSummary {
    /// Job name.
    pub name: String,
    /// Per operator, in topological order.
    pub operators: Vec<OperatorSummary>,
    /// Wall time from start to end.
    pub duration: Duration,
    /// Restarts after task failures.
    pub restarts: u32,
    /// The savepoint the job stopped with.
    pub savepoint: Option<String>,
    /// From the start of the last attempt until its tasks ran: opening guest instances and
    /// restoring state.
    pub startup: Duration,
}

impl fmt::Display for JobSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let how = if self.savepoint.is_some() {
            "stopped"
        } else {
            "finished"
        };
        writeln!(
            f,
            "job '{}' {how} in {:.3} s",
            self.name,
            self.duration.as_secs_f64()
        )?;
        if self.restarts > 0 {
            writeln!(f, "  restarts: {}", self.restarts)?;
        }
        if let Some(s) = &self.savepoint {
            writeln!(f, "  savepoint: {s}")?;
        }
        let width = self
            .operators
            .iter()
            .map(|o| o.uid.len())
            .max()
            .unwrap_or(4)
            .max(8);
        writeln!(
            f,
            "  {:<width$}  {:>5}  {:>4}  {:>12}  {:>12}",
            "operator", "chain", "par", "records in", "records out"
        )?;
        for o in &self.operators {
            writeln!(
                f,
                "  {:<width$}  {:>5}  {:>4}  {:>12}  {:>12}",
                o.uid, o.vertex, o.parallelism, o.records_in, o.records_out
            )?;
        }
        Ok(())
    }
}

/// Runs a job to completion (bounded sources), until it is cancelled or stopped with a
/// savepoint through `link`'s handle; restarts it from its latest checkpoint after a task
/// failure, as `options.restart` allows.
pub fn run_job(
    component: &Arc<JobComponent>,
    options: &JobOptions,
    link: JobLink,
) -> Result<JobSummary, JobError> {
    let started = Instant::now();
    let graph = Arc::new(plan_job(component, options)?);
    let plan = Arc::new(ExecutionPlan::new(&graph));
    let job_id = options
        .job_id
        .clone()
        .unwrap_or_else(|| job_id_from_name(&graph.name));
    let job_dir = options
        .checkpoints
        .storage
        .as_ref()
        .map(|s| s.child(&job_id));
    let mut restore = restore_point(options, job_dir.as_ref())?;
    if let Some(r) = &restore {
        r.check(&graph, options.allow_non_restored_state)?;
        tracing::info!(from = r.dir.url(), id = r.metadata.id, "restoring");
    }
    let mut next_id = match &job_dir {
        Some(d) => checkpoint::next_checkpoint_id(d)?,
        None => 1,
    };
    if let Some(r) = &restore {
        next_id = next_id.max(r.metadata.id + 1);
    }
    let strategy = options
        .restart
        .unwrap_or(RestartStrategy::default_for(job_dir.is_some()));
    let logs = Arc::new(weir_runtime::LogBudget::default());
    let job = attempt::Job {
        graph: &graph,
        plan: &plan,
        job_id: &job_id,
        job_dir: job_dir.clone(),
        guest_source: graph.nodes.iter().any(|n| n.kind == NodeKind::GuestSource),
        logs: &logs,
    };
    let mut requests = Requests::default();
    let mut commands = link.commands.clone();
    let mut restarts = 0;
    loop {
        let mut latest = None;
        let attempt = attempt::Attempt {
            job: &job,
            restore: restore.as_ref(),
            number: restarts,
        };
        match attempt.run(
            component,
            options,
            &link,
            &mut requests,
            &mut next_id,
            &mut latest,
        ) {
            Ok(ended) => {
                return Ok(JobSummary {
                    name: graph.name.clone(),
                    operators: events::operator_summaries(&graph, &plan, &ended.counters),
                    duration: started.elapsed(),
                    restarts,
                    savepoint: ended.savepoint,
                    startup: ended.startup,
                })
            }
            Err(e) if e.retryable() => {
                restarts += 1;
                let Some(delay) = strategy.delay(restarts) else {
                    return Err(e);
                };
                // The error may carry a guest's words: one line, as guest logs are.
                let shown = e.to_string();
                let shown = weir_runtime::one_line(&shown);
                tracing::warn!(error = %shown, restart = restarts, ?delay, "restarting the job");
                link.emit(JobEvent::Restarting {
                    attempt: restarts,
                    cause: e.to_string(),
                    delay,
                });
                wait_unless_cancelled(&mut commands, &mut requests, delay)?;
                if latest.is_some() {
                    restore = latest;
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// The job's graph from its component, checked for what this host can run.
fn plan_job(component: &JobComponent, options: &JobOptions) -> Result<JobGraph, JobError> {
    if options.parallelism == 0 {
        return Err(JobError::Unsupported(
            "parallelism must be at least 1".into(),
        ));
    }
    let mut args = options.args.clone();
    args.push(("weir.attempt".into(), "0".into()));
    let graph = component.plan(&args, options.parallelism)?;
    let plan = ExecutionPlan::new(&graph);
    for v in &plan.vertices {
        if let (true, Some(source), Some(sink)) = (v.guest.is_empty(), v.source, v.sink) {
            return Err(JobError::Unsupported(format!(
                "sink '{}' reads straight from source '{}'; the SDK puts an operator between them",
                graph.nodes[sink].uid, graph.nodes[source].uid
            )));
        }
    }
    let guest_source = graph.nodes.iter().any(|n| n.kind == NodeKind::GuestSource);
    if guest_source && options.checkpoints.interval.is_some() {
        return Err(JobError::Unsupported(
            "checkpointing a job whose source is written in the guest is not supported yet \
             (use a host source connector, or run without --checkpoint-interval)"
                .into(),
        ));
    }
    Ok(graph)
}

/// Where the job starts from: the savepoint it names, or (resuming) the latest completed
/// checkpoint under its directory.
fn restore_point(
    options: &JobOptions,
    job_dir: Option<&Storage>,
) -> Result<Option<Restore>, JobError> {
    let restore_err = |e: weir_checkpoint::CheckpointError| RestoreError::Read(e);
    match (&options.from_savepoint, options.resume, job_dir) {
        (Some(dir), _, _) => Ok(Some(Restore::load(dir.clone()).map_err(restore_err)?)),
        (None, true, Some(job_dir)) => {
            match weir_checkpoint::latest_checkpoint(job_dir).map_err(restore_err)? {
                Some((_, dir)) => Ok(Some(Restore::load(dir).map_err(restore_err)?)),
                None => Ok(None),
            }
        }
        (None, true, None) => {
            Err(RestoreError::Mismatch("--resume needs a checkpoint directory".into()).into())
        }
        (None, false, _) => Ok(None),
    }
}

/// Waits `delay` before a restart, taking the job's commands meanwhile; a cancel ends the
/// job at once (a stop or savepoint is done by the next attempt).
fn wait_unless_cancelled(
    commands: &mut crossbeam_channel::Receiver<JobCommand>,
    requests: &mut Requests,
    delay: Duration,
) -> Result<(), JobError> {
    let until = Instant::now() + delay;
    loop {
        requests.take_from(commands);
        if requests.cancel {
            return Err(JobError::Cancelled);
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        crossbeam_channel::select! {
            recv(commands) -> c => if let Ok(c) = c { requests.apply(c) },
            default(left) => {}
        }
    }
}

/// The tasks (threads) a job of this graph runs: its operators chained into vertices, times
/// their parallelism.
pub fn task_count(graph: &JobGraph) -> u32 {
    ExecutionPlan::new(graph)
        .vertices
        .iter()
        .map(|v| v.parallelism)
        .sum()
}

/// A job id from a job name: letters, digits, `-` and `_`.
fn job_id_from_name(name: &str) -> String {
    let id: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if id.is_empty() {
        "job".into()
    } else {
        id
    }
}
