//! The checkpoint coordinator of one attempt: triggers checkpoints and savepoints, collects
//! the tasks' acknowledgements, writes `_metadata`, commits sinks, and takes the job's
//! commands (cancel, savepoint, stop).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use weir_checkpoint::{
    checkpoint_dir, prune_checkpoints, write_metadata, CheckpointError, Metadata, OperatorState,
    SnapshotKind, StateDecl, Storage, SubtaskState, METADATA_FORMAT,
};
use weir_core::{JobGraph, NodeKind, StateKind};

use super::{
    commit_pending, BarrierInfo, CheckpointConfig, Control, Part, Report, Restore, TaskLink,
};
use crate::control::{JobCommand, Requests};
use crate::plan::ExecutionPlan;
use crate::{CheckpointFailure, JobError};

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
    /// Set to stop this attempt's tasks.
    pub cancel: Arc<AtomicBool>,
    /// The job's commands, and what was asked and is not done (kept over restarts).
    pub commands: Receiver<JobCommand>,
    pub requests: &'a mut Requests,
    pub events: Option<Sender<crate::JobEvent>>,
    /// A stop whose savepoint fails leaves the job running (instead of failing the attempt).
    pub keep_running_if_stop_fails: bool,
    pub savepoint_dir: Option<Storage>,
    pub control: Arc<Control>,
    pub next_id: u64,
    /// The latest completed checkpoint (shared with later attempts).
    pub latest: &'a mut Option<Restore>,
    pub backend: &'static str,
}

/// Where the coordination of one attempt stands.
struct Round {
    /// Per task: its final parts, once it finished.
    finished: Vec<Option<Vec<Part>>>,
    /// The snapshot in flight.
    pending: Option<Pending>,
    /// When the last snapshot ended (the next waits `min_pause` after it).
    last_end: Instant,
    /// Snapshots failed in a row.
    failures: u32,
    /// A stop-with-savepoint is under way.
    stopping: bool,
}

/// Why a snapshot failed.
enum Failure {
    Expired(Duration),
    Declined(String),
    /// Writing its metadata or committing its sinks failed.
    Completing(JobError),
}

impl Failure {
    fn reason(&self) -> String {
        match self {
            Failure::Expired(after) => format!("expired after {after:?}"),
            Failure::Declined(reason) => reason.clone(),
            Failure::Completing(e) => e.to_string(),
        }
    }
}

impl Coordinator<'_> {
    /// Runs until every task finished, a stop-with-savepoint completed, or the job was
    /// cancelled or failed.
    pub fn run(&mut self) -> Result<Outcome, JobError> {
        let mut round = Round {
            finished: vec![None; self.tasks.len()],
            pending: None,
            last_end: Instant::now(),
            failures: 0,
            stopping: false,
        };
        loop {
            self.requests.take_from(&mut self.commands);
            if self.requests.cancel {
                self.cancel.store(true, Ordering::Relaxed);
            }
            if self.cancel.load(Ordering::Relaxed) {
                return Ok(Outcome::Interrupted);
            }
            if round.finished.iter().all(Option::is_some) {
                let parts: Vec<Part> = round.finished.iter().flatten().flatten().cloned().collect();
                return self.finish(parts);
            }
            if !round.stopping {
                if let Some(drain) = self.requests.stop {
                    if !self.start_stop(&mut round, drain) {
                        return Ok(Outcome::Interrupted);
                    }
                }
            }
            self.start_asked_savepoint(&mut round);
            self.start_due_checkpoint(&mut round);
            let expired = round
                .pending
                .as_ref()
                .is_some_and(|p| p.started.elapsed() > self.config.timeout);
            if expired {
                let p = round.pending.take().expect("some");
                self.failed(&mut round, p, Failure::Expired(self.config.timeout))?;
            }
            let report = crossbeam_channel::select! {
                recv(self.reports) -> r => match r {
                    Ok(r) => r,
                    Err(_) => return Ok(Outcome::Interrupted),
                },
                recv(self.commands) -> c => {
                    if let Ok(c) = c {
                        self.requests.apply(c);
                    }
                    continue;
                }
                default(Duration::from_millis(20)) => continue,
            };
            self.on_report(&mut round, report)?;
            if round
                .pending
                .as_ref()
                .is_some_and(|p| p.acks.iter().all(Option::is_some))
            {
                let p = round.pending.take().expect("some");
                if let Some(outcome) = self.acknowledged(&mut round, p)? {
                    return Ok(outcome);
                }
            }
        }
    }

    /// Starts the savepoint to stop with; `false` when there is nowhere to write it (the
    /// job is cancelled instead).
    fn start_stop(&mut self, round: &mut Round, drain: bool) -> bool {
        round.stopping = true;
        let Some(barrier) = self.savepoint_barrier() else {
            self.cancel.store(true, Ordering::Relaxed);
            return false;
        };
        // The savepoint replaces any checkpoint in flight.
        if let Some(p) = round.pending.take() {
            self.abort(p);
        }
        if drain {
            *self.control.drain_target.lock().expect("not poisoned") = Some(barrier);
            self.control.drain.store(true, Ordering::Relaxed);
        } else {
            round.pending = Some(self.trigger(barrier, &round.finished, true));
        }
        true
    }

    /// A savepoint the job goes on after, when one was asked for and nothing is in flight.
    fn start_asked_savepoint(&mut self, round: &mut Round) {
        if round.stopping || round.pending.is_some() || !self.requests.savepoint {
            return;
        }
        self.requests.savepoint = false;
        match self.savepoint_barrier() {
            Some(barrier) => round.pending = Some(self.trigger(barrier, &round.finished, false)),
            None => tracing::warn!("a savepoint was asked for, but no savepoint directory"),
        }
    }

    /// A periodic checkpoint, when one is due.
    fn start_due_checkpoint(&mut self, round: &mut Round) {
        let Some(interval) = self.config.interval else {
            return;
        };
        let Some(job_dir) = &self.job_dir else {
            return;
        };
        if round.pending.is_some()
            || round.stopping
            || round.last_end.elapsed() < interval.max(self.config.min_pause)
        {
            return;
        }
        let id = self.next_id;
        self.next_id += 1;
        let barrier = Arc::new(BarrierInfo {
            id,
            triggered: Instant::now(),
            dir: checkpoint_dir(job_dir, id),
            savepoint: false,
        });
        round.pending = Some(self.trigger(barrier, &round.finished, false));
    }

    fn on_report(&mut self, round: &mut Round, report: Report) -> Result<(), JobError> {
        match report {
            Report::Ack { id, task, parts } => {
                if let Some(p) = round.pending.as_mut().filter(|p| p.barrier.id == id) {
                    p.acks[task] = Some(parts);
                }
            }
            Report::Finished { task, parts } => {
                if let Some(p) = round.pending.as_mut() {
                    if p.acks[task].is_none() {
                        p.acks[task] = Some(parts.clone());
                    }
                }
                round.finished[task] = Some(parts);
            }
            Report::Decline { id, reason } => {
                if round.pending.as_ref().is_some_and(|p| p.barrier.id == id) {
                    let p = round.pending.take().expect("some");
                    self.failed(round, p, Failure::Declined(reason))?;
                }
            }
        }
        Ok(())
    }

    /// Every task acknowledged `p`: completes it. `Some(Stopped)` when it was the savepoint
    /// to stop with.
    fn acknowledged(
        &mut self,
        round: &mut Round,
        mut p: Pending,
    ) -> Result<Option<Outcome>, JobError> {
        let id = p.barrier.id;
        // A savepoint the job goes on after has no side effects: its transactions stay
        // pending until the next checkpoint (a restart from an earlier checkpoint would
        // otherwise replay what it made visible).
        let commits = !p.barrier.savepoint || p.stop;
        let parts: Vec<Part> = std::mem::take(&mut p.acks)
            .into_iter()
            .flatten()
            .flatten()
            .collect();
        match self.complete(&p.barrier, parts.into_iter(), false, commits) {
            Ok(()) => {
                round.failures = 0;
                round.last_end = Instant::now();
                if commits {
                    for t in &self.tasks {
                        let _ = t.notices.send(id);
                    }
                }
                if p.stop {
                    self.cancel.store(true, Ordering::Relaxed);
                    return Ok(Some(Outcome::Stopped(p.barrier.dir.url().to_string())));
                }
                Ok(None)
            }
            Err(e) => {
                self.failed(round, p, Failure::Completing(e))?;
                Ok(None)
            }
        }
    }

    /// A snapshot failed. The job goes on unless it was the savepoint to stop with (and a
    /// failed stop does not keep the job running), or more failed in a row than tolerated.
    fn failed(&mut self, round: &mut Round, p: Pending, why: Failure) -> Result<(), JobError> {
        let id = p.barrier.id;
        let reason = why.reason();
        tracing::warn!(checkpoint = id, savepoint = p.barrier.savepoint, %reason, "snapshot failed");
        let keep_running = p.stop && self.keep_running_if_stop_fails;
        if keep_running {
            // Reset before telling: a new stop asked for after the news stands.
            round.stopping = false;
            self.requests.stop = None;
        }
        self.emit(crate::JobEvent::SnapshotFailed {
            id,
            savepoint: p.barrier.savepoint,
            stop: p.stop,
            reason,
        });
        round.last_end = Instant::now();
        if keep_running {
            return Ok(());
        }
        if p.stop {
            return Err(match why {
                Failure::Expired(after) => CheckpointFailure::StopExpired { id, after }.into(),
                Failure::Declined(reason) => CheckpointFailure::StopDeclined { reason }.into(),
                Failure::Completing(e) => e,
            });
        }
        let completing = matches!(why, Failure::Completing(_));
        if !completing {
            self.abort(p);
        }
        round.failures += 1;
        if round.failures <= self.config.tolerable_failures {
            return Ok(());
        }
        let failures = round.failures;
        Err(match why {
            Failure::Expired(after) => CheckpointFailure::Expired {
                id,
                after,
                failures,
            }
            .into(),
            Failure::Declined(reason) => CheckpointFailure::Declined { id, reason }.into(),
            Failure::Completing(e) => e,
        })
    }

    fn emit(&self, event: crate::JobEvent) {
        if let Some(tx) = &self.events {
            let _ = tx.send(event);
        }
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
        let fail = |e: CheckpointError| JobError::Checkpoint(CheckpointFailure::Write(e));
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

#[cfg(test)]
mod tests {
    //! The coordinator's failure handling, driven by hand: the test plays the one task of a
    //! source → operator → sink job, receiving barriers and answering for it.

    use std::collections::BTreeMap;

    use weir_core::{Connector, Edge, Node, Partitioning};

    use super::*;
    use crate::control::JobLink;
    use crate::JobEvent;

    fn graph() -> JobGraph {
        let node = |uid: &str, kind| Node {
            uid: uid.into(),
            name: uid.into(),
            kind,
            parallelism: 1,
            states: vec![],
            watermarks: None,
        };
        let connector = |name: &str| Connector {
            name: name.into(),
            config: BTreeMap::new(),
        };
        let edge = |source, target| Edge {
            source,
            target,
            side_output: None,
            partitioning: Partitioning::Forward,
        };
        JobGraph {
            name: "t".into(),
            max_parallelism: 128,
            nodes: vec![
                node("source", NodeKind::Source(connector("datagen"))),
                node("map", NodeKind::Operator),
                node("sink", NodeKind::Sink(connector("blackhole"))),
            ],
            edges: vec![edge(0, 1), edge(1, 2)],
        }
    }

    /// What the test holds of a running coordinator.
    struct Task {
        barriers: Receiver<Arc<BarrierInfo>>,
        reports: Sender<Report>,
        events: Receiver<crate::JobEvent>,
        handle: crate::JobHandle,
    }

    impl Task {
        fn barrier(&self) -> Arc<BarrierInfo> {
            self.barriers
                .recv_timeout(Duration::from_secs(10))
                .expect("a barrier")
        }

        fn decline(&self, b: &BarrierInfo, reason: &str) {
            let reason = reason.into();
            self.reports
                .send(Report::Decline { id: b.id, reason })
                .unwrap();
        }

        fn ack(&self, b: &BarrierInfo) {
            let (id, task, parts) = (b.id, 0, vec![]);
            self.reports.send(Report::Ack { id, task, parts }).unwrap();
        }

        fn failures(&self) -> Vec<(u64, bool, String)> {
            self.events
                .try_iter()
                .filter_map(|e| match e {
                    JobEvent::SnapshotFailed {
                        id, stop, reason, ..
                    } => Some((id, stop, reason)),
                    _ => None,
                })
                .collect()
        }
    }

    /// Runs a coordinator with `config` on its own thread while `drive` plays the task;
    /// returns how the coordinator ended and the requests it left.
    fn run(
        config: CheckpointConfig,
        keep_running_if_stop_fails: bool,
        drive: impl FnOnce(&Task),
    ) -> (Result<Outcome, JobError>, Requests) {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path().to_str().unwrap()).unwrap();
        let graph = graph();
        let plan = ExecutionPlan::new(&graph);
        let (trigger_tx, barriers) = crossbeam_channel::unbounded();
        let (notices, _notices) = crossbeam_channel::unbounded();
        let (reports, report_rx) = crossbeam_channel::unbounded();
        let (events_tx, events) = crossbeam_channel::unbounded();
        let (handle, link) = JobLink::new();
        let task = Task {
            barriers,
            reports,
            events,
            handle,
        };
        let mut requests = Requests::default();
        let mut latest = None;
        let outcome = std::thread::scope(|s| {
            let coordinating = s.spawn(|| {
                Coordinator {
                    graph: &graph,
                    plan: &plan,
                    config: &config,
                    job_name: "t".into(),
                    job_id: "t".into(),
                    job_dir: Some(storage.child("t")),
                    tasks: vec![TaskLink {
                        triggers: Some(trigger_tx),
                        notices,
                    }],
                    reports: report_rx,
                    cancel: Arc::default(),
                    commands: link.commands.clone(),
                    requests: &mut requests,
                    events: Some(events_tx),
                    keep_running_if_stop_fails,
                    savepoint_dir: Some(storage.child("savepoints")),
                    control: Arc::default(),
                    next_id: 1,
                    latest: &mut latest,
                    backend: "memory",
                }
                .run()
            });
            drive(&task);
            // Whatever the test left running ends.
            task.handle.send(JobCommand::Cancel);
            coordinating.join().unwrap()
        });
        (outcome, requests)
    }

    fn every(ms: u64) -> CheckpointConfig {
        CheckpointConfig {
            interval: Some(Duration::from_millis(ms)),
            ..CheckpointConfig::default()
        }
    }

    #[test]
    fn checkpoints_may_fail_as_often_in_a_row_as_tolerated() {
        let config = CheckpointConfig {
            tolerable_failures: 1,
            ..every(5)
        };
        let (outcome, _) = run(config, false, |task| {
            let b = task.barrier();
            task.decline(&b, "disk full");
            // Tolerated: the next checkpoint comes, and completes (the count starts over).
            let b = task.barrier();
            task.ack(&b);
            let b = task.barrier();
            task.decline(&b, "disk full");
            let b = task.barrier();
            task.decline(&b, "disk full again");
            std::thread::sleep(Duration::from_millis(50));
            let failures = task.failures();
            assert_eq!(failures.len(), 3, "{failures:?}");
        });
        let e = outcome.err().expect("failed").to_string();
        assert_eq!(
            e,
            "checkpointing failed: checkpoint 4 failed: disk full again"
        );
    }

    #[test]
    fn a_checkpoint_that_expires_fails_the_job_when_none_is_tolerated() {
        let config = CheckpointConfig {
            timeout: Duration::from_millis(30),
            ..every(5)
        };
        let (outcome, _) = run(config, false, |task| {
            task.barrier();
            std::thread::sleep(Duration::from_millis(300));
        });
        let e = outcome.err().expect("failed").to_string();
        assert!(
            e.contains("checkpoint 1 expired after 30ms (1 failed in a row)"),
            "{e}"
        );
    }

    #[test]
    fn a_failed_stop_keeps_the_job_running_and_a_new_stop_is_taken() {
        let (outcome, requests) = run(CheckpointConfig::default(), true, |task| {
            task.handle.send(JobCommand::Stop { drain: false });
            let b = task.barrier();
            assert!(b.savepoint);
            task.decline(&b, "no space");
            std::thread::sleep(Duration::from_millis(50));
            assert_eq!(task.failures(), [(1, true, "no space".to_string())]);
            // Asked again after the news: a new savepoint, and this one completes.
            task.handle.send(JobCommand::Stop { drain: false });
            let b = task.barrier();
            assert_eq!(b.id, 2);
            task.ack(&b);
        });
        match outcome {
            Ok(Outcome::Stopped(at)) => assert!(at.contains("/savepoints/savepoint-t-2-"), "{at}"),
            Ok(_) => panic!("not stopped"),
            Err(e) => panic!("{e}"),
        }
        assert_eq!(requests.stop, Some(false), "the stop that completed");
    }

    #[test]
    fn a_failed_stop_fails_the_attempt_when_the_job_must_not_go_on() {
        let (outcome, requests) = run(CheckpointConfig::default(), false, |task| {
            task.handle.send(JobCommand::Stop { drain: false });
            let b = task.barrier();
            task.decline(&b, "no space");
        });
        let e = outcome.err().expect("failed").to_string();
        assert!(
            e.contains("the savepoint to stop with failed: no space"),
            "{e}"
        );
        // Still asked for: the next attempt stops again.
        assert_eq!(requests.stop, Some(false));
    }

    #[test]
    fn a_savepoint_is_taken_once_per_request_and_cancel_interrupts() {
        let (outcome, requests) = run(CheckpointConfig::default(), true, |task| {
            task.handle.send(JobCommand::Savepoint);
            let b = task.barrier();
            assert!(b.savepoint);
            task.ack(&b);
            std::thread::sleep(Duration::from_millis(50));
            assert!(task.barriers.is_empty(), "one savepoint per request");
            let done: Vec<_> = task
                .events
                .try_iter()
                .filter_map(|e| match e {
                    JobEvent::Snapshot(s) => Some(s.savepoint),
                    _ => None,
                })
                .collect();
            assert_eq!(done, [true]);
        });
        assert!(matches!(outcome, Ok(Outcome::Interrupted)));
        assert!(requests.cancel && !requests.savepoint);
    }
}
