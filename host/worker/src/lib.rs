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
//! use weir_worker::{run_job, JobOptions};
//!
//! let runtime = Runtime::new(RuntimeConfig::default())?;
//! let component = runtime.load(&std::fs::read("word_count.wasm")?)?;
//! let summary = run_job(&component, &JobOptions::new(2).arg("input", "in.txt").arg("output", "out"))?;
//! println!("{summary}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

pub mod checkpoint;
pub mod connectors;
pub mod events;
pub mod exchange;
pub mod paths;
pub mod plan;
mod task;

use std::collections::BTreeSet;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use checkpoint::{CheckpointConfig, CheckpointMode, RestartStrategy, Restore};
use checkpoint::{Control, Coordinator, Outcome, Report, TaskLink};
use connectors::ConnectorError;
pub use events::{JobEvent, JobUsage, LiveCounters, OperatorProgress, SnapshotStats};
use exchange::{Downstream, InputGate, Outputs};
use plan::{ExecutionPlan, Route};
use task::{JobCounters, Task, TaskInput, TaskLinks};
use weir_checkpoint::Storage;
use weir_core::frame::FrameError;
use weir_core::{JobGraph, KeyGroupRange, NodeKind, Partitioning};
use weir_runtime::{ChainSpec, GuestError, JobComponent};
use weir_state::{MemoryStateBackend, RocksDbStateBackend};

/// Why a task stopped.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// Guest code failed or trapped.
    #[error(transparent)]
    Guest(#[from] GuestError),
    /// A connector failed.
    #[error(transparent)]
    Connector(#[from] ConnectorError),
    /// The guest broke the frame protocol.
    #[error("{0}")]
    Protocol(String),
    /// The job was cancelled (or another task failed first).
    #[error("cancelled")]
    Cancelled,
}

impl TaskError {
    fn frame(e: FrameError) -> Self {
        TaskError::Protocol(e.to_string())
    }
}

/// Why a job did not finish.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The plan could not be obtained or is invalid, or a chain could not be opened.
    #[error(transparent)]
    Guest(#[from] GuestError),
    /// A connector's configuration is wrong.
    #[error(transparent)]
    Connector(#[from] ConnectorError),
    /// The plan is valid but this host cannot run it.
    #[error("cannot run the plan: {0}")]
    Unsupported(String),
    /// A task failed.
    #[error("task {task} failed: {error}")]
    Task {
        /// `vertex#subtask`.
        task: String,
        /// The cause.
        error: TaskError,
    },
    /// The job was cancelled.
    #[error("the job was cancelled")]
    Cancelled,
    /// A checkpoint or savepoint cannot be restored.
    #[error("cannot restore: {0}")]
    Restore(String),
    /// Checkpointing failed more often than tolerated.
    #[error("checkpointing failed: {0}")]
    Checkpoint(String),
}

impl JobError {
    /// Whether restarting the job from its latest checkpoint may help.
    fn restartable(&self) -> bool {
        matches!(
            self,
            JobError::Task { error, .. } if !matches!(
                error,
                TaskError::Cancelled | TaskError::Guest(GuestError::StateLimit { .. })
            )
        ) || matches!(self, JobError::Checkpoint(_))
    }
}

/// How to run a job.
#[derive(Debug, Clone)]
pub struct JobOptions {
    /// Default parallelism of every operator.
    pub parallelism: u32,
    /// Job arguments (`--arg k=v`).
    pub args: Vec<(String, String)>,
    /// Batches buffered per channel before the sender blocks.
    pub channel_capacity: usize,
    /// Set to stop the job.
    pub cancel: Arc<AtomicBool>,
    /// Set to stop the job with a savepoint into `savepoint_dir` (without one: cancel).
    pub stop: Arc<AtomicBool>,
    /// Set to take a savepoint into `savepoint_dir` and go on (cleared when taken).
    pub savepoint_now: Arc<AtomicBool>,
    /// Told the location of every savepoint taken while the job runs.
    pub savepoints: Option<crossbeam_channel::Sender<String>>,
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
    /// Where stop-with-savepoint writes.
    pub savepoint_dir: Option<Storage>,
    /// Stop-with-savepoint ends the input first (final watermark, windows fire).
    pub drain: Arc<AtomicBool>,
    /// Where keyed state lives.
    pub state_backend: StateBackendKind,
    /// Told what happens while the job runs (attempts, restarts, snapshots).
    pub events: Option<crossbeam_channel::Sender<JobEvent>>,
    /// A stop whose savepoint fails leaves the job running, as Flink does (otherwise the
    /// attempt fails, and a restart stops it again).
    pub keep_running_if_stop_fails: bool,
    /// When set, file connectors may only use paths under these directories (checked with
    /// symlinks and `..` resolved, again at every start of the job's tasks).
    pub allowed_paths: Option<Arc<Vec<std::path::PathBuf>>>,
    /// What every task's keyed state is charged to, and the largest value it may write.
    pub state_limits: StateLimits,
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
#[derive(Debug, Clone, PartialEq, Eq)]
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
    fn emit(&self, event: JobEvent) {
        if let Some(tx) = &self.events {
            let _ = tx.send(event);
        }
    }

    /// Options with the given default parallelism.
    pub fn new(parallelism: u32) -> Self {
        JobOptions {
            parallelism,
            args: Vec::new(),
            channel_capacity: 4,
            cancel: Arc::new(AtomicBool::new(false)),
            stop: Arc::new(AtomicBool::new(false)),
            savepoint_now: Arc::new(AtomicBool::new(false)),
            savepoints: None,
            checkpoints: CheckpointConfig::default(),
            job_id: None,
            restart: None,
            resume: false,
            from_savepoint: None,
            allow_non_restored_state: false,
            savepoint_dir: None,
            drain: Arc::new(AtomicBool::new(false)),
            state_backend: StateBackendKind::Memory,
            events: None,
            keep_running_if_stop_fails: false,
            allowed_paths: None,
            state_limits: StateLimits::default(),
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

/// Runs a job to completion (bounded sources), until `options.cancel` is set, or until a
/// stop-with-savepoint completes; restarts it from its latest checkpoint after a task
/// failure, as `options.restart` allows.
pub fn run_job(
    component: &Arc<JobComponent>,
    options: &JobOptions,
) -> Result<JobSummary, JobError> {
    let started = Instant::now();
    if options.parallelism == 0 {
        return Err(JobError::Unsupported(
            "parallelism must be at least 1".into(),
        ));
    }
    let mut args = options.args.clone();
    args.push(("weir.attempt".into(), "0".into()));
    let graph = Arc::new(component.plan(&args, options.parallelism)?);
    let plan = Arc::new(ExecutionPlan::new(&graph));
    for v in &plan.vertices {
        if v.guest.is_empty() && v.source.is_some() && v.sink.is_some() {
            return Err(JobError::Unsupported(format!(
                "sink '{}' reads straight from source '{}'; the SDK puts an operator between them",
                graph.nodes[v.sink.unwrap_or_default()].uid,
                graph.nodes[v.source.unwrap_or_default()].uid
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
    let job_id = options
        .job_id
        .clone()
        .unwrap_or_else(|| job_id_from_name(&graph.name));
    let job_dir = options
        .checkpoints
        .storage
        .as_ref()
        .map(|s| s.child(&job_id));
    let restore_err = |e: weir_checkpoint::CheckpointError| JobError::Restore(e.to_string());
    let mut restore = match (&options.from_savepoint, options.resume, &job_dir) {
        (Some(dir), _, _) => Some(Restore::load(dir.clone()).map_err(restore_err)?),
        (None, true, Some(job_dir)) => {
            match weir_checkpoint::latest_checkpoint(job_dir).map_err(restore_err)? {
                Some((_, dir)) => Some(Restore::load(dir).map_err(restore_err)?),
                None => None,
            }
        }
        (None, true, None) => {
            return Err(JobError::Restore(
                "--resume needs a checkpoint directory".into(),
            ))
        }
        _ => None,
    };
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
    let mut restarts = 0;
    // One allowance of guest log lines for the job, whatever its restarts.
    let logs = Arc::new(weir_runtime::LogBudget::default());
    loop {
        let mut latest = None;
        let attempt = Attempt {
            graph: &graph,
            plan: &plan,
            job_id: &job_id,
            job_dir: job_dir.clone(),
            restore: restore.as_ref(),
            number: restarts,
            guest_source,
            logs: &logs,
        };
        match attempt.run(component, options, &mut next_id, &mut latest) {
            Ok((counters, savepoint, startup)) => {
                let mut s = summary(&graph, &plan, &counters, started, restarts, savepoint);
                s.startup = startup;
                return Ok(s);
            }
            Err(e) if e.restartable() => {
                restarts += 1;
                let Some(delay) = strategy.delay(restarts) else {
                    return Err(e);
                };
                // The error may carry a guest's words: one line, as guest logs are.
                let shown = e.to_string();
                let shown = weir_runtime::one_line(&shown);
                tracing::warn!(error = %shown, restart = restarts, ?delay, "restarting the job");
                options.emit(JobEvent::Restarting {
                    attempt: restarts,
                    cause: e.to_string(),
                    delay,
                });
                let until = Instant::now() + delay;
                while Instant::now() < until {
                    if options.cancel.load(Ordering::Relaxed) {
                        return Err(JobError::Cancelled);
                    }
                    std::thread::sleep(Duration::from_millis(10).min(delay));
                }
                if latest.is_some() {
                    restore = latest;
                }
            }
            Err(e) => return Err(e),
        }
    }
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

/// One run of the job's tasks, from a restore point or from scratch.
struct Attempt<'a> {
    graph: &'a Arc<JobGraph>,
    plan: &'a Arc<ExecutionPlan>,
    job_id: &'a str,
    job_dir: Option<Storage>,
    restore: Option<&'a Restore>,
    number: u32,
    guest_source: bool,
    logs: &'a Arc<weir_runtime::LogBudget>,
}

impl Attempt<'_> {
    fn run(
        &self,
        component: &Arc<JobComponent>,
        options: &JobOptions,
        next_id: &mut u64,
        latest: &mut Option<Restore>,
    ) -> Result<(Arc<JobCounters>, Option<String>, Duration), JobError> {
        let attempt_started = Instant::now();
        let (graph, plan) = (self.graph, self.plan);
        let max_p = graph.max_parallelism;
        let mut args = options.args.clone();
        args.push(("weir.attempt".into(), self.number.to_string()));
        let args = &args;
        // A tenant's files stay in its directories: checked again now, as the connectors
        // are about to open them (a directory may have become a symlink since submission).
        let allowed = options.allowed_paths.as_deref().map(Vec::as_slice);
        if let Some(allowed) = allowed {
            paths::check_graph(graph, allowed).map_err(JobError::Unsupported)?;
        }
        // Transactions of the restored snapshot are committed (again: idempotent); whatever
        // else sinks had in progress is rolled back.
        if let Some(r) = self.restore {
            r.commit_sinks(graph)?;
        }
        for c in checkpoint::sink_connectors(graph) {
            connectors::abort_uncommitted_within(c, allowed)?;
        }
        let restored = |uid: &str,
                        p: u32,
                        i: u32|
         -> Result<Option<weir_checkpoint::SubtaskState>, JobError> {
            match self.restore {
                Some(r) => r.subtask(uid, p, i),
                None => Ok(None),
            }
        };
        let cancel = Arc::new(AtomicBool::new(false));
        let control = Arc::new(Control::default());
        let (report_tx, report_rx) = crossbeam_channel::unbounded::<Report>();
        let mut links = Vec::new();

        // Source readers first: which subtasks will never produce a record is known now.
        let mut readers: Vec<Vec<Option<Box<dyn connectors::SourceReader>>>> = Vec::new();
        for v in &plan.vertices {
            let mut per_subtask = Vec::new();
            for i in 0..v.parallelism {
                per_subtask.push(match v.source {
                    Some(s) => {
                        let NodeKind::Source(c) = &graph.nodes[s].kind else {
                            unreachable!("vertex sources are source nodes")
                        };
                        let mut reader =
                            connectors::open_source_within(c, i, v.parallelism, allowed)?;
                        let uid = &graph.nodes[s].uid;
                        // A subtask restored finished reads nothing.
                        let finished = restored(&graph.nodes[v.head()].uid, v.parallelism, i)?
                            .is_some_and(|r| r.finished);
                        let positions = self
                            .restore
                            .filter(|_| !finished)
                            .and_then(|r| r.source_positions(uid));
                        if let Some((positions, old_p)) = positions {
                            reader
                                .restore(&positions, old_p)
                                .map_err(|e| JobError::Restore(format!("source '{uid}': {e}")))?;
                        }
                        Some(reader)
                    }
                    None => None,
                });
            }
            readers.push(per_subtask);
        }

        // Channels: every subtask of a vertex to every subtask of each downstream vertex.
        let mut senders: Vec<Vec<Vec<Downstream>>> = plan
            .vertices
            .iter()
            .map(|v| (0..v.parallelism).map(|_| Vec::new()).collect())
            .collect();
        type Inputs = Vec<(crossbeam_channel::Receiver<exchange::Message>, bool)>;
        let mut receivers: Vec<Vec<Inputs>> = plan
            .vertices
            .iter()
            .map(|v| (0..v.parallelism).map(|_| Vec::new()).collect())
            .collect();
        for (vi, v) in plan.vertices.iter().enumerate() {
            let nodes = v.nodes();
            let targets: BTreeSet<usize> = graph
                .edges
                .iter()
                .enumerate()
                .filter(|(_, e)| nodes.contains(&e.source))
                .filter_map(|(i, _)| match plan.routes[i] {
                    Route::Exchange { vertex, .. } => Some(vertex),
                    _ => None,
                })
                .collect();
            for d in targets {
                let dp = plan.vertices[d].parallelism;
                for i in 0..v.parallelism {
                    let silent = readers[vi][i as usize]
                        .as_ref()
                        .is_some_and(|r| r.is_empty());
                    let mut txs = Vec::with_capacity(dp as usize);
                    for j in 0..dp {
                        let (tx, rx) = crossbeam_channel::bounded(options.channel_capacity);
                        txs.push(tx);
                        receivers[d][j as usize].push((rx, silent));
                    }
                    senders[vi][i as usize].push(Downstream::new(d, txs));
                }
            }
        }

        let tasks_total = plan.vertices.iter().map(|v| v.parallelism as usize).sum();
        let counters = Arc::new(JobCounters::new(
            graph.nodes.len(),
            graph.edges.len(),
            tasks_total,
        ));
        let mut tasks = Vec::new();
        for (vi, v) in plan.vertices.iter().enumerate() {
            let nodes = v.nodes();
            let own_edges: Vec<bool> = graph
                .edges
                .iter()
                .enumerate()
                .map(|(i, e)| nodes.contains(&e.source) && plan.routes[i] != Route::Chained)
                .collect();
            let source_strategy = v.source.and_then(|s| graph.nodes[s].watermarks);
            let strategy =
                source_strategy.or_else(|| v.guest.iter().find_map(|&g| graph.nodes[g].watermarks));
            for i in 0..v.parallelism {
                let label = format!("{}#{i}", v.name(graph));
                let mut input = match (v.source, readers[vi][i as usize].take()) {
                    (Some(s), Some(reader)) => {
                        let edges = graph
                            .edges
                            .iter()
                            .enumerate()
                            .filter(|(_, e)| e.source == s)
                            .map(|(k, _)| k as u32)
                            .collect();
                        TaskInput::Source { reader, edges }
                    }
                    _ if graph.nodes[v.head()].kind == NodeKind::GuestSource => {
                        TaskInput::GuestSource
                    }
                    _ => {
                        let (rx, silent) = std::mem::take(&mut receivers[vi][i as usize])
                            .into_iter()
                            .unzip();
                        let mut gate = InputGate::new(rx, silent);
                        gate.set_aligned(options.checkpoints.mode == CheckpointMode::ExactlyOnce);
                        TaskInput::Gate(gate)
                    }
                };
                let head_uid = graph.nodes[v.head()].uid.clone();
                let restored_task = restored(&head_uid, v.parallelism, i)?;
                if let (Some(w), TaskInput::Gate(gate)) =
                    (restored_task.as_ref().and_then(|r| r.watermark), &mut input)
                {
                    gate.set_watermark(weir_core::Watermark(w));
                }
                // Shared files a restored RocksDB database already has in storage.
                let mut uploaded = std::collections::HashMap::new();
                let guest = if v.guest.is_empty() {
                    None
                } else {
                    let head = v.guest[0];
                    let keyed = graph
                        .inputs(head)
                        .any(|e| e.partitioning == Partitioning::Hash);
                    let backend = match keyed {
                        true => {
                            let states = graph.nodes[head].states.clone();
                            let range = KeyGroupRange::for_subtask(max_p, v.parallelism, i);
                            let uid = &graph.nodes[head].uid;
                            let finished = restored_task.as_ref().is_some_and(|r| r.finished);
                            let restore = self.restore.filter(|_| !finished);
                            let scratch = match &options.state_backend {
                                StateBackendKind::RocksDb(dir) => dir.clone(),
                                StateBackendKind::Memory => std::env::temp_dir(),
                            };
                            let native = restore
                                .and_then(|r| r.native_for(uid, range, &states).map(|n| (r, n)));
                            let b: Box<dyn weir_state::KeyedStateBackend> =
                                match (&options.state_backend, native) {
                                    (StateBackendKind::RocksDb(dir), Some((r, n))) => {
                                        // Same key groups and states: the checkpoint's files
                                        // are the database.
                                        let (b, up) = r.open_native(n, states, range, dir)?;
                                        // Its files are ours only if they are in this
                                        // job's shared directory; otherwise the next
                                        // checkpoint uploads them here.
                                        if r.shares_files_with(self.job_dir.as_ref()) {
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
                                        let mut b = RocksDbStateBackend::new(states, range, dir)
                                            .map_err(|e| JobError::Unsupported(e.to_string()))?;
                                        if let Some(r) = restore {
                                            r.keyed_state(uid, &mut b, &scratch)?;
                                        }
                                        Box::new(b)
                                    }
                                };
                            // States with a TTL: stamped and checked on every access.
                            let b: Box<dyn weir_state::KeyedStateBackend> =
                                if b.descriptors().iter().any(|d| d.ttl.is_some()) {
                                    Box::new(weir_state::TtlBackend::new(b))
                                } else {
                                    b
                                };
                            Some(b)
                        }
                        false => None,
                    };
                    let nodes: Vec<u32> = v.guest.iter().map(|&n| n as u32).collect();
                    let mut chain = component.open_chain(ChainSpec {
                        nodes: &nodes,
                        subtask: i,
                        parallelism: v.parallelism,
                        args,
                        backend,
                        max_parallelism: max_p,
                        label: label.clone(),
                        interrupt: Some(cancel.clone()),
                        logs: Some(self.logs.clone()),
                    })?;
                    let limits = &options.state_limits;
                    chain.set_state_meter(weir_state::StateMeter::new(
                        limits.accounts.clone(),
                        limits.max_value,
                    ))?;
                    Some(chain)
                };
                let sink = match v.sink {
                    Some(s) => {
                        let NodeKind::Sink(c) = &graph.nodes[s].kind else {
                            unreachable!("vertex sinks are sink nodes")
                        };
                        let shared = options.shared_output.then(|| self.logs.clone());
                        Some(connectors::open_sink_within(
                            c,
                            i,
                            v.parallelism,
                            allowed,
                            shared,
                        )?)
                    }
                    None => None,
                };
                let outputs = Outputs::new(
                    plan.routes.clone(),
                    own_edges.clone(),
                    std::mem::take(&mut senders[vi][i as usize]),
                    sink,
                    i,
                    max_p,
                );
                let is_source = matches!(input, TaskInput::Source { .. });
                let (trigger_tx, trigger_rx) = if is_source {
                    let (tx, rx) = crossbeam_channel::unbounded();
                    (Some(tx), rx)
                } else {
                    (None, crossbeam_channel::never())
                };
                let (notice_tx, notice_rx) = crossbeam_channel::unbounded();
                links.push(TaskLink {
                    triggers: trigger_tx,
                    notices: notice_tx,
                });
                let keyed_uid = v
                    .guest
                    .first()
                    .filter(|&&g| {
                        graph
                            .inputs(g)
                            .any(|e| e.partitioning == Partitioning::Hash)
                    })
                    .map(|&g| graph.nodes[g].uid.clone());
                tasks.push(Task::new(
                    label,
                    input,
                    guest,
                    outputs,
                    strategy,
                    source_strategy.is_some(),
                    max_p,
                    counters.clone(),
                    v.clone(),
                    cancel.clone(),
                    TaskLinks {
                        index: links.len() - 1,
                        subtask: i,
                        reports: report_tx.clone(),
                        triggers: trigger_rx,
                        notices: notice_rx,
                        control: control.clone(),
                        head_uid,
                        keyed_uid,
                        source_uid: v.source.map(|n| graph.nodes[n].uid.clone()),
                        sink_uid: v.sink.map(|n| graph.nodes[n].uid.clone()),
                        restored: restored_task,
                        uploaded,
                    },
                ));
            }
        }
        drop(receivers);
        drop(senders);

        drop(report_tx);

        let mut handles = Vec::new();
        for t in tasks {
            let label = t.label.clone();
            let cancel = cancel.clone();
            // The caller's span (a cluster's job and tenant) covers the task's logs too.
            let span = tracing::Span::current();
            let handle = std::thread::Builder::new()
                .name(format!("weir-task-{label}"))
                .spawn(move || {
                    let _entered = span.enter();
                    let r = t.run();
                    if r.is_err() {
                        cancel.store(true, Ordering::Relaxed);
                    }
                    r
                })
                .map_err(|e| JobError::Unsupported(format!("cannot start a task thread: {e}")))?;
            handles.push((label, handle));
        }
        let startup = attempt_started.elapsed();
        options.emit(JobEvent::Running {
            attempt: self.number,
            counters: LiveCounters {
                graph: graph.clone(),
                plan: plan.clone(),
                counters: counters.clone(),
            },
        });

        let savepoint_dir = match (&options.savepoint_dir, self.guest_source) {
            (Some(_), true) => {
                tracing::warn!("jobs with sources in the guest stop without a savepoint");
                None
            }
            (dir, _) => dir.clone(),
        };
        let mut coordinator = Coordinator {
            graph,
            plan,
            config: &options.checkpoints,
            job_name: graph.name.clone(),
            job_id: self.job_id.to_string(),
            job_dir: self.job_dir.clone(),
            tasks: links,
            reports: report_rx,
            cancel: cancel.clone(),
            user_cancel: options.cancel.clone(),
            stop: options.stop.clone(),
            savepoint_now: options.savepoint_now.clone(),
            savepoints: options.savepoints.clone(),
            events: options.events.clone(),
            keep_running_if_stop_fails: options.keep_running_if_stop_fails,
            drain: options.drain.clone(),
            savepoint_dir,
            control,
            next_id: *next_id,
            latest,
            backend: options.state_backend.name(),
        };
        let outcome = coordinator.run();
        *next_id = coordinator.next_id;
        if outcome.is_err() {
            cancel.store(true, Ordering::Relaxed);
        }

        let mut failure: Option<JobError> = None;
        let mut cancelled = false;
        for (label, h) in handles {
            let outcome = h.join().unwrap_or_else(|panic| {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                cancel.store(true, Ordering::Relaxed);
                Err(TaskError::Protocol(format!(
                    "internal error in the host: {msg}"
                )))
            });
            match outcome {
                Ok(()) => {}
                Err(TaskError::Cancelled | TaskError::Guest(GuestError::Interrupted)) => {
                    cancelled = true
                }
                Err(error) => {
                    let shown = error.to_string();
                    let shown = weir_runtime::one_line(&shown);
                    tracing::info!(task = %label, error = %shown, "task failed");
                    if failure.is_none() {
                        failure = Some(JobError::Task { task: label, error });
                    }
                }
            }
        }
        if let Some(f) = failure {
            return Err(f);
        }
        match outcome? {
            Outcome::Finished if !cancelled => Ok((counters, None, startup)),
            Outcome::Stopped(savepoint) => Ok((counters, Some(savepoint), startup)),
            _ => Err(JobError::Cancelled),
        }
    }
}

fn summary(
    graph: &JobGraph,
    plan: &ExecutionPlan,
    counters: &JobCounters,
    started: Instant,
    restarts: u32,
    savepoint: Option<String>,
) -> JobSummary {
    JobSummary {
        name: graph.name.clone(),
        operators: events::operator_summaries(graph, plan, counters),
        duration: started.elapsed(),
        restarts,
        savepoint,
        startup: Duration::ZERO,
    }
}
