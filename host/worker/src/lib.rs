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

pub mod connectors;
pub mod exchange;
pub mod plan;
mod task;

use std::collections::BTreeSet;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use connectors::ConnectorError;
use exchange::{Downstream, InputGate, Outputs};
use plan::{ExecutionPlan, Route};
use task::{JobCounters, Task, TaskInput};
use weir_core::frame::FrameError;
use weir_core::{KeyGroupRange, NodeKind, Partitioning};
use weir_runtime::{ChainSpec, GuestError, JobComponent};
use weir_state::MemoryStateBackend;

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
}

impl JobOptions {
    /// Options with the given default parallelism.
    pub fn new(parallelism: u32) -> Self {
        JobOptions {
            parallelism,
            args: Vec::new(),
            channel_capacity: 4,
            cancel: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Adds a job argument.
    pub fn arg(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.args.push((key.into(), value.into()));
        self
    }
}

/// Records in and out of one operator, over all its subtasks.
#[derive(Debug, Clone, PartialEq, Eq)]
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
}

impl fmt::Display for JobSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "job '{}' finished in {:.3} s",
            self.name,
            self.duration.as_secs_f64()
        )?;
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

/// Runs a job to completion (bounded sources) or until `options.cancel` is set.
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
    let graph = component.plan(&options.args, options.parallelism)?;
    let plan = ExecutionPlan::new(&graph);
    for v in &plan.vertices {
        if v.guest.is_empty() && v.source.is_some() && v.sink.is_some() {
            return Err(JobError::Unsupported(format!(
                "sink '{}' reads straight from source '{}'; the SDK puts an operator between them",
                graph.nodes[v.sink.unwrap_or_default()].uid,
                graph.nodes[v.source.unwrap_or_default()].uid
            )));
        }
    }
    let max_p = graph.max_parallelism;
    tracing::info!(job = %graph.name, vertices = plan.vertices.len(), "starting job");

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
                    Some(connectors::open_source(c, i, v.parallelism)?)
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

    let counters = Arc::new(JobCounters::new(graph.nodes.len(), graph.edges.len()));
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
            let label = format!("{}#{i}", v.name(&graph));
            let input = match (v.source, readers[vi][i as usize].take()) {
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
                _ if graph.nodes[v.head()].kind == NodeKind::GuestSource => TaskInput::GuestSource,
                _ => {
                    let (rx, silent) = std::mem::take(&mut receivers[vi][i as usize])
                        .into_iter()
                        .unzip();
                    TaskInput::Gate(InputGate::new(rx, silent))
                }
            };
            let guest = if v.guest.is_empty() {
                None
            } else {
                let head = v.guest[0];
                let keyed = graph
                    .inputs(head)
                    .any(|e| e.partitioning == Partitioning::Hash);
                let backend = keyed.then(|| {
                    Box::new(MemoryStateBackend::new(
                        graph.nodes[head].states.clone(),
                        KeyGroupRange::for_subtask(max_p, v.parallelism, i),
                    )) as Box<dyn weir_state::KeyedStateBackend>
                });
                let nodes: Vec<u32> = v.guest.iter().map(|&n| n as u32).collect();
                Some(component.open_chain(ChainSpec {
                    nodes: &nodes,
                    subtask: i,
                    parallelism: v.parallelism,
                    args: &options.args,
                    backend,
                    max_parallelism: max_p,
                    label: label.clone(),
                })?)
            };
            let sink = match v.sink {
                Some(s) => {
                    let NodeKind::Sink(c) = &graph.nodes[s].kind else {
                        unreachable!("vertex sinks are sink nodes")
                    };
                    Some(connectors::open_sink(c, i, v.parallelism)?)
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
                options.cancel.clone(),
            ));
        }
    }
    drop(receivers);
    drop(senders);

    let mut handles = Vec::new();
    for t in tasks {
        let label = t.label.clone();
        let cancel = options.cancel.clone();
        let handle = std::thread::Builder::new()
            .name(format!("weir-task-{label}"))
            .spawn(move || {
                let r = t.run();
                if r.is_err() {
                    cancel.store(true, Ordering::Relaxed);
                }
                r
            })
            .map_err(|e| JobError::Unsupported(format!("cannot start a task thread: {e}")))?;
        handles.push((label, handle));
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
            options.cancel.store(true, Ordering::Relaxed);
            Err(TaskError::Protocol(format!(
                "internal error in the host: {msg}"
            )))
        });
        match outcome {
            Ok(()) => {}
            Err(TaskError::Cancelled) => cancelled = true,
            Err(error) => {
                tracing::info!(task = %label, %error, "task failed");
                if failure.is_none() {
                    failure = Some(JobError::Task { task: label, error });
                }
            }
        }
    }
    if let Some(f) = failure {
        return Err(f);
    }
    if cancelled {
        return Err(JobError::Cancelled);
    }
    let node_in = |n: usize| counters.node_in[n].load(Ordering::Relaxed);
    let operators = graph
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
        .collect();
    Ok(JobSummary {
        name: graph.name.clone(),
        operators,
        duration: started.elapsed(),
    })
}
