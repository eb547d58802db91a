//! The local TaskManager: runs the jobs the JobManager deploys to it and reports what
//! happens to them. The two sides talk only through [`TaskManagerCommand`] and
//! [`TaskManagerEvent`] messages, so a TaskManager in another process can take its place
//! (the component travels by digest there; here it is handed over compiled).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use weir_runtime::JobComponent;
use weir_state::{Measure, StateAccount};
use weir_worker::{
    CheckpointConfig, CheckpointMode, JobError, JobEvent, JobOptions, OperatorProgress,
    RestartStrategy, StateBackendKind, StateLimits,
};

/// Everything a TaskManager needs to run a job.
#[derive(Clone)]
pub struct Deployment {
    /// The job's id (also its directory under the checkpoint root).
    pub job: String,
    /// Its tenant (for logs).
    pub tenant: String,
    /// The compiled component, with the tenant's sandbox limits.
    pub component: Arc<JobComponent>,
    /// Default parallelism.
    pub parallelism: u32,
    /// Job arguments.
    pub args: Vec<(String, String)>,
    /// Checkpoint root URL.
    pub checkpoint_dir: String,
    /// Time between checkpoints.
    pub checkpoint_interval: Option<Duration>,
    /// Savepoint root URL.
    pub savepoint_dir: String,
    /// Start from this savepoint.
    pub from_savepoint: Option<String>,
    /// Drop state of removed operators.
    pub allow_non_restored_state: bool,
    /// `Some(dir)`: RocksDB with its working files under `dir`.
    pub rocksdb_dir: Option<std::path::PathBuf>,
    /// Restarts allowed after task failures.
    pub restart_attempts: u32,
    /// The tenant's directories for file connectors.
    pub allowed_paths: Vec<std::path::PathBuf>,
    /// Continue from the latest completed checkpoint under the job's checkpoint directory.
    pub resume: bool,
    /// Limits on the job's keyed state.
    pub state_limits: DeployedStateLimits,
}

/// Limits on a job's keyed state, enforced by the TaskManager as the state grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeployedStateLimits {
    /// The job's state.
    pub job_bytes: u64,
    /// All the state of its tenant's jobs on this TaskManager.
    pub tenant_bytes: u64,
    /// One value (a map entry: user key and value).
    pub value_bytes: u64,
}

/// JobManager → TaskManager.
pub enum TaskManagerCommand {
    /// Run a job.
    Deploy(Box<Deployment>),
    /// Cancel a job.
    Cancel {
        /// Job id.
        job: String,
    },
    /// Take a savepoint; the job goes on.
    TriggerSavepoint {
        /// Job id.
        job: String,
    },
    /// Stop with a savepoint.
    Stop {
        /// Job id.
        job: String,
        /// End the input first.
        drain: bool,
    },
}

/// TaskManager → JobManager: something happened to a job. A plain value (serde-encodable),
/// as a TaskManager in another process will send it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TaskManagerEvent {
    /// Job id.
    pub job: String,
    /// What.
    pub kind: TaskManagerEventKind,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum TaskManagerEventKind {
    /// Every task of an attempt runs.
    Running {
        /// Restarts before it.
        attempt: u32,
    },
    /// A task failed; the job restarts.
    Restarting {
        /// The restart about to happen (1 is the first).
        attempt: u32,
        /// What failed.
        cause: String,
    },
    /// A checkpoint or savepoint completed.
    Snapshot(weir_worker::SnapshotStats),
    /// A checkpoint or savepoint failed.
    SnapshotFailed {
        /// A savepoint.
        savepoint: bool,
        /// The savepoint to stop with (the job goes on running).
        stop: bool,
        /// Why.
        reason: String,
    },
    /// Per-operator progress, sampled about once a second while the job runs.
    Metrics {
        /// Operators in topological order.
        operators: Vec<OperatorProgress>,
        /// Guest time and memory of the current attempt.
        usage: weir_worker::JobUsage,
        /// When sampled, ms since the epoch (rates are computed between samples).
        sampled_ms: i64,
    },
    /// The job ended.
    Ended(JobOutcome),
}

/// How a job ended on the TaskManager.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum JobOutcome {
    /// Input consumed, or stopped with the savepoint given.
    Finished {
        /// The savepoint it stopped with.
        savepoint: Option<String>,
        /// Final counts.
        operators: Vec<weir_worker::OperatorSummary>,
    },
    /// Cancelled.
    Canceled,
    /// Failed beyond its restart strategy.
    Failed(String),
}

/// Per running job: the flags its coordinator watches.
struct Controls {
    cancel: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    savepoint_now: Arc<AtomicBool>,
    drain: Arc<AtomicBool>,
}

/// The TaskManager.
pub struct TaskManager {
    commands: Sender<TaskManagerCommand>,
}

impl TaskManager {
    /// Starts a TaskManager that reports to `events`, whose jobs' keyed state may hold at
    /// most `state_memory_budget` bytes of memory together.
    pub fn start(
        events: Sender<TaskManagerEvent>,
        state_memory_budget: u64,
    ) -> std::io::Result<TaskManager> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let accounts = StateAccounts::new(state_memory_budget);
        std::thread::Builder::new()
            .name("weir-taskmanager".into())
            .spawn(move || serve(rx, events, accounts))?;
        Ok(TaskManager { commands: tx })
    }

    /// Sends a command (dropped if the TaskManager is gone).
    pub fn send(&self, command: TaskManagerCommand) {
        let _ = self.commands.send(command);
    }
}

/// What this TaskManager's jobs' keyed state is charged to: its memory budget and each
/// tenant's total.
struct StateAccounts {
    memory: Arc<StateAccount>,
    tenants: HashMap<String, Arc<StateAccount>>,
}

impl StateAccounts {
    fn new(budget: u64) -> Self {
        StateAccounts {
            memory: StateAccount::new(
                "the server's state memory budget (state_memory_budget_bytes)",
                budget,
                Measure::Memory,
            ),
            tenants: HashMap::new(),
        }
    }

    /// The accounts of a job about to be deployed.
    fn for_job(&mut self, d: &Deployment) -> StateLimits {
        let limits = d.state_limits;
        let tenant = self
            .tenants
            .entry(d.tenant.clone())
            .or_insert_with(|| {
                StateAccount::new(
                    format!("tenant '{}''s max_total_state_bytes", d.tenant),
                    limits.tenant_bytes,
                    Measure::Total,
                )
            })
            .clone();
        let job = StateAccount::new(
            format!("tenant '{}''s max_state_bytes per job", d.tenant),
            limits.job_bytes,
            Measure::Total,
        );
        StateLimits {
            accounts: vec![job, tenant, self.memory.clone()],
            max_value: limits.value_bytes,
        }
    }
}

fn serve(
    commands: Receiver<TaskManagerCommand>,
    events: Sender<TaskManagerEvent>,
    mut accounts: StateAccounts,
) {
    let running: Arc<Mutex<HashMap<String, Controls>>> = Arc::default();
    for command in commands {
        match command {
            TaskManagerCommand::Deploy(d) => {
                let controls = Controls {
                    cancel: Arc::default(),
                    stop: Arc::default(),
                    savepoint_now: Arc::default(),
                    drain: Arc::default(),
                };
                let options = match options(&d, &controls) {
                    Ok(mut o) => {
                        o.state_limits = accounts.for_job(&d);
                        o
                    }
                    Err(e) => {
                        let _ = events.send(TaskManagerEvent {
                            job: d.job.clone(),
                            kind: TaskManagerEventKind::Ended(JobOutcome::Failed(e)),
                        });
                        continue;
                    }
                };
                running
                    .lock()
                    .expect("not poisoned")
                    .insert(d.job.clone(), controls);
                let (events2, running2) = (events.clone(), running.clone());
                let job = d.job.clone();
                let spawned = std::thread::Builder::new()
                    .name(format!("weir-job-{}", &d.job[..8.min(d.job.len())]))
                    .spawn(move || {
                        // Whatever happens, the JobManager hears that the job ended (and
                        // frees its slots).
                        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            run(&d, options, &events2)
                        }));
                        if ran.is_err() {
                            let _ = events2.send(TaskManagerEvent {
                                job: d.job.clone(),
                                kind: TaskManagerEventKind::Ended(JobOutcome::Failed(
                                    "internal error in the TaskManager (see its log)".into(),
                                )),
                            });
                        }
                        running2
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(&d.job);
                    });
                if let Err(e) = spawned {
                    tracing::error!(error = %e, "cannot start a job thread");
                    running.lock().expect("not poisoned").remove(&job);
                    let _ = events.send(TaskManagerEvent {
                        job,
                        kind: TaskManagerEventKind::Ended(JobOutcome::Failed(format!(
                            "cannot start the job's thread: {e}"
                        ))),
                    });
                }
            }
            TaskManagerCommand::Cancel { job } => {
                if let Some(c) = running.lock().expect("not poisoned").get(&job) {
                    c.cancel.store(true, Ordering::Relaxed);
                }
            }
            TaskManagerCommand::TriggerSavepoint { job } => {
                if let Some(c) = running.lock().expect("not poisoned").get(&job) {
                    c.savepoint_now.store(true, Ordering::Relaxed);
                }
            }
            TaskManagerCommand::Stop { job, drain } => {
                if let Some(c) = running.lock().expect("not poisoned").get(&job) {
                    // `drain` is seen by whoever sees `stop`.
                    c.drain.store(drain, Ordering::Relaxed);
                    c.stop.store(true, Ordering::Release);
                }
            }
        }
    }
}

fn options(d: &Deployment, c: &Controls) -> Result<JobOptions, String> {
    let open = |url: &str| weir_checkpoint::Storage::open(url).map_err(|e| format!("{url}: {e}"));
    let mut o = JobOptions::new(d.parallelism);
    o.args = d.args.clone();
    o.cancel = c.cancel.clone();
    o.stop = c.stop.clone();
    o.savepoint_now = c.savepoint_now.clone();
    o.drain = c.drain.clone();
    o.keep_running_if_stop_fails = true;
    o.shared_output = true;
    o.resume = d.resume;
    o.job_id = Some(d.job.clone());
    o.checkpoints = CheckpointConfig {
        storage: Some(open(&d.checkpoint_dir)?),
        interval: d.checkpoint_interval,
        mode: CheckpointMode::ExactlyOnce,
        ..CheckpointConfig::default()
    };
    o.savepoint_dir = Some(open(&d.savepoint_dir)?);
    o.from_savepoint = d.from_savepoint.as_deref().map(open).transpose()?;
    o.allow_non_restored_state = d.allow_non_restored_state;
    o.allowed_paths = Some(Arc::new(d.allowed_paths.clone()));
    o.state_backend = match &d.rocksdb_dir {
        Some(dir) => StateBackendKind::RocksDb(dir.clone()),
        None => StateBackendKind::Memory,
    };
    o.restart = Some(match d.restart_attempts {
        0 => RestartStrategy::None,
        attempts => RestartStrategy::backoff(attempts, RestartStrategy::DEFAULT_INITIAL),
    });
    Ok(o)
}

/// Runs one job on this thread; a second thread forwards its events and samples its
/// counters.
fn run(d: &Deployment, mut options: JobOptions, events: &Sender<TaskManagerEvent>) {
    // Every log line of the job (its tasks' too) names it and its tenant.
    let span = tracing::info_span!("job", id = %d.job, tenant = %d.tenant);
    let _entered = span.enter();
    let (tx, rx) = crossbeam_channel::unbounded();
    options.events = Some(tx);
    let job = d.job.clone();
    let forward = {
        let events = events.clone();
        let job = job.clone();
        std::thread::Builder::new()
            .name(format!("weir-jobev-{}", &job[..8.min(job.len())]))
            .spawn(move || forward(&job, rx, &events))
    };
    let outcome = match weir_worker::run_job(&d.component, &options) {
        Ok(summary) => JobOutcome::Finished {
            savepoint: summary.savepoint,
            operators: summary.operators,
        },
        Err(JobError::Cancelled) => JobOutcome::Canceled,
        Err(e) => JobOutcome::Failed(e.to_string()),
    };
    // RocksDB's working files go with the job (its checkpoints are the JobManager's call).
    if let Some(dir) = &d.rocksdb_dir {
        let _ = std::fs::remove_dir_all(dir);
    }
    drop(options);
    if let Ok(h) = forward {
        let _ = h.join();
    }
    let _ = events.send(TaskManagerEvent {
        job,
        kind: TaskManagerEventKind::Ended(outcome),
    });
}

fn forward(job: &str, rx: Receiver<JobEvent>, events: &Sender<TaskManagerEvent>) {
    let send = |kind| {
        let _ = events.send(TaskManagerEvent {
            job: job.to_string(),
            kind,
        });
    };
    let mut counters: Option<weir_worker::LiveCounters> = None;
    let mut last_sample = Instant::now();
    loop {
        let event = rx.recv_timeout(Duration::from_millis(250));
        if last_sample.elapsed() >= Duration::from_secs(1) {
            if let Some(c) = &counters {
                send(TaskManagerEventKind::Metrics {
                    operators: c.operators(),
                    usage: c.usage(),
                    sampled_ms: weir_core::now_ms(),
                });
            }
            last_sample = Instant::now();
        }
        match event {
            Ok(JobEvent::Running {
                attempt,
                counters: c,
            }) => {
                counters = Some(c);
                send(TaskManagerEventKind::Running { attempt });
            }
            Ok(JobEvent::Restarting { attempt, cause, .. }) => {
                counters = None;
                send(TaskManagerEventKind::Restarting { attempt, cause });
            }
            Ok(JobEvent::Snapshot(s)) => send(TaskManagerEventKind::Snapshot(s)),
            Ok(JobEvent::SnapshotFailed {
                savepoint,
                stop,
                reason,
                ..
            }) => send(TaskManagerEventKind::SnapshotFailed {
                savepoint,
                stop,
                reason,
            }),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                if let Some(c) = &counters {
                    send(TaskManagerEventKind::Metrics {
                        operators: c.operators(),
                        usage: c.usage(),
                        sampled_ms: weir_core::now_ms(),
                    });
                }
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_worker::{JobUsage, OperatorSummary, SnapshotStats};

    /// Every event a TaskManager sends survives encoding, as it will between processes.
    #[test]
    fn events_round_trip_through_json() {
        let summary = OperatorSummary {
            uid: "count".into(),
            vertex: 1,
            parallelism: 2,
            records_in: 10,
            records_out: 9,
        };
        let kinds = vec![
            TaskManagerEventKind::Running { attempt: 2 },
            TaskManagerEventKind::Restarting {
                attempt: 1,
                cause: "task count#0 failed: boom\nsecond line".into(),
            },
            TaskManagerEventKind::Snapshot(SnapshotStats {
                id: 7,
                savepoint: true,
                location: "file:///data/sp".into(),
                duration_ms: 12,
                state_bytes: 4096,
                completed_ms: 1_796_000_000_000,
            }),
            TaskManagerEventKind::SnapshotFailed {
                savepoint: true,
                stop: false,
                reason: "disk full".into(),
            },
            TaskManagerEventKind::Metrics {
                operators: vec![OperatorProgress {
                    records: summary.clone(),
                    watermark: Some(-5),
                    blocked: Duration::from_millis(1_500),
                }],
                usage: JobUsage {
                    guest_time: Duration::from_micros(1_234_567),
                    guest_memory_bytes: 1 << 20,
                },
                sampled_ms: 1_796_000_000_123,
            },
            TaskManagerEventKind::Ended(JobOutcome::Finished {
                savepoint: Some("file:///data/sp".into()),
                operators: vec![summary],
            }),
            TaskManagerEventKind::Ended(JobOutcome::Canceled),
            TaskManagerEventKind::Ended(JobOutcome::Failed("it broke".into())),
        ];
        for kind in kinds {
            let event = TaskManagerEvent {
                job: "a1b2".into(),
                kind,
            };
            let text = serde_json::to_string(&event).unwrap();
            let back: TaskManagerEvent = serde_json::from_str(&text).unwrap();
            assert_eq!(back, event, "{text}");
        }
    }
}
