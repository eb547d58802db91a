//! Submission: a request is validated (alone, then with the guest's plan), admitted against
//! the tenant's quotas and the free slots, and queued for deployment.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use weir_connectors::paths;
use weir_core::{JobGraph, NodeKind};
use weir_worker::{
    CheckpointConfig, CheckpointMode, JobOptions, RestartStrategy, StateBackendKind,
};

use super::{push_exception, JobManager, JobRecord};
use crate::auth::{random_hex, Principal};
use crate::components::{now_ms, PlanSummary};
use crate::config::TenantConfig;
use crate::error::{ClusterError, ErrorCode};
use crate::job::*;
use crate::taskmanager::{ComponentRef, DeployedStateLimits, Deployment, Sandbox};

/// What a request asks for, checked without running guest code.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Request {
    pub parallelism: u32,
    pub rocksdb: bool,
    pub args: Vec<(String, String)>,
}

/// Checks what can be checked of a request by reading it.
pub(super) fn read_request(req: &SubmitJob) -> Result<Request, ClusterError> {
    let parallelism = req.parallelism.unwrap_or(1);
    if parallelism == 0 {
        return Err(ClusterError::bad_request("parallelism must be at least 1"));
    }
    let rocksdb = match req.state_backend.as_deref() {
        None | Some("memory") => false,
        Some("rocksdb") => true,
        Some(other) => {
            return Err(ClusterError::bad_request(format!(
                "state_backend '{other}': use 'memory' or 'rocksdb'"
            )))
        }
    };
    if req.checkpoint_interval_ms.is_some_and(|ms| ms < 10) {
        return Err(ClusterError::bad_request(
            "checkpoint_interval_ms must be at least 10",
        ));
    }
    if let Some(k) = req.args.keys().find(|k| k.starts_with("weir.")) {
        return Err(ClusterError::bad_request(format!(
            "argument '{k}': names starting with 'weir.' are the host's"
        )));
    }
    Ok(Request {
        parallelism,
        rocksdb,
        args: req.args.clone().into_iter().collect(),
    })
}

/// A request checked with its plan.
struct Planned {
    graph: JobGraph,
    component: ComponentRef,
    /// The snapshot it starts from, resolved inside the tenant's directories.
    from_savepoint: Option<PathBuf>,
    slots: u32,
    tasks: u32,
}

/// A tenant's jobs that have not ended, as admission sees them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct TenantLoad {
    pub jobs: usize,
    pub tasks: u32,
    /// Slots held by its deployed jobs.
    pub slots: u32,
}

/// Whether a job of `slots` slots and `tasks` tasks may join `tenant`'s jobs now. `wait`:
/// it may queue for slots instead of being refused for them.
pub(super) fn admit(
    tenant: &TenantConfig,
    load: TenantLoad,
    slots: u32,
    tasks: u32,
    free_slots: u32,
    cluster_slots: u32,
    wait: bool,
) -> Result<(), ClusterError> {
    admit_jobs(tenant, load.jobs)?;
    admit_tasks(tenant, load.tasks, tasks)?;
    if load.slots + slots > tenant.max_slots && !wait {
        return Err(ClusterError::quota(format!(
            "the job needs {slots} slots; tenant '{}' holds {} of its {} (max_slots)",
            tenant.name, load.slots, tenant.max_slots
        )));
    }
    if slots > free_slots && !wait {
        return Err(ClusterError::new(ErrorCode::NoSlots,
            format!(
                "the job needs {slots} slots; {free_slots} of {cluster_slots} are free (submit with \"wait\": true to queue)"
            ),
        ));
    }
    Ok(())
}

impl JobManager {
    /// Validates a submission and schedules the job.
    pub fn submit(&self, p: &Principal, req: SubmitJob) -> Result<JobDetails, ClusterError> {
        let tenant = self.tenant_of(p)?.clone();
        self.submit_as(tenant, req, None)
    }

    /// Submits for `tenant`; `recovered`: the id of a job that was running when the server
    /// stopped, to continue from its latest checkpoint.
    pub(super) fn submit_as(
        &self,
        tenant: Arc<TenantConfig>,
        req: SubmitJob,
        recovered: Option<String>,
    ) -> Result<JobDetails, ClusterError> {
        let request = read_request(&req)?;
        // Quotas that need no plan are checked before the guest's code runs to make one.
        if recovered.is_none() {
            let jobs = self.jobs();
            admit_jobs(&tenant, jobs.active_of(&tenant.name).count())?;
            admit_slots(&tenant, request.parallelism, self.slots())?;
            drop(jobs);
            self.check_disk(&tenant)?;
        }
        let planned = self.plan(&tenant, &req, &request)?;
        let id = recovered.clone().unwrap_or_else(|| random_hex(16));
        // A recovered job continues from its latest completed checkpoint, if it has one
        // (else from where it first started).
        let resume = recovered.is_some() && self.has_checkpoint(&tenant, &id);
        let deployment = self.deployment(&tenant, &id, &req, &request, &planned, resume)?;
        let mut record = JobRecord {
            id: id.clone(),
            tenant: tenant.clone(),
            name: planned.graph.name.clone(),
            request: req,
            state: JobState::Created,
            timestamps: vec![StateEntry {
                state: JobState::Created,
                at_ms: now_ms(),
            }],
            slots: planned.slots,
            tasks: planned.tasks,
            holds_slots: false,
            start_ms: now_ms(),
            end_ms: None,
            restarts: 0,
            failure: None,
            quota_failure: None,
            exceptions: VecDeque::new(),
            checkpoints: CheckpointStats::default(),
            plan: PlanSummary::of(&planned.graph),
            operators: Vec::new(),
            last_sample: None,
            savepoint: None,
            guest_time_before: Duration::ZERO,
            usage: weir_worker::JobUsage::default(),
            triggers: Vec::new(),
            deployment: Some(Box::new(deployment)),
            guest_source: planned
                .graph
                .nodes
                .iter()
                .any(|n| n.kind == NodeKind::GuestSource),
            restored_from: planned.from_savepoint,
            sha256: planned.component.sha256,
        };
        let mut jobs = self.jobs();
        // Deleted since it was checked? (A delete holds this lock while it checks for jobs
        // started from the savepoint.)
        if let Some(from) = &record.restored_from {
            if !resume && !from.join("_metadata").is_file() {
                return Err(ClusterError::bad_request(format!(
                    "from_savepoint: '{}' was deleted",
                    from.display()
                )));
            }
        }
        let cluster_slots = self.slots();
        // A recovered job waits for slots rather than being refused.
        let wait = record.request.wait || recovered.is_some();
        admit(
            &tenant,
            jobs.load_of(&tenant.name),
            record.slots,
            record.tasks,
            cluster_slots - jobs.slots_used,
            cluster_slots,
            wait,
        )?;
        record.apply(Transition::Schedule);
        if recovered.is_some() {
            let from = if resume {
                "its latest checkpoint"
            } else {
                "its start"
            };
            push_exception(
                &mut record,
                0,
                format!("the server stopped while the job ran; recovered from {from}"),
                true,
            );
        }
        tracing::info!(job = %id, tenant = %tenant.name, name = %record.name, slots = record.slots, resume, "job submitted");
        self.journal(&record);
        jobs.by_id.insert(id.clone(), record);
        jobs.waiting.push_back(id.clone());
        self.schedule(&mut jobs);
        Ok(jobs.by_id[&id].details())
    }

    /// Plans the job in the tenant's sandbox and checks the plan: the tenant's paths, its
    /// restore point, its slots and tasks.
    fn plan(
        &self,
        tenant: &TenantConfig,
        req: &SubmitJob,
        request: &Request,
    ) -> Result<Planned, ClusterError> {
        let sandbox = self.sandbox(tenant);
        let component =
            self.inner
                .components
                .load(&self.inner.runtime, &tenant.name, &req.component)?;
        let sha256 = component.digest();
        let component = component.with_limits(sandbox.runtime_config());
        let mut plan_args = request.args.clone();
        plan_args.push(("weir.attempt".into(), "0".into()));
        let graph = component
            .plan(&plan_args, request.parallelism)
            .map_err(|e| ClusterError::new(ErrorCode::InvalidPlan, e.to_string()))?;
        // File connectors may only touch the tenant's directories.
        paths::check_graph(&graph, &tenant.allowed_paths)
            .map_err(|e| ClusterError::new(ErrorCode::PathNotAllowed, e))?;
        let from_savepoint = match &req.from_savepoint {
            Some(location) => Some(self.snapshot_of(tenant, location)?),
            None => None,
        };
        let slots = graph.nodes.iter().map(|n| n.parallelism).max().unwrap_or(1);
        admit_slots(tenant, slots, self.slots())?;
        let tasks = weir_worker::task_count(&graph);
        let max_tasks = self.inner.config.server.max_tasks_per_job;
        if tasks > max_tasks {
            return Err(ClusterError::quota(format!(
                "the job runs {tasks} tasks (operators that cannot be chained, times their \
                 parallelism); a job may run {max_tasks} (max_tasks_per_job)"
            )));
        }
        Ok(Planned {
            graph,
            component: ComponentRef { sha256, sandbox },
            from_savepoint,
            slots,
            tasks,
        })
    }

    /// A snapshot `location` names, if weir wrote it for this tenant: a hand-made
    /// `_metadata` could name files and transactions anywhere.
    fn snapshot_of(&self, tenant: &TenantConfig, location: &str) -> Result<PathBuf, ClusterError> {
        let path = Path::new(location.strip_prefix("file://").unwrap_or(location));
        let (checkpoints, savepoints) = self.snapshot_dirs(tenant)?;
        let resolved = paths::check_allowed(path, &[checkpoints, savepoints]).map_err(|e| {
            ClusterError::new(ErrorCode::PathNotAllowed, format!("from_savepoint: {e}"))
        })?;
        if !resolved.join("_metadata").is_file() {
            return Err(ClusterError::bad_request(format!(
                "from_savepoint: '{location}' is not a savepoint (no _metadata)"
            )));
        }
        Ok(resolved)
    }

    /// The tenant's checkpoint and savepoint roots, created if missing.
    fn snapshot_dirs(&self, tenant: &TenantConfig) -> Result<(PathBuf, PathBuf), ClusterError> {
        let tenant_dir = self.inner.data_dir.join("tenants").join(&tenant.name);
        let dirs = (
            tenant_dir.join("checkpoints"),
            tenant_dir.join("savepoints"),
        );
        for d in [&dirs.0, &dirs.1] {
            std::fs::create_dir_all(d).map_err(|e| {
                ClusterError::internal(format!("cannot create {}: {e}", d.display()))
            })?;
        }
        Ok(dirs)
    }

    /// Whether job `id` completed a checkpoint.
    fn has_checkpoint(&self, tenant: &TenantConfig, id: &str) -> bool {
        let Ok((checkpoints, _)) = self.snapshot_dirs(tenant) else {
            return false;
        };
        weir_checkpoint::Storage::open(&checkpoints.display().to_string())
            .ok()
            .and_then(|s| weir_checkpoint::latest_checkpoint(&s.child(id)).ok())
            .flatten()
            .is_some()
    }

    /// What the TaskManager is sent to run the job.
    fn deployment(
        &self,
        tenant: &TenantConfig,
        id: &str,
        req: &SubmitJob,
        request: &Request,
        planned: &Planned,
        resume: bool,
    ) -> Result<Deployment, ClusterError> {
        let (checkpoints, savepoints) = self.snapshot_dirs(tenant)?;
        let open = |dir: &Path| {
            weir_checkpoint::Storage::open(&dir.display().to_string())
                .map_err(|e| ClusterError::internal(format!("{}: {e}", dir.display())))
        };
        let restart_attempts =
            req.restart_attempts
                .unwrap_or(if req.checkpoint_interval_ms.is_some() {
                    3
                } else {
                    0
                });
        let mut options = JobOptions::new(request.parallelism);
        options.args = request.args.clone();
        options.job_id = Some(id.to_string());
        options.checkpoints = CheckpointConfig {
            storage: Some(open(&checkpoints)?),
            interval: req.checkpoint_interval_ms.map(Duration::from_millis),
            mode: CheckpointMode::ExactlyOnce,
            ..CheckpointConfig::default()
        };
        options.savepoint_dir = Some(open(&savepoints)?);
        options.resume = resume;
        options.from_savepoint = match (&planned.from_savepoint, resume) {
            (Some(from), false) => Some(open(from)?),
            _ => None,
        };
        options.allow_non_restored_state = req.allow_non_restored_state;
        options.allowed_paths = Some(tenant.allowed_paths.clone());
        options.state_backend = match request.rocksdb {
            true => StateBackendKind::RocksDb(self.inner.data_dir.join("tmp").join(id)),
            false => StateBackendKind::Memory,
        };
        options.restart = Some(match restart_attempts {
            0 => RestartStrategy::None,
            attempts => RestartStrategy::backoff(attempts, RestartStrategy::DEFAULT_INITIAL),
        });
        options.keep_running_if_stop_fails = true;
        options.shared_output = true;
        Ok(Deployment {
            job: id.to_string(),
            tenant: tenant.name.clone(),
            component: planned.component.clone(),
            options,
            state_limits: DeployedStateLimits {
                job_bytes: tenant.max_state_bytes,
                tenant_bytes: tenant.max_total_state_bytes,
                value_bytes: tenant.max_state_value_bytes,
            },
        })
    }

    /// The sandbox of a tenant's guest instances.
    pub(super) fn sandbox(&self, tenant: &TenantConfig) -> Sandbox {
        let server = &self.inner.config.server;
        Sandbox {
            max_instance_memory_bytes: tenant.max_instance_memory_bytes,
            call_timeout_ms: server.call_timeout_ms,
            max_call_output_bytes: server.max_call_output_bytes as u64,
        }
    }
}

/// One more job for `tenant`, which has `active` jobs that have not ended.
pub(super) fn admit_jobs(tenant: &TenantConfig, active: usize) -> Result<(), ClusterError> {
    if active as u32 >= tenant.max_jobs {
        return Err(ClusterError::quota(format!(
            "tenant '{}' has {active} jobs that have not ended; it may have {} (max_jobs)",
            tenant.name, tenant.max_jobs
        )));
    }
    Ok(())
}

/// One more job of `tasks` tasks for `tenant`, whose jobs run `running` tasks.
fn admit_tasks(tenant: &TenantConfig, running: u32, tasks: u32) -> Result<(), ClusterError> {
    if running.saturating_add(tasks) > tenant.max_tasks {
        return Err(ClusterError::quota(format!(
            "the job runs {tasks} tasks; tenant '{}' runs {running} of its {} (max_tasks)",
            tenant.name, tenant.max_tasks
        )));
    }
    Ok(())
}

/// A job that needs `slots` slots, alone.
fn admit_slots(tenant: &TenantConfig, slots: u32, cluster_slots: u32) -> Result<(), ClusterError> {
    if slots > tenant.max_slots {
        return Err(ClusterError::quota(format!(
            "the job needs {slots} slots (its largest parallelism); tenant '{}' may use {} (max_slots)",
            tenant.name, tenant.max_slots
        )));
    }
    if slots > cluster_slots {
        return Err(ClusterError::quota(format!(
            "the job needs {slots} slots; the cluster has {cluster_slots}"
        )));
    }
    Ok(())
}
