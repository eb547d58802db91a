//! One run of a job's tasks, from a restore point or from scratch: sources opened, channels
//! wired ([`wiring`]), keyed state opened and restored ([`backend`]), guest chains and sinks
//! opened, one thread per subtask ([`threads`]), and the checkpoint coordinator on the
//! calling thread until the attempt ends.

mod backend;
mod threads;
mod wiring;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use weir_checkpoint::{Storage, SubtaskState};
use weir_core::{JobGraph, NodeKind, Partitioning};
use weir_runtime::{ChainSpec, GuestChain, JobComponent, LogBudget};

use crate::checkpoint::{self, Control, Coordinator, Outcome, Report, Restore, TaskLink};
use crate::connectors;
use crate::control::{JobLink, Requests};
use crate::exchange::{InputGate, Outputs};
use crate::plan::{ExecutionPlan, Route, Vertex};
use crate::task::{JobCounters, Task, TaskInput, TaskLinks};
use crate::{paths, CheckpointMode, JobError, JobEvent, JobOptions, LiveCounters, RestoreError};

/// What every attempt of a job shares.
pub(crate) struct Job<'a> {
    pub graph: &'a Arc<JobGraph>,
    pub plan: &'a Arc<ExecutionPlan>,
    pub job_id: &'a str,
    /// `<checkpoint root>/<job id>`, when checkpointing to storage.
    pub job_dir: Option<Storage>,
    /// A source runs in the guest (such jobs stop without a savepoint).
    pub guest_source: bool,
    /// One allowance of guest log lines for the job, whatever its restarts.
    pub logs: &'a Arc<LogBudget>,
}

/// How an attempt that did not fail ended.
pub(crate) struct Ended {
    pub counters: Arc<JobCounters>,
    /// The savepoint it stopped with.
    pub savepoint: Option<String>,
    /// From its start until its tasks ran.
    pub startup: Duration,
}

/// One run of the job's tasks.
pub(crate) struct Attempt<'a> {
    pub job: &'a Job<'a>,
    pub restore: Option<&'a Restore>,
    /// Restarts before it.
    pub number: u32,
}

/// What the tasks of one attempt share with each other and with the coordinator.
struct Shared {
    cancel: Arc<AtomicBool>,
    control: Arc<Control>,
    reports: crossbeam_channel::Sender<Report>,
    counters: Arc<JobCounters>,
}

impl Attempt<'_> {
    /// Runs the attempt until its tasks finish, it stops with a savepoint, or it is
    /// cancelled or fails. `next_id` is the next checkpoint id (advanced past the ones this
    /// attempt used); `latest` is set to each checkpoint it completes.
    pub fn run(
        &self,
        component: &Arc<JobComponent>,
        options: &JobOptions,
        link: &JobLink,
        requests: &mut Requests,
        next_id: &mut u64,
        latest: &mut Option<Restore>,
    ) -> Result<Ended, JobError> {
        let started = Instant::now();
        let (graph, plan) = (self.job.graph, self.job.plan);
        // A tenant's files stay in its directories: checked again now, as the connectors
        // are about to open them (a directory may have become a symlink since submission).
        let allowed = options.allowed_paths.as_deref();
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

        let mut readers = self.open_readers(allowed)?;
        let mut wiring = wiring::Wiring::new(graph, plan, &readers, options.channel_capacity);
        let tasks_total = plan.vertices.iter().map(|v| v.parallelism as usize).sum();
        let (report_tx, report_rx) = crossbeam_channel::unbounded::<Report>();
        let shared = Shared {
            cancel: Arc::new(AtomicBool::new(false)),
            control: Arc::new(Control::default()),
            reports: report_tx,
            counters: Arc::new(JobCounters::new(
                graph.nodes.len(),
                graph.edges.len(),
                tasks_total,
            )),
        };
        let mut tasks = Vec::new();
        let mut links = Vec::new();
        for (vi, v) in plan.vertices.iter().enumerate() {
            for i in 0..v.parallelism {
                let reader = readers[vi][i as usize].take();
                let (task, link_) = self.task(
                    component,
                    options,
                    link,
                    &shared,
                    &mut wiring,
                    vi,
                    v,
                    i,
                    reader,
                    links.len(),
                )?;
                tasks.push(task);
                links.push(link_);
            }
        }
        drop(wiring);
        let Shared {
            cancel,
            control,
            reports,
            counters,
        } = shared;
        drop(reports);

        let handles = threads::spawn(tasks, &cancel)?;
        let startup = started.elapsed();
        link.emit(JobEvent::Running {
            attempt: self.number,
            counters: LiveCounters {
                graph: graph.clone(),
                plan: plan.clone(),
                counters: counters.clone(),
            },
        });

        let savepoint_dir = match (&options.savepoint_dir, self.job.guest_source) {
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
            job_id: self.job.job_id.to_string(),
            job_dir: self.job.job_dir.clone(),
            tasks: links,
            reports: report_rx,
            cancel: cancel.clone(),
            commands: link.commands.clone(),
            requests,
            events: link.events.clone(),
            keep_running_if_stop_fails: options.keep_running_if_stop_fails,
            savepoint_dir,
            control,
            next_id: *next_id,
            latest,
            backend: options.state_backend.name(),
        };
        let outcome = coordinator.run();
        *next_id = coordinator.next_id;
        if outcome.is_err() {
            cancel.store(true, std::sync::atomic::Ordering::Relaxed);
        }

        let joined = threads::join(handles, &cancel);
        if let Some(f) = joined.failure {
            return Err(f);
        }
        match outcome? {
            Outcome::Finished if !joined.cancelled => Ok(Ended {
                counters,
                savepoint: None,
                startup,
            }),
            Outcome::Stopped(savepoint) => Ok(Ended {
                counters,
                savepoint: Some(savepoint),
                startup,
            }),
            _ => Err(JobError::Cancelled),
        }
    }

    /// What subtask `i` of operator `uid` restores (`None`: nothing, or not restoring).
    fn restored(&self, uid: &str, p: u32, i: u32) -> Result<Option<SubtaskState>, JobError> {
        match self.restore {
            Some(r) => r.subtask(uid, p, i),
            None => Ok(None),
        }
    }

    /// Every subtask's source reader, restored to its position. Opened before anything
    /// else: which subtasks will never produce a record is known then.
    fn open_readers(
        &self,
        allowed: Option<&[std::path::PathBuf]>,
    ) -> Result<wiring::Readers, JobError> {
        let graph = self.job.graph;
        let mut readers = Vec::new();
        for v in &self.job.plan.vertices {
            let mut per_subtask = Vec::new();
            for i in 0..v.parallelism {
                let Some(s) = v.source else {
                    per_subtask.push(None);
                    continue;
                };
                let NodeKind::Source(c) = &graph.nodes[s].kind else {
                    unreachable!("vertex sources are source nodes")
                };
                let mut reader = connectors::open_source_within(c, i, v.parallelism, allowed)?;
                let uid = &graph.nodes[s].uid;
                // A subtask restored finished reads nothing.
                let finished = self
                    .restored(&graph.nodes[v.head()].uid, v.parallelism, i)?
                    .is_some_and(|r| r.finished);
                let positions = self
                    .restore
                    .filter(|_| !finished)
                    .and_then(|r| r.source_positions(uid));
                if let Some((positions, old_p)) = positions {
                    reader
                        .restore(&positions, old_p)
                        .map_err(|e| RestoreError::Source {
                            operator: uid.clone(),
                            message: e.to_string(),
                        })?;
                }
                per_subtask.push(Some(reader));
            }
            readers.push(per_subtask);
        }
        Ok(readers)
    }

    /// Subtask `i` of vertex `vi`, and the coordinator's link to it.
    #[allow(clippy::too_many_arguments)]
    fn task(
        &self,
        component: &Arc<JobComponent>,
        options: &JobOptions,
        link: &JobLink,
        shared: &Shared,
        wiring: &mut wiring::Wiring,
        vi: usize,
        v: &Vertex,
        i: u32,
        reader: Option<Box<dyn connectors::SourceReader>>,
        index: usize,
    ) -> Result<(Task, TaskLink), JobError> {
        let (graph, plan) = (self.job.graph, self.job.plan);
        let max_p = graph.max_parallelism;
        let label = format!("{}#{i}", v.name(graph));
        let head_uid = graph.nodes[v.head()].uid.clone();
        let restored = self.restored(&head_uid, v.parallelism, i)?;
        let input = match (v.source, reader) {
            (Some(s), Some(reader)) => TaskInput::Source {
                reader,
                edges: graph
                    .edges
                    .iter()
                    .enumerate()
                    .filter(|(_, e)| e.source == s)
                    .map(|(k, _)| k as u32)
                    .collect(),
            },
            _ if graph.nodes[v.head()].kind == NodeKind::GuestSource => TaskInput::GuestSource,
            _ => {
                let (rx, silent) = wiring.take_inputs(vi, i);
                let mut gate = InputGate::new(rx, silent);
                gate.set_aligned(options.checkpoints.mode == CheckpointMode::ExactlyOnce);
                if let Some(w) = restored.as_ref().and_then(|r| r.watermark) {
                    gate.set_watermark(weir_core::Watermark(w));
                }
                TaskInput::Gate(gate)
            }
        };
        let keyed_head = v.guest.first().copied().filter(|&g| {
            graph
                .inputs(g)
                .any(|e| e.partitioning == Partitioning::Hash)
        });
        // Shared files a restored RocksDB database already has in storage.
        let mut uploaded = std::collections::HashMap::new();
        let guest = if v.guest.is_empty() {
            None
        } else {
            let backend = match keyed_head {
                Some(head) => {
                    let finished = restored.as_ref().is_some_and(|r| r.finished);
                    let opened = backend::open(
                        &graph.nodes[head],
                        self.restore.filter(|_| !finished),
                        self.job.job_dir.as_ref(),
                        &options.state_backend,
                        weir_core::KeyGroupRange::for_subtask(max_p, v.parallelism, i),
                    )?;
                    uploaded = opened.uploaded;
                    Some(opened.backend)
                }
                None => None,
            };
            Some(self.open_chain(component, options, link, shared, v, i, &label, backend)?)
        };
        let sink = match v.sink {
            Some(s) => {
                let NodeKind::Sink(c) = &graph.nodes[s].kind else {
                    unreachable!("vertex sinks are sink nodes")
                };
                let shared_output = options.shared_output.then(|| self.job.logs.clone());
                Some(connectors::open_sink_within(
                    c,
                    i,
                    v.parallelism,
                    options.allowed_paths.as_deref(),
                    shared_output,
                )?)
            }
            None => None,
        };
        let nodes = v.nodes();
        let own_edges: Vec<bool> = graph
            .edges
            .iter()
            .enumerate()
            .map(|(k, e)| nodes.contains(&e.source) && plan.routes[k] != Route::Chained)
            .collect();
        let outputs = Outputs::new(
            plan.routes.clone(),
            own_edges,
            wiring.take_outputs(vi, i),
            sink,
            i,
            max_p,
        );
        let (trigger_tx, trigger_rx) = match input {
            TaskInput::Source { .. } => {
                let (tx, rx) = crossbeam_channel::unbounded();
                (Some(tx), rx)
            }
            _ => (None, crossbeam_channel::never()),
        };
        let (notice_tx, notice_rx) = crossbeam_channel::unbounded();
        let source_strategy = v.source.and_then(|s| graph.nodes[s].watermarks);
        let strategy =
            source_strategy.or_else(|| v.guest.iter().find_map(|&g| graph.nodes[g].watermarks));
        let task = Task::new(
            label,
            input,
            guest,
            outputs,
            strategy,
            source_strategy.is_some(),
            max_p,
            shared.counters.clone(),
            v.clone(),
            shared.cancel.clone(),
            TaskLinks {
                index,
                subtask: i,
                reports: shared.reports.clone(),
                triggers: trigger_rx,
                notices: notice_rx,
                control: shared.control.clone(),
                head_uid,
                keyed_uid: keyed_head.map(|g| graph.nodes[g].uid.clone()),
                source_uid: v.source.map(|n| graph.nodes[n].uid.clone()),
                sink_uid: v.sink.map(|n| graph.nodes[n].uid.clone()),
                restored,
                uploaded,
            },
        );
        let link_ = TaskLink {
            triggers: trigger_tx,
            notices: notice_tx,
        };
        Ok((task, link_))
    }

    /// Opens the guest instance of a subtask's chain, its state charged to the job's
    /// accounts.
    #[allow(clippy::too_many_arguments)]
    fn open_chain(
        &self,
        component: &Arc<JobComponent>,
        options: &JobOptions,
        link: &JobLink,
        shared: &Shared,
        v: &Vertex,
        i: u32,
        label: &str,
        backend: Option<Box<dyn weir_state::KeyedStateBackend>>,
    ) -> Result<GuestChain, JobError> {
        let mut args = options.args.clone();
        args.push(("weir.attempt".into(), self.number.to_string()));
        let nodes: Vec<u32> = v.guest.iter().map(|&n| n as u32).collect();
        let mut chain = component.open_chain(ChainSpec {
            nodes: &nodes,
            subtask: i,
            parallelism: v.parallelism,
            args: &args,
            backend,
            max_parallelism: self.job.graph.max_parallelism,
            label: label.to_string(),
            interrupt: Some(shared.cancel.clone()),
            logs: Some(self.job.logs.clone()),
        })?;
        let limits = &link.state_limits;
        chain.set_state_meter(weir_state::StateMeter::new(
            limits.accounts.clone(),
            limits.max_value,
        ))?;
        Ok(chain)
    }
}
