//! The local TaskManager: runs the jobs the JobManager deploys to it and reports what
//! happens to them. The two sides talk only through [`TaskManagerCommand`] and
//! [`TaskManagerEvent`] messages — plain serde values — so a TaskManager in another process
//! can take its place. A deployment names its component by digest; the TaskManager gets the
//! compiled code from its [`ComponentSource`] (here: the server's compile cache).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use weir_runtime::{JobComponent, Runtime, RuntimeConfig};
use weir_state::{Measure, StateAccount};
use weir_worker::{
    JobCommand, JobError, JobEvent, JobHandle, JobLink, JobOptions, OperatorProgress,
    StateBackendKind, StateLimits,
};

/// Everything a TaskManager needs to run a job.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Deployment {
    /// The job's id (also its directory under the checkpoint root).
    pub job: String,
    /// Its tenant (for logs, and the tenant's state account).
    pub tenant: String,
    /// Its code.
    pub component: ComponentRef,
    /// What to run and how.
    pub options: JobOptions,
    /// Limits on the job's keyed state.
    pub state_limits: DeployedStateLimits,
}

/// A component by digest, and the sandbox its instances run in.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ComponentRef {
    /// Hex SHA-256 of the component's bytes.
    pub sha256: String,
    /// The tenant's sandbox.
    pub sandbox: Sandbox,
}

/// Limits on each guest instance of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Sandbox {
    /// Largest linear memory of one instance.
    pub max_instance_memory_bytes: u64,
    /// Longest one call may run.
    pub call_timeout_ms: u64,
    /// Most bytes one call may return.
    pub max_call_output_bytes: u64,
}

impl Sandbox {
    /// The runtime's settings for this sandbox.
    pub fn runtime_config(&self) -> RuntimeConfig {
        RuntimeConfig {
            max_instance_memory: usize::try_from(self.max_instance_memory_bytes)
                .unwrap_or(usize::MAX),
            call_timeout: Duration::from_millis(self.call_timeout_ms),
            max_call_output: usize::try_from(self.max_call_output_bytes).unwrap_or(usize::MAX),
            ..RuntimeConfig::default()
        }
    }
}

/// Where a TaskManager gets the compiled code of the components it is asked to run.
pub trait ComponentSource: Send + Sync + 'static {
    /// The compiled component with this hex SHA-256.
    fn component(&self, sha256: &str) -> Result<Arc<JobComponent>, String>;
}

/// In one process, the TaskManager shares the JobManager's compile cache (which keeps the
/// components of jobs not ended).
impl ComponentSource for Runtime {
    fn component(&self, sha256: &str) -> Result<Arc<JobComponent>, String> {
        self.cached(sha256)
            .ok_or_else(|| format!("component {sha256} is not known to this TaskManager"))
    }
}

/// Limits on a job's keyed state, enforced by the TaskManager as the state grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeployedStateLimits {
    /// The job's state.
    pub job_bytes: u64,
    /// All the state of its tenant's jobs on this TaskManager.
    pub tenant_bytes: u64,
    /// One value (a map entry: user key and value).
    pub value_bytes: u64,
}

/// JobManager → TaskManager.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum TaskManagerCommand {
    /// Run a job.
    Deploy(Box<Deployment>),
    /// Steer a running job (cancel, savepoint, stop).
    Job {
        /// Job id.
        job: String,
        /// What to do.
        command: JobCommand,
    },
}

/// TaskManager → JobManager.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum TaskManagerMessage {
    /// The TaskManager offers its slots (its first message).
    Registered(Registration),
    /// Something happened to one of its jobs.
    Job(TaskManagerEvent),
}

/// What a TaskManager offers the JobManager.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Registration {
    /// Its id, unique in the cluster.
    pub id: String,
    /// Its task slots.
    pub slots: u32,
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

/// The TaskManager.
pub struct TaskManager {
    commands: Sender<TaskManagerCommand>,
}

impl TaskManager {
    /// Starts a TaskManager of `slots` slots that registers with and reports to
    /// `messages`, whose jobs' keyed state may hold at most `state_memory_budget` bytes of
    /// memory together.
    pub fn start(
        messages: Sender<TaskManagerMessage>,
        slots: u32,
        state_memory_budget: u64,
        components: Arc<dyn ComponentSource>,
    ) -> std::io::Result<TaskManager> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let accounts = StateAccounts::new(state_memory_budget);
        let registration = Registration {
            id: format!("taskmanager-{}", std::process::id()),
            slots,
        };
        let _ = messages.send(TaskManagerMessage::Registered(registration));
        let events = Events(messages);
        std::thread::Builder::new()
            .name("weir-taskmanager".into())
            .spawn(move || serve(rx, events, accounts, components))?;
        Ok(TaskManager { commands: tx })
    }

    /// Sends a command (dropped if the TaskManager is gone).
    pub fn send(&self, command: TaskManagerCommand) {
        let _ = self.commands.send(command);
    }

    /// Sends a command to one of its jobs (dropped if the job is not running there).
    pub fn steer(&self, job: &str, command: JobCommand) {
        self.send(TaskManagerCommand::Job {
            job: job.to_string(),
            command,
        });
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

/// Where a TaskManager's job events go.
#[derive(Clone)]
struct Events(Sender<TaskManagerMessage>);

impl Events {
    fn send(&self, event: TaskManagerEvent) {
        let _ = self.0.send(TaskManagerMessage::Job(event));
    }
}

fn serve(
    commands: Receiver<TaskManagerCommand>,
    events: Events,
    mut accounts: StateAccounts,
    components: Arc<dyn ComponentSource>,
) {
    let running: Arc<Mutex<HashMap<String, JobHandle>>> = Arc::default();
    let ended = |job: String, why: String| {
        events.send(TaskManagerEvent {
            job,
            kind: TaskManagerEventKind::Ended(JobOutcome::Failed(why)),
        });
    };
    for command in commands {
        let d = match command {
            TaskManagerCommand::Deploy(d) => d,
            TaskManagerCommand::Job { job, command } => {
                if let Some(handle) = running.lock().expect("not poisoned").get(&job) {
                    handle.send(command);
                }
                continue;
            }
        };
        let component = match components.component(&d.component.sha256) {
            Ok(c) => c.with_limits(d.component.sandbox.runtime_config()),
            Err(e) => {
                ended(d.job.clone(), e);
                continue;
            }
        };
        let (handle, link) = JobLink::new();
        let link = link.with_state_limits(accounts.for_job(&d));
        running
            .lock()
            .expect("not poisoned")
            .insert(d.job.clone(), handle);
        let (events2, running2) = (events.clone(), running.clone());
        let job = d.job.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("weir-job-{}", &d.job[..8.min(d.job.len())]))
            .spawn(move || {
                // Whatever happens, the JobManager hears that the job ended (and frees its
                // slots).
                let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    run(&d, &component, link, &events2)
                }));
                if ran.is_err() {
                    events2.send(TaskManagerEvent {
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
            ended(job, format!("cannot start the job's thread: {e}"));
        }
    }
}

/// Runs one job on this thread; a second thread forwards its events and samples its
/// counters.
fn run(d: &Deployment, component: &Arc<JobComponent>, link: JobLink, events: &Events) {
    // Every log line of the job (its tasks' too) names it and its tenant.
    let span = tracing::info_span!("job", id = %d.job, tenant = %d.tenant);
    let _entered = span.enter();
    let (tx, rx) = crossbeam_channel::unbounded();
    let link = link.with_events(tx);
    let job = d.job.clone();
    let forward = {
        let events = events.clone();
        let job = job.clone();
        std::thread::Builder::new()
            .name(format!("weir-jobev-{}", &job[..8.min(job.len())]))
            .spawn(move || forward(&job, rx, &events))
    };
    let outcome = match weir_worker::run_job(component, &d.options, link) {
        Ok(summary) => JobOutcome::Finished {
            savepoint: summary.savepoint,
            operators: summary.operators,
        },
        Err(JobError::Cancelled) => JobOutcome::Canceled,
        Err(e) => JobOutcome::Failed(e.to_string()),
    };
    // RocksDB's working files go with the job (its checkpoints are the JobManager's call).
    if let StateBackendKind::RocksDb(dir) = &d.options.state_backend {
        let _ = std::fs::remove_dir_all(dir);
    }
    if let Ok(h) = forward {
        let _ = h.join();
    }
    events.send(TaskManagerEvent {
        job,
        kind: TaskManagerEventKind::Ended(outcome),
    });
}

fn forward(job: &str, rx: Receiver<JobEvent>, events: &Events) {
    let send = |kind| {
        events.send(TaskManagerEvent {
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

    /// Every command a TaskManager takes survives encoding, as it will between processes:
    /// a deployment names its component by digest and its storage by URL.
    #[test]
    fn commands_round_trip_through_json() {
        let dir = tempfile::tempdir().unwrap();
        let storage = weir_checkpoint::Storage::open(dir.path().to_str().unwrap()).unwrap();
        let mut options = JobOptions::new(3).arg("input", "/data/in.txt");
        options.job_id = Some("a1b2".into());
        options.checkpoints.storage = Some(storage.child("checkpoints"));
        options.checkpoints.interval = Some(Duration::from_millis(250));
        options.savepoint_dir = Some(storage.child("savepoints"));
        options.state_backend = StateBackendKind::RocksDb(dir.path().join("tmp"));
        options.restart = Some(weir_worker::RestartStrategy::backoff(
            3,
            Duration::from_millis(100),
        ));
        options.allowed_paths = Some(vec!["/data".into()]);
        let deployment = Deployment {
            job: "a1b2".into(),
            tenant: "acme".into(),
            component: ComponentRef {
                sha256: "ab".repeat(32),
                sandbox: Sandbox {
                    max_instance_memory_bytes: 64 << 20,
                    call_timeout_ms: 30_000,
                    max_call_output_bytes: 64 << 20,
                },
            },
            options,
            state_limits: DeployedStateLimits {
                job_bytes: 1 << 28,
                tenant_bytes: 1 << 30,
                value_bytes: 1 << 23,
            },
        };
        let commands = vec![
            TaskManagerCommand::Deploy(Box::new(deployment)),
            TaskManagerCommand::Job {
                job: "a1b2".into(),
                command: JobCommand::Cancel,
            },
            TaskManagerCommand::Job {
                job: "a1b2".into(),
                command: JobCommand::Savepoint,
            },
            TaskManagerCommand::Job {
                job: "a1b2".into(),
                command: JobCommand::Stop { drain: true },
            },
        ];
        for command in commands {
            let text = serde_json::to_string(&command).unwrap();
            let back: TaskManagerCommand = serde_json::from_str(&text).unwrap();
            // Storage compares by URL: the encodings match.
            assert_eq!(serde_json::to_string(&back).unwrap(), text);
        }
    }

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
            let message = TaskManagerMessage::Job(event);
            let text = serde_json::to_string(&message).unwrap();
            let back: TaskManagerMessage = serde_json::from_str(&text).unwrap();
            assert_eq!(back, message, "{text}");
        }
        let registered = TaskManagerMessage::Registered(Registration {
            id: "taskmanager-4711".into(),
            slots: 8,
        });
        let text = serde_json::to_string(&registered).unwrap();
        assert_eq!(
            serde_json::from_str::<TaskManagerMessage>(&text).unwrap(),
            registered
        );
    }
}
