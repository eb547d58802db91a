//! Checkpoints, savepoints and restores of a running job (design note 0002).
//!
//! The coordinator runs on the thread that started the job. It triggers a checkpoint by
//! sending a barrier to every source task; sources snapshot their position and pass the
//! barrier downstream, tasks with several inputs align barriers (exactly-once) or only count
//! them (at-least-once), every task snapshots what it holds and acknowledges with the parts
//! it wrote. When every task has acknowledged (a finished task counts with its final parts),
//! the coordinator writes `_metadata`, commits the sinks' transactions and tells the tasks.
//! Tasks and coordinator only exchange messages, as they will across processes.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use weir_checkpoint::{
    checkpoint_dir, get_file, list_checkpoints, prune_checkpoints, read_metadata, shared_dir,
    write_metadata, CheckpointError, FileRef, Metadata, NativeState, OperatorState, SnapshotKind,
    StateDecl, Storage, SubtaskState, METADATA_FORMAT,
};
use weir_core::{Connector, JobGraph, KeyGroupRange, NodeKind, StateKind};
use weir_state::{KeyedStateBackend, RocksDbStateBackend};

use crate::connectors;
use crate::plan::ExecutionPlan;
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

/// How barriers are handled by tasks with several inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointMode {
    /// Barriers are aligned: exactly-once state.
    ExactlyOnce,
    /// Barriers are only counted: records may be replayed after a restore.
    AtLeastOnce,
}

/// Checkpointing of one job.
#[derive(Debug, Clone)]
pub struct CheckpointConfig {
    /// Root directory; the job's checkpoints go under `<root>/<job-id>/`.
    pub storage: Option<Storage>,
    /// Time between checkpoints; `None`: no periodic checkpoints.
    pub interval: Option<Duration>,
    /// A checkpoint not complete after this long is given up.
    pub timeout: Duration,
    /// Least time between the end of one checkpoint and the start of the next.
    pub min_pause: Duration,
    /// Completed checkpoints kept.
    pub retained: usize,
    /// Aligned or not.
    pub mode: CheckpointMode,
    /// Checkpoints that may fail in a row before the job fails.
    pub tolerable_failures: u32,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            storage: None,
            interval: None,
            timeout: Duration::from_secs(600),
            min_pause: Duration::ZERO,
            retained: 1,
            mode: CheckpointMode::ExactlyOnce,
            tolerable_failures: 0,
        }
    }
}

/// What to do when a task fails.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RestartStrategy {
    /// Fail the job.
    None,
    /// Restart up to `attempts` times, waiting `delay` each time.
    FixedDelay {
        /// Restarts allowed.
        attempts: u32,
        /// Wait before each.
        delay: Duration,
    },
    /// Restart up to `attempts` times, waiting `initial`, then twice as long each time, at
    /// most `max`.
    ExponentialBackoff {
        /// Restarts allowed.
        attempts: u32,
        /// First wait.
        initial: Duration,
        /// Longest wait.
        max: Duration,
    },
}

impl RestartStrategy {
    /// Restarts allowed by default.
    pub const DEFAULT_ATTEMPTS: u32 = 10;
    /// The first wait by default.
    pub const DEFAULT_INITIAL: Duration = Duration::from_millis(100);
    /// The longest wait of a backoff (unless its first wait is longer).
    pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

    /// Up to `attempts` restarts, waiting `initial`, then twice as long each time, at most
    /// [`RestartStrategy::MAX_BACKOFF`].
    pub fn backoff(attempts: u32, initial: Duration) -> Self {
        RestartStrategy::ExponentialBackoff {
            attempts,
            initial,
            max: Self::MAX_BACKOFF.max(initial),
        }
    }

    /// What a job does without a strategy of its own: back off and restart from its
    /// latest checkpoint when it checkpoints; fail otherwise (it would start over).
    pub fn default_for(checkpointing: bool) -> Self {
        if checkpointing {
            Self::backoff(Self::DEFAULT_ATTEMPTS, Self::DEFAULT_INITIAL)
        } else {
            RestartStrategy::None
        }
    }

    /// The wait before restart number `n` (1-based), or `None` once attempts are used up.
    pub fn delay(&self, n: u32) -> Option<Duration> {
        match *self {
            RestartStrategy::None => None,
            RestartStrategy::FixedDelay { attempts, delay } => (n <= attempts).then_some(delay),
            RestartStrategy::ExponentialBackoff {
                attempts,
                initial,
                max,
            } => (n <= attempts).then(|| initial.saturating_mul(1 << (n - 1).min(20)).min(max)),
        }
    }
}

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
            return Err(JobError::Restore(format!(
                "operator '{uid}' had finished in {finished} of its {} subtasks; such a \
                 snapshot restores only at the same parallelism",
                op.subtasks.len()
            )));
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
        let fail = |e: CheckpointError| JobError::Restore(e.to_string());
        let local = |e: std::io::Error| JobError::Restore(format!("{}: {e}", into.display()));
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
        get_file(&self.dir, &n.timers).map_err(fail)
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
        std::fs::create_dir_all(parent).map_err(|e| JobError::Restore(e.to_string()))?;
        let scratch = tempfile::Builder::new()
            .prefix("weir-restore-")
            .tempdir_in(parent)
            .map_err(|e| JobError::Restore(e.to_string()))?;
        let timers = self.download_native(n, scratch.path())?;
        let b = RocksDbStateBackend::from_native(states, range, parent, scratch.path(), &timers)
            .map_err(|e| JobError::Restore(e.to_string()))?;
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
                let data = weir_state::take_snapshot(&db);
                weir_state::restore_snapshot(backend, &data)
                    .map_err(|e| JobError::Restore(format!("'{uid}': {e}")))?;
                continue;
            }
            let (Some([start, end]), Some(file)) = (s.key_groups, s.file.as_ref()) else {
                continue;
            };
            if start > end || end > self.metadata.max_parallelism {
                return Err(JobError::Restore(format!(
                    "corrupt checkpoint file {}: key groups {start}..{end} of '{uid}'",
                    self.dir.url_of(weir_checkpoint::METADATA_FILE)
                )));
            }
            let old = KeyGroupRange::new(start, end);
            if old.end <= range.start || range.end <= old.start {
                continue;
            }
            let data = get_file(&self.dir, file).map_err(|e| JobError::Restore(e.to_string()))?;
            weir_state::restore_snapshot(backend, &data).map_err(|e| {
                JobError::Restore(format!(
                    "corrupt checkpoint file {}: {e}",
                    self.dir.url_of(&file.path)
                ))
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
            return Err(JobError::Restore(format!(
                "the snapshot has {} key groups (max parallelism), the job {}; the max \
                 parallelism of a job cannot change",
                self.metadata.max_parallelism, graph.max_parallelism
            )));
        }
        for (uid, op) in &self.metadata.operators {
            if graph.node_by_uid(uid).is_none() && op.subtasks.iter().any(|s| s.has_state()) {
                if allow_non_restored {
                    tracing::warn!(operator = %uid, "state of a removed operator is not restored");
                } else {
                    return Err(JobError::Restore(format!(
                        "the snapshot holds state of operator '{uid}', which the job no \
                         longer has (pass --allow-non-restored-state to drop it)"
                    )));
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
    let (_, all) = list_checkpoints(job_dir).map_err(|e| JobError::Restore(e.to_string()))?;
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

struct Pending {
    barrier: Arc<BarrierInfo>,
    started: Instant,
    acks: Vec<Option<Vec<Part>>>,
    stop: bool,
}

/// How an attempt's coordination ended.
pub(crate) enum Outcome {
    /// Every task finished; the final transactions are committed.
    Finished,
    /// A stop-with-savepoint completed.
    Stopped(String),
    /// The job was cancelled or a task failed.
    Interrupted,
}

/// The checkpoint coordinator of one attempt.
pub(crate) struct Coordinator<'a> {
    pub graph: &'a JobGraph,
    pub plan: &'a ExecutionPlan,
    pub config: &'a CheckpointConfig,
    pub job_name: String,
    pub job_id: String,
    /// `<root>/<job-id>`, when checkpointing to storage.
    pub job_dir: Option<Storage>,
    pub tasks: Vec<TaskLink>,
    pub reports: Receiver<Report>,
    pub cancel: Arc<AtomicBool>,
    /// The user's cancel: passed on to this attempt's tasks.
    pub user_cancel: Arc<AtomicBool>,
    pub stop: Arc<AtomicBool>,
    pub savepoint_now: Arc<AtomicBool>,
    pub savepoints: Option<Sender<String>>,
    pub events: Option<Sender<crate::JobEvent>>,
    /// A stop whose savepoint fails leaves the job running (instead of failing the attempt).
    pub keep_running_if_stop_fails: bool,
    pub drain: Arc<AtomicBool>,
    pub savepoint_dir: Option<Storage>,
    pub control: Arc<Control>,
    pub next_id: u64,
    /// The latest completed checkpoint (shared with later attempts).
    pub latest: &'a mut Option<Restore>,
    pub backend: &'static str,
}

impl Coordinator<'_> {
    /// Runs until every task finished, a stop-with-savepoint completed, or the job was
    /// cancelled or failed.
    pub fn run(&mut self) -> Result<Outcome, JobError> {
        let n = self.tasks.len();
        let mut finished: Vec<Option<Vec<Part>>> = vec![None; n];
        let mut pending: Option<Pending> = None;
        let mut last_end = Instant::now();
        let mut failures = 0u32;
        let mut stopping = false;
        loop {
            if self.user_cancel.load(Ordering::Relaxed) {
                self.cancel.store(true, Ordering::Relaxed);
            }
            if self.cancel.load(Ordering::Relaxed) {
                return Ok(Outcome::Interrupted);
            }
            if finished.iter().all(Option::is_some) {
                let parts: Vec<Part> = finished.iter().flatten().flatten().cloned().collect();
                return self.finish(parts);
            }
            if !stopping && self.stop.load(Ordering::Acquire) {
                stopping = true;
                let Some(barrier) = self.savepoint_barrier() else {
                    self.cancel.store(true, Ordering::Relaxed);
                    return Ok(Outcome::Interrupted);
                };
                // The savepoint replaces any checkpoint in flight.
                if let Some(p) = pending.take() {
                    self.abort(p);
                }
                if self.drain.load(Ordering::Relaxed) {
                    *self.control.drain_target.lock().expect("not poisoned") = Some(barrier);
                    self.control.drain.store(true, Ordering::Relaxed);
                } else {
                    pending = Some(self.trigger(barrier, &finished, true));
                }
            }
            if !stopping && pending.is_none() && self.savepoint_now.swap(false, Ordering::Relaxed) {
                match self.savepoint_barrier() {
                    Some(barrier) => pending = Some(self.trigger(barrier, &finished, false)),
                    None => tracing::warn!("a savepoint was asked for, but no savepoint directory"),
                }
            }
            let due = self
                .config
                .interval
                .filter(|_| pending.is_none() && !stopping && self.job_dir.is_some());
            if let Some(interval) = due {
                if last_end.elapsed() >= interval.max(self.config.min_pause) {
                    let id = self.next_id;
                    self.next_id += 1;
                    let dir = checkpoint_dir(self.job_dir.as_ref().expect("checked"), id);
                    let barrier = Arc::new(BarrierInfo {
                        id,
                        triggered: Instant::now(),
                        dir,
                        savepoint: false,
                    });
                    pending = Some(self.trigger(barrier, &finished, false));
                }
            }
            if let Some(p) = &pending {
                if p.started.elapsed() > self.config.timeout {
                    let id = p.barrier.id;
                    tracing::warn!(checkpoint = id, "checkpoint expired");
                    if p.stop && self.keep_running_if_stop_fails {
                        // Reset before telling: a new stop asked for after the news stands.
                        stopping = false;
                        self.stop.store(false, Ordering::Release);
                        self.emit_failure(p, format!("expired after {:?}", self.config.timeout));
                        pending = None;
                        last_end = Instant::now();
                        continue;
                    }
                    self.emit_failure(p, format!("expired after {:?}", self.config.timeout));
                    if p.stop {
                        return Err(JobError::Checkpoint(format!(
                            "the savepoint to stop with ({id}) expired after {:?}",
                            self.config.timeout
                        )));
                    }
                    self.abort(pending.take().expect("some"));
                    last_end = Instant::now();
                    failures += 1;
                    if failures > self.config.tolerable_failures {
                        return Err(JobError::Checkpoint(format!(
                            "checkpoint {id} expired after {:?} ({failures} failed in a row)",
                            self.config.timeout
                        )));
                    }
                }
            }
            let report = match self.reports.recv_timeout(Duration::from_millis(20)) {
                Ok(r) => r,
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => continue,
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                    return Ok(Outcome::Interrupted)
                }
            };
            match report {
                Report::Ack { id, task, parts } => {
                    if let Some(p) = pending.as_mut().filter(|p| p.barrier.id == id) {
                        p.acks[task] = Some(parts);
                    }
                }
                Report::Finished { task, parts } => {
                    if let Some(p) = pending.as_mut() {
                        if p.acks[task].is_none() {
                            p.acks[task] = Some(parts.clone());
                        }
                    }
                    finished[task] = Some(parts);
                }
                Report::Decline { id, reason } => {
                    if pending.as_ref().is_some_and(|p| p.barrier.id == id) {
                        tracing::warn!(checkpoint = id, %reason, "checkpoint declined");
                        let stop = pending.as_ref().is_some_and(|p| p.stop);
                        if stop && self.keep_running_if_stop_fails {
                            // Reset before telling: a new stop asked for after the news stands.
                            stopping = false;
                            self.stop.store(false, Ordering::Release);
                        }
                        if let Some(p) = &pending {
                            self.emit_failure(p, reason.clone());
                        }
                        if stop {
                            if self.keep_running_if_stop_fails {
                                pending = None;
                                last_end = Instant::now();
                                continue;
                            }
                            return Err(JobError::Checkpoint(format!(
                                "the savepoint to stop with failed: {reason}"
                            )));
                        }
                        self.abort(pending.take().expect("some"));
                        last_end = Instant::now();
                        failures += 1;
                        if failures > self.config.tolerable_failures {
                            return Err(JobError::Checkpoint(format!(
                                "checkpoint {id} failed: {reason}"
                            )));
                        }
                    }
                }
            }
            if pending
                .as_ref()
                .is_some_and(|p| p.acks.iter().all(Option::is_some))
            {
                let p = pending.take().expect("some");
                let id = p.barrier.id;
                let stop = p.stop;
                // A savepoint the job goes on after has no side effects: its transactions
                // stay pending until the next checkpoint (a restart from an earlier checkpoint
                // would otherwise replay what it made visible).
                let commits = !p.barrier.savepoint || stop;
                match self.complete(
                    &p.barrier,
                    p.acks.into_iter().flatten().flatten(),
                    false,
                    commits,
                ) {
                    Ok(()) => {
                        failures = 0;
                        if commits {
                            for t in &self.tasks {
                                let _ = t.notices.send(id);
                            }
                        }
                        if let (true, Some(tx)) = (p.barrier.savepoint, &self.savepoints) {
                            let _ = tx.send(p.barrier.dir.url().to_string());
                        }
                        if stop {
                            self.cancel.store(true, Ordering::Relaxed);
                            return Ok(Outcome::Stopped(p.barrier.dir.url().to_string()));
                        }
                    }
                    Err(e) => {
                        tracing::warn!(checkpoint = id, error = %e, "checkpoint failed");
                        let keep_running = stop && self.keep_running_if_stop_fails;
                        if keep_running {
                            // Reset before telling: a new stop asked for after the news stands.
                            stopping = false;
                            self.stop.store(false, Ordering::Release);
                        }
                        self.emit(crate::JobEvent::SnapshotFailed {
                            id,
                            savepoint: p.barrier.savepoint,
                            stop,
                            reason: e.to_string(),
                        });
                        if keep_running {
                            last_end = Instant::now();
                            continue;
                        }
                        failures += 1;
                        if stop || failures > self.config.tolerable_failures {
                            return Err(e);
                        }
                    }
                }
                last_end = Instant::now();
            }
        }
    }

    fn emit(&self, event: crate::JobEvent) {
        if let Some(tx) = &self.events {
            let _ = tx.send(event);
        }
    }

    fn emit_failure(&self, p: &Pending, reason: String) {
        self.emit(crate::JobEvent::SnapshotFailed {
            id: p.barrier.id,
            savepoint: p.barrier.savepoint,
            stop: p.stop,
            reason,
        });
    }

    /// The barrier of a new savepoint, in a directory no earlier run has used (`None`
    /// without a savepoint directory).
    fn savepoint_barrier(&mut self) -> Option<Arc<BarrierInfo>> {
        let dir = self.savepoint_dir.as_ref()?;
        let id = self.next_id;
        self.next_id += 1;
        let ms = weir_core::now_ms();
        Some(Arc::new(BarrierInfo {
            id,
            triggered: Instant::now(),
            dir: dir.child(&format!("savepoint-{}-{id}-{ms:x}", self.job_id)),
            savepoint: true,
        }))
    }

    fn trigger(
        &self,
        barrier: Arc<BarrierInfo>,
        finished: &[Option<Vec<Part>>],
        stop: bool,
    ) -> Pending {
        tracing::debug!(
            checkpoint = barrier.id,
            savepoint = barrier.savepoint,
            "trigger"
        );
        for (t, link) in self.tasks.iter().enumerate() {
            if let (None, Some(tx)) = (&finished[t], &link.triggers) {
                // A source that just finished reports so; its final parts stand in.
                let _ = tx.send(barrier.clone());
            }
        }
        Pending {
            barrier,
            started: Instant::now(),
            acks: finished.to_vec(),
            stop,
        }
    }

    fn abort(&self, p: Pending) {
        if !p.barrier.savepoint {
            if let Err(e) = p.barrier.dir.delete_all("") {
                tracing::warn!(error = %e, "cannot delete an expired checkpoint");
            }
        }
    }

    /// Writes `_metadata` (checkpoints to storage only), then commits the sinks.
    fn complete(
        &mut self,
        barrier: &BarrierInfo,
        parts: impl Iterator<Item = Part>,
        all_finished: bool,
        commit: bool,
    ) -> Result<(), JobError> {
        let mut m = self.metadata(barrier.id, barrier.savepoint, parts, all_finished);
        m.duration_ms = barrier.triggered.elapsed().as_millis() as u64;
        let fail = |e: CheckpointError| JobError::Checkpoint(e.to_string());
        write_metadata(&barrier.dir, &m).map_err(fail)?;
        // Complete from here on: a restart restores it (and commits what it holds again).
        if !barrier.savepoint {
            *self.latest = Some(Restore {
                dir: barrier.dir.clone(),
                metadata: m.clone(),
            });
        }
        if commit {
            commit_pending(self.graph, &m)?;
        }
        if !barrier.savepoint {
            if let Some(job_dir) = &self.job_dir {
                if let Err(e) = prune_checkpoints(job_dir, self.config.retained) {
                    tracing::warn!(error = %e, "cannot delete old checkpoints");
                }
            }
        }
        tracing::info!(
            id = barrier.id,
            dir = barrier.dir.url(),
            "snapshot complete"
        );
        self.emit(crate::JobEvent::Snapshot(crate::SnapshotStats {
            id: barrier.id,
            savepoint: barrier.savepoint,
            location: barrier.dir.url().to_string(),
            duration_ms: m.duration_ms,
            state_bytes: m.state_bytes(),
            completed_ms: m.completed_ms,
        }));
        Ok(())
    }

    /// Every task finished: a final checkpoint (or the drained savepoint), then commit.
    fn finish(&mut self, parts: Vec<Part>) -> Result<Outcome, JobError> {
        let drained = self
            .control
            .drain_target
            .lock()
            .expect("not poisoned")
            .clone();
        if let Some(b) = drained {
            self.complete(&b, parts.into_iter(), false, true)?;
            return Ok(Outcome::Stopped(b.dir.url().to_string()));
        }
        match &self.job_dir {
            Some(job_dir) => {
                let id = self.next_id;
                self.next_id += 1;
                let b = BarrierInfo {
                    id,
                    triggered: Instant::now(),
                    dir: checkpoint_dir(job_dir, id),
                    savepoint: false,
                };
                self.complete(&b, parts.into_iter(), true, true)?;
            }
            None => {
                let m = self.metadata(0, false, parts.into_iter(), true);
                commit_pending(self.graph, &m)?;
            }
        }
        Ok(Outcome::Finished)
    }

    fn metadata(
        &self,
        id: u64,
        savepoint: bool,
        parts: impl Iterator<Item = Part>,
        all_finished: bool,
    ) -> Metadata {
        let mut operators: BTreeMap<String, OperatorState> = BTreeMap::new();
        for (uid, subtask, state) in parts {
            let op = operators.entry(uid.clone()).or_insert_with(|| {
                let index = self.graph.node_by_uid(&uid);
                let node = index.map(|n| &self.graph.nodes[n]);
                let parallelism = index.map_or(0, |n| {
                    self.plan.vertices[self.plan.vertex_of[n]].parallelism
                });
                OperatorState {
                    parallelism,
                    states: node
                        .map(|n| {
                            n.states
                                .iter()
                                .map(|d| StateDecl {
                                    name: d.name.clone(),
                                    kind: match d.kind {
                                        StateKind::Value => "value",
                                        StateKind::List => "list",
                                        StateKind::Map => "map",
                                    }
                                    .into(),
                                    version: d.version,
                                    ttl_ms: d.ttl.map(|t| t.ttl_ms),
                                    refresh_on_read: d.ttl.is_some_and(|t| t.refresh_on_read),
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                    connector: node.and_then(|n| match &n.kind {
                        NodeKind::Source(c) | NodeKind::Sink(c) => Some(c.name.clone()),
                        _ => None,
                    }),
                    subtasks: Vec::new(),
                }
            });
            let i = subtask as usize;
            if op.subtasks.len() <= i {
                op.subtasks.resize(i + 1, SubtaskState::default());
            }
            op.subtasks[i].merge(state);
        }
        Metadata {
            format: METADATA_FORMAT,
            kind: if savepoint {
                SnapshotKind::Savepoint
            } else {
                SnapshotKind::Checkpoint
            },
            id,
            job_name: self.job_name.clone(),
            job_id: self.job_id.clone(),
            completed_ms: weir_core::now_ms(),
            duration_ms: 0,
            max_parallelism: self.graph.max_parallelism,
            backend: self.backend.to_string(),
            finished: all_finished,
            operators,
        }
    }
}

/// The sink connectors of a graph, for cleaning up before a start.
pub(crate) fn sink_connectors(graph: &JobGraph) -> impl Iterator<Item = &Connector> {
    graph.nodes.iter().filter_map(|n| match &n.kind {
        NodeKind::Sink(c) => Some(c),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_strategies_wait_and_give_up_as_configured() {
        let ms = Duration::from_millis;
        assert_eq!(RestartStrategy::None.delay(1), None);
        let fixed = RestartStrategy::FixedDelay {
            attempts: 2,
            delay: ms(30),
        };
        assert_eq!(
            (fixed.delay(1), fixed.delay(2), fixed.delay(3)),
            (Some(ms(30)), Some(ms(30)), None)
        );
        let backoff = RestartStrategy::default_for(true);
        let waits: Vec<_> = (1..=11).map(|n| backoff.delay(n)).collect();
        assert_eq!(
            &waits[..4],
            [Some(ms(100)), Some(ms(200)), Some(ms(400)), Some(ms(800))]
        );
        assert_eq!(waits[9], Some(RestartStrategy::MAX_BACKOFF));
        assert_eq!(waits[10], None, "ten attempts by default");
        assert_eq!(RestartStrategy::default_for(false), RestartStrategy::None);
        // A first wait longer than the cap is kept; huge attempt numbers do not overflow.
        let slow = RestartStrategy::backoff(u32::MAX, Duration::from_secs(60));
        assert_eq!(slow.delay(1_000_000), Some(Duration::from_secs(60)));
    }
}
