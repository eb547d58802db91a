//! The JobManager: the dispatcher (components, submissions, the job table), a job master's
//! bookkeeping per job (lifecycle, restarts, exceptions, checkpoints, savepoint triggers)
//! and the resource manager (slots). It drives the TaskManager only through messages and
//! learns what happens from the TaskManager's events, on a thread of its own.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use weir_core::NodeKind;
use weir_runtime::{Runtime, RuntimeConfig};

use crate::auth::{random_hex, Authenticator, Principal};
use crate::components::{now_ms, ComponentInfo, ComponentStore, PlanSummary, Upload};
use crate::config::{ClusterConfig, TenantConfig};
use crate::disk::{self, DiskUsage, SavepointInfo, TenantDirs, TenantUsage};
use crate::error::{ClusterError, ErrorKind};
use crate::job::*;
use crate::taskmanager::{
    DeployedStateLimits, Deployment, JobOutcome, TaskManager, TaskManagerCommand, TaskManagerEvent,
    TaskManagerEventKind,
};
use weir_worker::paths;

/// A tenant's disk use is measured against its quota after checkpoints at most this often.
const DISK_CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// Ended jobs kept per tenant for `GET /v1/jobs` (the oldest are forgotten first).
const MAX_ENDED_JOBS: usize = 1000;
/// Completed checkpoints kept per job in its history.
const CHECKPOINT_HISTORY: usize = 20;
/// Exceptions kept per job.
const EXCEPTION_HISTORY: usize = 50;
/// Savepoint triggers kept per job.
const MAX_TRIGGERS: usize = 100;

/// The JobManager of a session cluster.
#[derive(Clone)]
pub struct JobManager {
    inner: Arc<Inner>,
}

struct Inner {
    config: ClusterConfig,
    data_dir: PathBuf,
    auth: Authenticator,
    runtime: Runtime,
    components: ComponentStore,
    taskmanager: TaskManager,
    jobs: Mutex<Jobs>,
    started_ms: i64,
    /// Disk promised to uploads in flight.
    uploads: disk::Reservations,
}

#[derive(Default)]
struct Jobs {
    by_id: BTreeMap<String, JobRecord>,
    /// Ended jobs, oldest first.
    ended: VecDeque<String>,
    /// Jobs waiting for slots, in submission order.
    waiting: VecDeque<String>,
    slots_used: u32,
    /// Guest time per tenant since the server started (ended jobs included).
    tenant_guest_time: BTreeMap<String, Duration>,
    /// When each tenant's disk use was last measured after a checkpoint.
    disk_checked: BTreeMap<String, Instant>,
}

impl Jobs {
    /// A job that has not ended and was started from a snapshot under `dir` (it may restore
    /// from it again).
    fn started_from(&self, dir: &Path) -> Option<&JobRecord> {
        self.by_id.values().find(|j| {
            !j.state.is_terminal() && j.restored_from.as_ref().is_some_and(|f| f.starts_with(dir))
        })
    }

    /// A tenant's jobs that have not ended.
    fn active_of<'a>(&'a self, tenant: &'a str) -> impl Iterator<Item = &'a JobRecord> + 'a {
        self.by_id
            .values()
            .filter(move |j| j.tenant.name == tenant && !j.state.is_terminal())
    }

    /// Notes that a job ended; forgets the tenant's oldest ended job beyond
    /// [`MAX_ENDED_JOBS`] (one tenant's churn does not erase another's history).
    fn remember_ended(&mut self, id: &str, tenant: &str) {
        self.ended.push_back(id.to_string());
        let of_tenant =
            |jobs: &Jobs, e: &String| jobs.by_id.get(e).is_some_and(|j| j.tenant.name == tenant);
        let count = self.ended.iter().filter(|e| of_tenant(self, e)).count();
        if count > MAX_ENDED_JOBS {
            if let Some(pos) = self.ended.iter().position(|e| of_tenant(self, e)) {
                if let Some(old) = self.ended.remove(pos) {
                    self.by_id.remove(&old);
                }
            }
        }
    }
}

/// What the job master keeps of one job.
struct JobRecord {
    id: String,
    tenant: Arc<TenantConfig>,
    name: String,
    request: SubmitJob,
    state: JobState,
    timestamps: Vec<StateEntry>,
    slots: u32,
    /// Tasks (threads) it runs: its chained vertices' subtasks.
    tasks: u32,
    holds_slots: bool,
    start_ms: i64,
    end_ms: Option<i64>,
    restarts: u32,
    failure: Option<String>,
    /// A quota the job broke: it is cancelled and ends FAILED with this cause.
    quota_failure: Option<String>,
    exceptions: VecDeque<ExceptionEntry>,
    checkpoints: CheckpointStats,
    plan: PlanSummary,
    operators: Vec<OperatorStatus>,
    /// When the last metrics were sampled, ms since the epoch.
    last_sample: Option<i64>,
    savepoint: Option<String>,
    /// Guest time of earlier attempts, and the current attempt's usage.
    guest_time_before: Duration,
    usage: weir_worker::JobUsage,
    /// With the time each was asked for.
    triggers: Vec<(i64, SavepointStatus)>,
    /// Held until slots are free.
    deployment: Option<Box<Deployment>>,
    /// Sources written in the guest: no savepoints.
    guest_source: bool,
    /// The snapshot it started from, resolved.
    restored_from: Option<PathBuf>,
}

impl JobRecord {
    fn apply(&mut self, t: Transition) -> bool {
        match self.state.next(t) {
            Some(next) => {
                if next != self.state {
                    tracing::info!(job = %self.id, tenant = %self.tenant.name, from = self.state.name(), to = next.name(), "job state");
                    self.state = next;
                    self.timestamps.push(StateEntry {
                        state: next,
                        at_ms: now_ms(),
                    });
                }
                true
            }
            None => false,
        }
    }

    fn overview(&self) -> JobOverview {
        JobOverview {
            id: self.id.clone(),
            name: self.name.clone(),
            state: self.state,
            tenant: self.tenant.name.clone(),
            component: self.request.component.clone(),
            slots: self.slots,
            start_ms: self.start_ms,
            end_ms: self.end_ms,
            restarts: self.restarts,
        }
    }

    fn details(&self) -> JobDetails {
        JobDetails {
            id: self.id.clone(),
            name: self.name.clone(),
            state: self.state,
            tenant: self.tenant.name.clone(),
            component: self.request.component.clone(),
            request: self.request.clone(),
            slots: self.slots,
            start_ms: self.start_ms,
            end_ms: self.end_ms,
            timestamps: self.timestamps.clone(),
            restarts: self.restarts,
            failure: self.failure.clone(),
            plan: self.plan.clone(),
            operators: self.operators.clone(),
            last_checkpoint: self.checkpoints.latest.clone(),
            savepoint: self.savepoint.clone(),
            guest_cpu_ms: self.guest_time().as_millis() as u64,
            guest_memory_bytes: self.usage.guest_memory_bytes,
        }
    }

    fn guest_time(&self) -> Duration {
        self.guest_time_before + self.usage.guest_time
    }

    /// A new attempt (or the end): the current attempt's guest time is kept, its memory
    /// is gone.
    fn close_attempt(&mut self) {
        self.guest_time_before += self.usage.guest_time;
        self.usage = weir_worker::JobUsage::default();
    }

    fn add_trigger(&mut self, id: &str, stop: bool) {
        self.triggers.push((
            now_ms(),
            SavepointStatus {
                id: id.to_string(),
                status: TriggerStatus::InProgress,
                location: None,
                failure: None,
                stop,
            },
        ));
        // Keep the recent ones (and every one still in progress).
        let excess = self.triggers.len().saturating_sub(MAX_TRIGGERS);
        let mut dropped = 0;
        self.triggers.retain(|(_, t)| {
            let drop = dropped < excess && t.status != TriggerStatus::InProgress;
            dropped += usize::from(drop);
            !drop
        });
    }

    /// Settles the triggers in progress of one kind that were asked for before `before_ms`
    /// (a savepoint answers only triggers asked for before it began).
    fn settle_triggers(&mut self, stop: bool, outcome: Result<&str, &str>) {
        self.settle_triggers_before(stop, outcome, i64::MAX);
    }

    fn settle_triggers_before(&mut self, stop: bool, outcome: Result<&str, &str>, before_ms: i64) {
        for (asked, t) in &mut self.triggers {
            if t.status == TriggerStatus::InProgress && t.stop == stop && *asked <= before_ms {
                match outcome {
                    Ok(location) => {
                        t.status = TriggerStatus::Completed;
                        t.location = Some(location.to_string());
                    }
                    Err(reason) => {
                        t.status = TriggerStatus::Failed;
                        t.failure = Some(reason.to_string());
                    }
                }
            }
        }
    }
}

/// A job that has not ended, as the journal keeps it.
#[derive(serde::Serialize, serde::Deserialize)]
struct JournalEntry {
    id: String,
    tenant: String,
    request: SubmitJob,
}

/// `GET /v1/overview`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ClusterOverview {
    /// Slots of the cluster.
    pub slots_total: u32,
    /// Slots no job holds.
    pub slots_free: u32,
    /// Jobs the caller can see, by state.
    pub jobs: BTreeMap<String, u32>,
    /// Tenants (the admin sees all; a tenant, itself).
    pub tenants: Vec<String>,
    /// TaskManagers.
    pub taskmanagers: u32,
    /// Server start, ms since the epoch.
    pub started_ms: i64,
    /// This build's version.
    pub version: String,
    /// A tenant's disk use and quota (absent for the admin).
    pub usage: Option<TenantUsage>,
}

/// `GET /v1/taskmanagers`: one entry.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct TaskManagerInfo {
    /// Its id.
    pub id: String,
    /// Its slots.
    pub slots_total: u32,
    /// Slots no job holds.
    pub slots_free: u32,
    /// Jobs deployed to it and not ended.
    pub jobs_running: u32,
    /// Resident memory of the process it runs in, bytes (the admin's view only).
    pub rss_bytes: Option<u64>,
}

impl JobManager {
    /// Starts the JobManager and a local TaskManager.
    pub fn start(config: ClusterConfig) -> Result<JobManager, ClusterError> {
        let io = |what: &str, e: std::io::Error| ClusterError::internal(format!("{what}: {e}"));
        std::fs::create_dir_all(&config.server.data_dir)
            .map_err(|e| io("cannot create the data directory", e))?;
        let data_dir = config
            .server
            .data_dir
            .canonicalize()
            .map_err(|e| io("data directory", e))?;
        let runtime = Runtime::new(RuntimeConfig {
            call_timeout: config.server.call_timeout(),
            max_call_output: config.server.max_call_output_bytes,
            ..RuntimeConfig::default()
        })
        .map_err(|e| ClusterError::internal(e.to_string()))?;
        // Tenants' files must stay out of weir's own directory (components, every tenant's
        // checkpoints and savepoints) — except the single default tenant's, which owns it all.
        let default_only = config.tenants.len() == 1 && config.tenants[0].name == "default";
        for t in config.tenants.iter().filter(|_| !default_only) {
            for p in &t.allowed_paths {
                let p = paths::resolve(p).unwrap_or_else(|_| p.clone());
                if p.starts_with(&data_dir) || data_dir.starts_with(&p) {
                    return Err(ClusterError::bad_request(format!(
                        "tenant '{}': allowed path '{}' overlaps the data directory '{}'",
                        t.name,
                        p.display(),
                        data_dir.display()
                    )));
                }
            }
        }
        let components = ComponentStore::open(&data_dir.join("components"))?;
        let (events_tx, events_rx) = crossbeam_channel::unbounded();
        let taskmanager = TaskManager::start(events_tx, config.server.state_memory_budget_bytes)
            .map_err(|e| io("cannot start the TaskManager", e))?;
        let inner = Arc::new(Inner {
            auth: Authenticator::new(&config),
            config,
            data_dir,
            runtime,
            components,
            taskmanager,
            jobs: Mutex::default(),
            started_ms: now_ms(),
            uploads: disk::Reservations::default(),
        });
        std::fs::create_dir_all(inner.data_dir.join("jobs"))
            .map_err(|e| io("cannot create the job journal", e))?;
        let weak = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("weir-jobmanager".into())
            .spawn(move || {
                for event in events_rx {
                    let Some(inner) = weak.upgrade() else { return };
                    JobManager { inner }.on_event(event);
                }
            })
            .map_err(|e| io("cannot start the JobManager thread", e))?;
        let jm = JobManager { inner };
        jm.recover();
        Ok(jm)
    }

    /// Where a job's journal entry is.
    fn journal_path(&self, id: &str) -> PathBuf {
        self.inner.data_dir.join("jobs").join(format!("{id}.json"))
    }

    /// Records a job that has not ended (so a restarted server continues it), or forgets
    /// one that has.
    fn journal(&self, j: &JobRecord) {
        let path = self.journal_path(&j.id);
        let r = if j.state.is_terminal() {
            std::fs::remove_file(&path).or_else(|e| {
                (e.kind() == std::io::ErrorKind::NotFound)
                    .then_some(())
                    .ok_or(e)
            })
        } else {
            let entry = JournalEntry {
                id: j.id.clone(),
                tenant: j.tenant.name.clone(),
                request: j.request.clone(),
            };
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, serde_json::to_vec(&entry).expect("serializable"))
                .and_then(|()| std::fs::rename(&tmp, &path))
        };
        if let Err(e) = r {
            tracing::warn!(job = %j.id, error = %e, "cannot write the job journal");
        }
    }

    /// Continues the jobs that had not ended when the server last stopped (a crash, or a
    /// shutdown that could not stop them).
    fn recover(&self) {
        let dir = self.inner.data_dir.join("jobs");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        for path in entries.filter_map(|e| e.ok().map(|e| e.path())) {
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let entry: Option<JournalEntry> = std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            let _ = std::fs::remove_file(&path);
            let Some(entry) = entry else {
                tracing::warn!(file = %path.display(), "skipping an unreadable journal entry");
                continue;
            };
            let Some(tenant) = self.inner.auth.tenant(&entry.tenant).cloned() else {
                tracing::warn!(job = %entry.id, tenant = %entry.tenant, "not recovered: the tenant is gone");
                continue;
            };
            match self.submit_as(tenant, entry.request, Some(entry.id.clone())) {
                Ok(_) => tracing::info!(job = %entry.id, "job recovered"),
                Err(e) => {
                    let shown = weir_runtime::one_line(&e.message);
                    tracing::warn!(job = %entry.id, error = %shown, "job not recovered")
                }
            }
        }
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &ClusterConfig {
        &self.inner.config
    }

    /// Who a bearer token stands for.
    pub fn authenticate(&self, token: &str) -> Option<Principal> {
        self.inner.auth.authenticate(token)
    }

    fn jobs(&self) -> MutexGuard<'_, Jobs> {
        self.inner.jobs.lock().expect("not poisoned")
    }

    fn tenant_of<'p>(&self, p: &'p Principal) -> Result<&'p Arc<TenantConfig>, ClusterError> {
        match p {
            Principal::Tenant(t) => Ok(t),
            Principal::Admin => Err(ClusterError::new(
                ErrorKind::Forbidden,
                "tenant_only",
                "the admin token is for cluster operations; use a tenant's token for this",
            )),
        }
    }

    /// The sandbox of a tenant's guest instances.
    fn limits(&self, tenant: &TenantConfig) -> RuntimeConfig {
        RuntimeConfig {
            max_instance_memory: usize::try_from(tenant.max_instance_memory_bytes)
                .unwrap_or(usize::MAX),
            call_timeout: self.inner.config.server.call_timeout(),
            max_call_output: self.inner.config.server.max_call_output_bytes,
            ..RuntimeConfig::default()
        }
    }

    /// The largest upload `p` may make (the admin makes none: `403`).
    pub fn max_component_bytes(&self, p: &Principal) -> Result<u64, ClusterError> {
        Ok(self.tenant_of(p)?.max_component_bytes)
    }

    // ---- components ------------------------------------------------------------------

    /// Starts receiving a component from `p`: a temporary file that takes at most the
    /// tenant's `max_component_bytes`.
    pub fn begin_upload(&self, p: &Principal) -> Result<Upload, ClusterError> {
        let tenant = self.tenant_of(p)?;
        let left = tenant
            .max_disk_bytes
            .saturating_sub(self.disk_usage(tenant).total());
        // Uploads in flight at once share what is left.
        let reservation =
            self.inner
                .uploads
                .reserve(&tenant.name, left, tenant.max_component_bytes);
        let (limit, what) = if reservation.bytes() < tenant.max_component_bytes {
            (reservation.bytes(), "max_disk_bytes (what is left of it)")
        } else {
            (tenant.max_component_bytes, "max_component_bytes")
        };
        self.inner
            .components
            .begin_upload(&tenant.name, limit, what, Some(reservation))
    }

    /// What `tenant` keeps on disk now.
    fn disk_usage(&self, tenant: &TenantConfig) -> DiskUsage {
        TenantDirs::new(&self.inner.data_dir, &tenant.name).usage()
    }

    /// Refuses to write more for `tenant` once its disk quota is used up.
    fn check_disk(&self, tenant: &TenantConfig) -> Result<(), ClusterError> {
        let used = self.disk_usage(tenant).total();
        if used >= tenant.max_disk_bytes {
            return Err(ClusterError::quota(format!(
                "tenant '{}' keeps {used} bytes on disk; it may keep {} (max_disk_bytes): \
                 delete savepoints, components or failed jobs' checkpoints first",
                tenant.name, tenant.max_disk_bytes
            )));
        }
        Ok(())
    }

    /// Refuses a savepoint of job `id` once its tenant's disk quota is used up (measured
    /// with the job table unlocked).
    fn check_disk_of_job(&self, p: &Principal, id: &str) -> Result<(), ClusterError> {
        let tenant = self.with_job(p, id, |j| Ok(j.tenant.clone()))?;
        self.check_disk(&tenant)
    }

    /// Deletes the checkpoints an ended job kept (a failed job keeps them, to resume from);
    /// answers the bytes freed. Refused while the job has not ended, or while a job that has
    /// not ended was started from one of them.
    pub fn delete_checkpoints(&self, p: &Principal, id: &str) -> Result<u64, ClusterError> {
        let jobs = self.jobs();
        let tenant = match jobs.by_id.get(id).filter(|j| p.may_see(&j.tenant.name)) {
            Some(j) if !j.state.is_terminal() => {
                return Err(ClusterError::conflict(format!(
                    "the job is {}; its checkpoints are deleted once it has ended",
                    j.state.name()
                )))
            }
            Some(j) => j.tenant.name.clone(),
            // A job the server no longer remembers (it restarted, or forgot the oldest
            // ended jobs) may have left checkpoints in the tenant's directory.
            None => match p {
                Principal::Tenant(t)
                    if !id.is_empty()
                        && id.bytes().all(|b| b.is_ascii_alphanumeric())
                        && TenantDirs::new(&self.inner.data_dir, &t.name)
                            .checkpoints
                            .join(id)
                            .is_dir() =>
                {
                    t.name.clone()
                }
                _ => return Err(ClusterError::not_found("job", id)),
            },
        };
        let dirs = TenantDirs::new(&self.inner.data_dir, &tenant);
        let dir = dirs.checkpoints.join(id);
        if let Some(o) = jobs.started_from(&dir) {
            return Err(ClusterError::new(
                ErrorKind::Conflict,
                "in_use",
                format!(
                    "job {} was started from one of these checkpoints and has not ended",
                    o.id
                ),
            ));
        }
        let bytes = disk::dir_bytes(&dir);
        let aside = match disk::set_aside(&dir) {
            Ok(aside) => aside,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => {
                return Err(ClusterError::internal(format!(
                    "cannot delete the checkpoints of job {id}: {e}"
                )))
            }
        };
        // Removed with the job table unlocked.
        drop(jobs);
        drop(aside);
        Ok(bytes)
    }

    /// `p`'s savepoints, newest first.
    pub fn savepoints(&self, p: &Principal) -> Result<Vec<SavepointInfo>, ClusterError> {
        let tenant = self.tenant_of(p)?;
        Ok(disk::list_savepoints(
            &TenantDirs::new(&self.inner.data_dir, &tenant.name).savepoints,
        ))
    }

    /// Deletes one of `p`'s savepoints, unless a job that has not ended was started from it
    /// (it restarts from there until its first checkpoint).
    pub fn delete_savepoint(
        &self,
        p: &Principal,
        name: &str,
    ) -> Result<SavepointInfo, ClusterError> {
        let tenant = self.tenant_of(p)?;
        let dirs = TenantDirs::new(&self.inner.data_dir, &tenant.name);
        let dir = disk::savepoint_dir(&dirs.savepoints, name)?;
        let info = disk::list_savepoints(&dirs.savepoints)
            .into_iter()
            .find(|s| s.name == name)
            .ok_or_else(|| ClusterError::not_found("savepoint", name))?;
        // Holding the jobs' lock: no job can be submitted from it meanwhile.
        let jobs = self.jobs();
        if let Some(j) = jobs.started_from(&dir) {
            return Err(ClusterError::new(
                ErrorKind::Conflict,
                "in_use",
                format!(
                    "job {} was started from savepoint '{name}' and has not ended: it may restore from it",
                    j.id
                ),
            ));
        }
        // Out of sight at once (no job can be started from it from now on), removed after the
        // job table is unlocked.
        let aside = disk::set_aside(&dir).map_err(|e| {
            ClusterError::internal(format!("cannot delete savepoint '{name}': {e}"))
        })?;
        drop(jobs);
        drop(aside);
        tracing::info!(tenant = %tenant.name, savepoint = name, "savepoint deleted");
        Ok(info)
    }

    /// Checks and stores a received component; `true` when it was new.
    pub fn upload(
        &self,
        p: &Principal,
        name: Option<String>,
        upload: Upload,
    ) -> Result<(ComponentInfo, bool), ClusterError> {
        let tenant = self.tenant_of(p)?;
        if upload.size() > tenant.max_component_bytes {
            return Err(too_large(tenant));
        }
        self.inner.components.add(
            &self.inner.runtime,
            &tenant.name,
            name,
            upload,
            &self.limits(tenant),
        )
    }

    /// Components `p` may see.
    pub fn components(&self, p: &Principal) -> Vec<ComponentInfo> {
        self.inner.components.list(p.tenant())
    }

    /// One component.
    pub fn component(&self, p: &Principal, id: &str) -> Result<ComponentInfo, ClusterError> {
        self.find_component(p, id)
    }

    fn find_component(&self, p: &Principal, id: &str) -> Result<ComponentInfo, ClusterError> {
        let found = match p.tenant() {
            Some(t) => self.inner.components.get(t, id),
            None => self
                .inner
                .components
                .list(None)
                .into_iter()
                .find(|c| c.id == id),
        };
        found.ok_or_else(|| ClusterError::not_found("component", id))
    }

    /// Deletes a component; jobs running it go on.
    pub fn delete_component(&self, p: &Principal, id: &str) -> Result<ComponentInfo, ClusterError> {
        let info = self.find_component(p, id)?;
        let removed = self.inner.components.remove(&info.tenant, id)?;
        // The compiled code goes too, unless another tenant stored the same bytes (running
        // jobs keep theirs).
        if !self
            .inner
            .components
            .list(None)
            .iter()
            .any(|c| c.sha256 == removed.sha256)
        {
            self.inner.runtime.evict(&removed.sha256);
        }
        Ok(removed)
    }

    // ---- jobs -------------------------------------------------------------------------

    /// Validates a submission and schedules the job.
    pub fn submit(&self, p: &Principal, req: SubmitJob) -> Result<JobDetails, ClusterError> {
        let tenant = self.tenant_of(p)?.clone();
        self.submit_as(tenant, req, None)
    }

    /// Submits for `tenant`; `recovered`: the id of a job that was running when the server
    /// stopped, to continue from its latest checkpoint.
    fn submit_as(
        &self,
        tenant: Arc<TenantConfig>,
        req: SubmitJob,
        recovered: Option<String>,
    ) -> Result<JobDetails, ClusterError> {
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
        // Quotas that need no plan are checked before the guest's code runs to make one.
        if recovered.is_none() {
            let jobs = self.jobs();
            admit_jobs(&tenant, jobs.active_of(&tenant.name).count())?;
            admit_slots(&tenant, parallelism, self.inner.config.server.slots)?;
            drop(jobs);
            self.check_disk(&tenant)?;
        }
        let component = self
            .inner
            .components
            .load(&self.inner.runtime, &tenant.name, &req.component)?
            .with_limits(self.limits(&tenant));
        let args: Vec<(String, String)> = req.args.clone().into_iter().collect();
        let mut plan_args = args.clone();
        plan_args.push(("weir.attempt".into(), "0".into()));
        let graph = component
            .plan(&plan_args, parallelism)
            .map_err(|e| ClusterError::new(ErrorKind::BadRequest, "invalid_plan", e.to_string()))?;
        // File connectors may only touch the tenant's directories.
        paths::check_graph(&graph, &tenant.allowed_paths)
            .map_err(|e| ClusterError::new(ErrorKind::BadRequest, "path_not_allowed", e))?;
        let tenant_dir = self.inner.data_dir.join("tenants").join(&tenant.name);
        let (checkpoint_dir, savepoint_dir) = (
            tenant_dir.join("checkpoints"),
            tenant_dir.join("savepoints"),
        );
        for d in [&checkpoint_dir, &savepoint_dir] {
            std::fs::create_dir_all(d).map_err(|e| {
                ClusterError::internal(format!("cannot create {}: {e}", d.display()))
            })?;
        }
        let from_savepoint = match &req.from_savepoint {
            Some(location) => {
                let path = Path::new(location.strip_prefix("file://").unwrap_or(location));
                // Only snapshots weir wrote for this tenant: a hand-made `_metadata` could
                // name files and transactions anywhere.
                let allowed = [checkpoint_dir.clone(), savepoint_dir.clone()];
                let resolved = paths::check_allowed(path, &allowed).map_err(|e| {
                    ClusterError::new(
                        ErrorKind::BadRequest,
                        "path_not_allowed",
                        format!("from_savepoint: {e}"),
                    )
                })?;
                if !resolved.join("_metadata").is_file() {
                    return Err(ClusterError::bad_request(format!(
                        "from_savepoint: '{location}' is not a savepoint (no _metadata)"
                    )));
                }
                Some(resolved)
            }
            None => None,
        };
        let restored_from = from_savepoint.clone();
        let from_savepoint = from_savepoint.map(|p| p.display().to_string());
        let slots = graph.nodes.iter().map(|n| n.parallelism).max().unwrap_or(1);
        let cluster_slots = self.inner.config.server.slots;
        admit_slots(&tenant, slots, cluster_slots)?;
        let tasks: u32 = weir_worker::plan::ExecutionPlan::new(&graph)
            .vertices
            .iter()
            .map(|v| v.parallelism)
            .sum();
        let max_tasks = self.inner.config.server.max_tasks_per_job;
        if tasks > max_tasks {
            return Err(ClusterError::quota(format!(
                "the job runs {tasks} tasks (operators that cannot be chained, times their \
                 parallelism); a job may run {max_tasks} (max_tasks_per_job)"
            )));
        }
        let id = recovered.clone().unwrap_or_else(|| random_hex(16));
        // A recovered job continues from its latest completed checkpoint, if it has one
        // (else from where it first started).
        let resume = recovered.is_some()
            && weir_checkpoint::Storage::open(&checkpoint_dir.display().to_string())
                .ok()
                .and_then(|s| weir_checkpoint::latest_checkpoint(&s.child(&id)).ok())
                .flatten()
                .is_some();
        let from_savepoint = if resume { None } else { from_savepoint };
        let restart_attempts =
            req.restart_attempts
                .unwrap_or(if req.checkpoint_interval_ms.is_some() {
                    3
                } else {
                    0
                });
        let deployment = Deployment {
            job: id.clone(),
            tenant: tenant.name.clone(),
            component,
            parallelism,
            args,
            checkpoint_dir: checkpoint_dir.display().to_string(),
            checkpoint_interval: req.checkpoint_interval_ms.map(Duration::from_millis),
            savepoint_dir: savepoint_dir.display().to_string(),
            from_savepoint,
            allow_non_restored_state: req.allow_non_restored_state,
            rocksdb_dir: rocksdb.then(|| self.inner.data_dir.join("tmp").join(&id)),
            restart_attempts,
            allowed_paths: tenant.allowed_paths.clone(),
            resume,
            state_limits: DeployedStateLimits {
                job_bytes: tenant.max_state_bytes,
                tenant_bytes: tenant.max_total_state_bytes,
                value_bytes: tenant.max_state_value_bytes,
            },
        };
        let now = now_ms();
        let mut record = JobRecord {
            id: id.clone(),
            tenant: tenant.clone(),
            name: graph.name.clone(),
            request: req,
            state: JobState::Created,
            timestamps: vec![StateEntry {
                state: JobState::Created,
                at_ms: now,
            }],
            slots,
            tasks,
            holds_slots: false,
            start_ms: now,
            end_ms: None,
            restarts: 0,
            failure: None,
            quota_failure: None,
            exceptions: VecDeque::new(),
            checkpoints: CheckpointStats::default(),
            plan: PlanSummary::of(&graph),
            operators: Vec::new(),
            last_sample: None,
            savepoint: None,
            guest_time_before: Duration::ZERO,
            usage: weir_worker::JobUsage::default(),
            triggers: Vec::new(),
            deployment: Some(Box::new(deployment)),
            guest_source: graph.nodes.iter().any(|n| n.kind == NodeKind::GuestSource),
            restored_from: restored_from.clone(),
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
        let active: Vec<&JobRecord> = jobs.active_of(&tenant.name).collect();
        admit_jobs(&tenant, active.len())?;
        admit_tasks(&tenant, active.iter().map(|j| j.tasks).sum(), tasks)?;
        let tenant_slots: u32 = active
            .iter()
            .filter(|j| j.holds_slots)
            .map(|j| j.slots)
            .sum();
        let free = cluster_slots - jobs.slots_used;
        // A recovered job waits for slots rather than being refused.
        let wait = record.request.wait || recovered.is_some();
        if tenant_slots + slots > tenant.max_slots && !wait {
            return Err(ClusterError::quota(format!(
                "the job needs {slots} slots; tenant '{}' holds {tenant_slots} of its {} (max_slots)",
                tenant.name, tenant.max_slots
            )));
        }
        if slots > free && !wait {
            return Err(ClusterError::new(
                ErrorKind::Conflict,
                "no_slots",
                format!(
                    "the job needs {slots} slots; {free} of {cluster_slots} are free (submit with \"wait\": true to queue)"
                ),
            ));
        }
        record.apply(Transition::Schedule);
        if recovered.is_some() {
            push_exception(
                &mut record,
                0,
                format!(
                    "the server stopped while the job ran; recovered from {}",
                    if resume {
                        "its latest checkpoint"
                    } else {
                        "its start"
                    }
                ),
                true,
            );
        }
        tracing::info!(job = %id, tenant = %tenant.name, name = %record.name, slots, resume, "job submitted");
        self.journal(&record);
        jobs.by_id.insert(id.clone(), record);
        jobs.waiting.push_back(id.clone());
        self.schedule(&mut jobs);
        Ok(jobs.by_id[&id].details())
    }

    /// Deploys waiting jobs, in order, while slots and their tenants' quotas allow.
    fn schedule(&self, jobs: &mut Jobs) {
        let total = self.inner.config.server.slots;
        let mut i = 0;
        while i < jobs.waiting.len() {
            let id = jobs.waiting[i].clone();
            let Some(job) = jobs.by_id.get(&id) else {
                jobs.waiting.remove(i);
                continue;
            };
            let tenant_slots: u32 = jobs
                .by_id
                .values()
                .filter(|j| j.tenant.name == job.tenant.name && j.holds_slots)
                .map(|j| j.slots)
                .sum();
            let fits = job.slots <= total - jobs.slots_used
                && tenant_slots + job.slots <= job.tenant.max_slots;
            if !fits {
                i += 1;
                continue;
            }
            jobs.waiting.remove(i);
            let slots = job.slots;
            jobs.slots_used += slots;
            let job = jobs.by_id.get_mut(&id).expect("present");
            job.holds_slots = true;
            if let Some(d) = job.deployment.take() {
                self.inner.taskmanager.send(TaskManagerCommand::Deploy(d));
            }
        }
    }

    /// Runs `f` on a job `p` may see (another tenant's is not found).
    fn with_job<T>(
        &self,
        p: &Principal,
        id: &str,
        f: impl FnOnce(&mut JobRecord) -> Result<T, ClusterError>,
    ) -> Result<T, ClusterError> {
        let mut jobs = self.jobs();
        match jobs.by_id.get_mut(id) {
            Some(j) if p.may_see(&j.tenant.name) => f(j),
            _ => Err(ClusterError::not_found("job", id)),
        }
    }

    /// Jobs `p` may see, newest first.
    pub fn jobs_overview(&self, p: &Principal) -> Vec<JobOverview> {
        let jobs = self.jobs();
        let mut list: Vec<JobOverview> = jobs
            .by_id
            .values()
            .filter(|j| p.may_see(&j.tenant.name))
            .map(JobRecord::overview)
            .collect();
        list.sort_by(|a, b| b.start_ms.cmp(&a.start_ms).then(a.id.cmp(&b.id)));
        list
    }

    /// One job.
    pub fn job(&self, p: &Principal, id: &str) -> Result<JobDetails, ClusterError> {
        self.with_job(p, id, |j| Ok(j.details()))
    }

    /// A job's failures, newest first.
    pub fn exceptions(&self, p: &Principal, id: &str) -> Result<Vec<ExceptionEntry>, ClusterError> {
        self.with_job(p, id, |j| Ok(j.exceptions.iter().rev().cloned().collect()))
    }

    /// A job's checkpoints.
    pub fn checkpoints(&self, p: &Principal, id: &str) -> Result<CheckpointStats, ClusterError> {
        self.with_job(p, id, |j| Ok(j.checkpoints.clone()))
    }

    /// Cancels a job.
    pub fn cancel(&self, p: &Principal, id: &str) -> Result<JobDetails, ClusterError> {
        let mut guard = self.jobs();
        let jobs = &mut *guard;
        let j = match jobs.by_id.get_mut(id) {
            Some(j) if p.may_see(&j.tenant.name) => j,
            _ => return Err(ClusterError::not_found("job", id)),
        };
        {
            if j.state.is_terminal() {
                return Err(ClusterError::conflict(format!(
                    "job {id} has already ended ({})",
                    j.state.name()
                )));
            }
            if !j.apply(Transition::Cancel) {
                return Ok(j.details()); // already cancelling
            }
            if j.deployment.is_none() {
                self.inner.taskmanager.send(TaskManagerCommand::Cancel {
                    job: id.to_string(),
                });
                return Ok(j.details());
            }
            // Never deployed: nothing runs.
            j.deployment = None;
            j.apply(Transition::Canceled);
            j.end_ms = Some(now_ms());
            j.settle_triggers(false, Err("the job was cancelled"));
            j.settle_triggers(true, Err("the job was cancelled"));
            self.journal(j);
        }
        let (details, tenant) = (jobs.by_id[id].details(), jobs.by_id[id].tenant.name.clone());
        jobs.waiting.retain(|w| w != id);
        jobs.remember_ended(id, &tenant);
        Ok(details)
    }

    fn check_snapshots(j: &JobRecord) -> Result<(), ClusterError> {
        if j.guest_source {
            return Err(ClusterError::conflict(
                "this job's source is written in the guest; such jobs cannot take savepoints yet",
            ));
        }
        if j.state != JobState::Running {
            return Err(ClusterError::conflict(format!(
                "the job is {}; savepoints are taken of RUNNING jobs",
                j.state.name()
            )));
        }
        Ok(())
    }

    /// Takes a savepoint; the job goes on. Answers the trigger id.
    pub fn trigger_savepoint(&self, p: &Principal, id: &str) -> Result<String, ClusterError> {
        self.check_disk_of_job(p, id)?;
        self.with_job(p, id, |j| {
            Self::check_snapshots(j)?;
            let trigger = random_hex(8);
            j.add_trigger(&trigger, false);
            self.inner
                .taskmanager
                .send(TaskManagerCommand::TriggerSavepoint {
                    job: id.to_string(),
                });
            Ok(trigger)
        })
    }

    /// Stops a job with a savepoint (`drain`: ending its input first). Answers the trigger id.
    pub fn stop(&self, p: &Principal, id: &str, drain: bool) -> Result<String, ClusterError> {
        self.check_disk_of_job(p, id)?;
        self.with_job(p, id, |j| {
            Self::check_snapshots(j)?;
            j.apply(Transition::Stop);
            let trigger = random_hex(8);
            j.add_trigger(&trigger, true);
            self.inner.taskmanager.send(TaskManagerCommand::Stop {
                job: id.to_string(),
                drain,
            });
            Ok(trigger)
        })
    }

    /// A savepoint trigger's status.
    pub fn savepoint_status(
        &self,
        p: &Principal,
        id: &str,
        trigger: &str,
    ) -> Result<SavepointStatus, ClusterError> {
        self.with_job(p, id, |j| {
            j.triggers
                .iter()
                .map(|(_, t)| t)
                .find(|t| t.id == trigger)
                .cloned()
                .ok_or_else(|| ClusterError::not_found("savepoint trigger", trigger))
        })
    }

    // ---- cluster ----------------------------------------------------------------------

    /// Slots, jobs by state and tenants, as `p` may see them.
    pub fn overview(&self, p: &Principal) -> ClusterOverview {
        // Measured before the job table is locked: it walks the tenant's directories.
        let usage = match p {
            Principal::Admin => None,
            Principal::Tenant(t) => {
                let disk = self.disk_usage(t);
                Some(TenantUsage {
                    disk,
                    disk_bytes: disk.total(),
                    max_disk_bytes: t.max_disk_bytes,
                })
            }
        };
        let jobs = self.jobs();
        let mut by_state: BTreeMap<String, u32> = JobState::ALL
            .iter()
            .map(|s| (s.name().to_string(), 0))
            .collect();
        for j in jobs.by_id.values().filter(|j| p.may_see(&j.tenant.name)) {
            *by_state.entry(j.state.name().to_string()).or_default() += 1;
        }
        let (total, used) = self.slots_seen_by(&jobs, p);
        ClusterOverview {
            slots_total: total,
            slots_free: total.saturating_sub(used),
            jobs: by_state,
            tenants: self
                .inner
                .auth
                .tenants()
                .filter(|t| p.may_see(&t.name))
                .map(|t| t.name.clone())
                .collect(),
            taskmanagers: 1,
            started_ms: self.inner.started_ms,
            version: env!("CARGO_PKG_VERSION").to_string(),
            usage,
        }
    }

    /// The TaskManagers (one, local), as `p` may see them: a tenant sees its own slots and
    /// jobs, not the cluster's nor the process's memory.
    pub fn taskmanagers(&self, p: &Principal) -> Vec<TaskManagerInfo> {
        let jobs = self.jobs();
        let (total, used) = self.slots_seen_by(&jobs, p);
        vec![TaskManagerInfo {
            id: "local".into(),
            slots_total: total,
            slots_free: total.saturating_sub(used),
            jobs_running: jobs
                .by_id
                .values()
                .filter(|j| j.holds_slots && p.may_see(&j.tenant.name))
                .count() as u32,
            rss_bytes: matches!(p, Principal::Admin).then(crate::metrics::rss_bytes),
        }]
    }

    /// Slots (total, used) as `p` may see them: the cluster's for the admin; for a tenant,
    /// those it may use and those its jobs hold (other tenants' use is not its business).
    fn slots_seen_by(&self, jobs: &Jobs, p: &Principal) -> (u32, u32) {
        let cluster = self.inner.config.server.slots;
        match p {
            Principal::Admin => (cluster, jobs.slots_used),
            Principal::Tenant(t) => {
                let held = jobs
                    .by_id
                    .values()
                    .filter(|j| j.tenant.name == t.name && j.holds_slots)
                    .map(|j| j.slots)
                    .sum();
                (t.max_slots.min(cluster), held)
            }
        }
    }

    /// Stops every job (with a savepoint where configured and possible) and waits up to
    /// `timeout` for them to end.
    pub fn shutdown(&self, timeout: Duration) {
        let with_savepoint = self.inner.config.server.savepoint_on_shutdown;
        {
            let mut jobs = self.jobs();
            let ids: Vec<String> = jobs.by_id.keys().cloned().collect();
            for id in ids {
                let j = jobs.by_id.get_mut(&id).expect("present");
                if j.state.is_terminal() {
                    continue;
                }
                if j.deployment.is_some() {
                    j.deployment = None;
                    j.apply(Transition::Cancel);
                    j.apply(Transition::Canceled);
                    self.journal(j);
                    continue;
                }
                if with_savepoint && !j.guest_source && j.state == JobState::Running {
                    j.apply(Transition::Stop);
                    self.inner.taskmanager.send(TaskManagerCommand::Stop {
                        job: id,
                        drain: false,
                    });
                } else if j.apply(Transition::Cancel) {
                    self.inner
                        .taskmanager
                        .send(TaskManagerCommand::Cancel { job: id });
                }
            }
            jobs.waiting.clear();
        }
        // Half the time for savepoints; then whatever still runs (a stop whose savepoint
        // failed leaves its job running) is cancelled.
        let wait = |d: Duration| {
            let until = Instant::now() + d;
            while Instant::now() < until {
                if self.jobs().by_id.values().all(|j| !j.holds_slots) {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            false
        };
        if wait(timeout / 2) {
            return;
        }
        {
            let mut jobs = self.jobs();
            for j in jobs.by_id.values_mut().filter(|j| j.holds_slots) {
                j.apply(Transition::Cancel);
                self.inner
                    .taskmanager
                    .send(TaskManagerCommand::Cancel { job: j.id.clone() });
            }
        }
        if !wait(timeout / 2) {
            tracing::warn!("some jobs did not stop in time");
        }
    }

    /// Renders the metrics `p` may see in Prometheus' text format.
    pub fn metrics(&self, p: &Principal) -> String {
        let jobs = self.jobs();
        let (total, used) = self.slots_seen_by(&jobs, p);
        let visible = jobs.by_id.values().filter(|j| p.may_see(&j.tenant.name));
        let tenants = jobs
            .tenant_guest_time
            .iter()
            .filter(|(t, _)| p.may_see(t))
            .map(|(t, cpu)| {
                let memory = jobs
                    .by_id
                    .values()
                    .filter(|j| &j.tenant.name == t)
                    .map(|j| j.usage.guest_memory_bytes)
                    .sum();
                (t.as_str(), *cpu, memory)
            });
        crate::metrics::render(
            visible.map(|j| crate::metrics::JobMetrics {
                id: &j.id,
                name: &j.name,
                tenant: &j.tenant.name,
                state: j.state,
                restarts: j.restarts,
                operators: &j.operators,
                checkpoints: &j.checkpoints,
                guest_time: j.guest_time(),
                guest_memory_bytes: j.usage.guest_memory_bytes,
            }),
            tenants,
            total,
            used,
            matches!(p, Principal::Admin),
        )
    }

    // ---- events from the TaskManager ---------------------------------------------------

    fn on_event(&self, event: TaskManagerEvent) {
        let job = event.job.clone();
        // A tenant's disk is measured with the job table unlocked (it walks directories).
        if let Some((tenant, checkpoint)) = self.apply_event(event) {
            if let Err(e) = self.check_disk(&tenant) {
                let mut jobs = self.jobs();
                if let Some(j) = jobs.by_id.get_mut(&job) {
                    if !j.state.is_terminal() && j.quota_failure.is_none() {
                        let cause = format!("checkpoint {checkpoint}: {}", e.message);
                        tracing::warn!(job = %j.id, %cause, "disk quota exceeded");
                        j.quota_failure = Some(cause);
                        j.apply(Transition::Cancel);
                        self.inner
                            .taskmanager
                            .send(TaskManagerCommand::Cancel { job: j.id.clone() });
                    }
                }
            }
        }
    }

    /// Applies an event to its job's record; answers a disk check to make after a
    /// checkpoint (the job's tenant, the checkpoint).
    fn apply_event(&self, event: TaskManagerEvent) -> Option<(Arc<TenantConfig>, u64)> {
        let mut disk_check = None;
        let mut guard = self.jobs();
        let jobs = &mut *guard;
        let j = jobs.by_id.get_mut(&event.job)?;
        match event.kind {
            TaskManagerEventKind::Running { attempt } => {
                j.restarts = attempt;
                j.apply(Transition::TasksRunning);
            }
            TaskManagerEventKind::Restarting { attempt, cause } => {
                // The cause may carry a guest's words: one line, as guest logs are.
                let shown = weir_runtime::one_line(&cause);
                tracing::warn!(job = %j.id, tenant = %j.tenant.name, attempt, cause = %shown, "job restarting");
                push_exception(j, attempt - 1, cause, true);
                j.restarts = attempt;
                j.operators.iter_mut().for_each(|o| {
                    o.records_in_per_second = 0.0;
                    o.records_out_per_second = 0.0;
                });
                j.last_sample = None;
                j.close_attempt();
                j.apply(Transition::TaskFailed);
            }
            TaskManagerEventKind::Snapshot(s) => {
                let entry = CheckpointEntry {
                    id: s.id,
                    savepoint: s.savepoint,
                    location: s.location.clone(),
                    duration_ms: s.duration_ms,
                    state_bytes: s.state_bytes,
                    completed_ms: s.completed_ms,
                };
                let c = &mut j.checkpoints;
                if s.savepoint {
                    c.latest_savepoint = Some(entry.clone());
                } else {
                    c.completed += 1;
                    c.latest = Some(entry.clone());
                }
                c.history.insert(0, entry);
                c.history.truncate(CHECKPOINT_HISTORY);
                if s.savepoint {
                    // Triggers asked for after this savepoint began wait for the next one
                    // (the TaskManager takes another: the request is still pending there).
                    let began = s.completed_ms - s.duration_ms as i64;
                    j.settle_triggers_before(false, Ok(&s.location), began);
                }
                // Checkpoints are written as the job runs: its tenant's disk quota is checked
                // as they complete (once every few seconds per tenant), the job failing over it.
                let due = jobs
                    .disk_checked
                    .get(&j.tenant.name)
                    .is_none_or(|t| t.elapsed() >= DISK_CHECK_INTERVAL);
                if due && j.quota_failure.is_none() {
                    jobs.disk_checked
                        .insert(j.tenant.name.clone(), Instant::now());
                    disk_check = Some((j.tenant.clone(), s.id));
                }
            }
            TaskManagerEventKind::SnapshotFailed {
                savepoint,
                stop,
                reason,
            } => {
                j.checkpoints.failed += 1;
                if stop {
                    // The job goes on, as before the stop was asked for.
                    j.settle_triggers(true, Err(&reason));
                    j.apply(Transition::StopFailed);
                } else if savepoint {
                    j.settle_triggers(false, Err(&reason));
                }
            }
            TaskManagerEventKind::Metrics {
                operators,
                usage,
                sampled_ms,
            } => {
                let delta = usage.guest_time.saturating_sub(j.usage.guest_time);
                *jobs
                    .tenant_guest_time
                    .entry(j.tenant.name.clone())
                    .or_default() += delta;
                let j = jobs.by_id.get_mut(&event.job).expect("present");
                j.usage = usage;
                let elapsed = j
                    .last_sample
                    .map(|t| sampled_ms.saturating_sub(t).max(0) as f64 / 1000.0);
                let previous: std::collections::HashMap<String, OperatorStatus> =
                    std::mem::take(&mut j.operators)
                        .into_iter()
                        .map(|o| (o.uid.clone(), o))
                        .collect();
                j.operators = operators
                    .into_iter()
                    .map(|o| {
                        let before = previous.get(&o.records.uid);
                        let rate = |now: u64, then: Option<u64>| match (elapsed, then) {
                            (Some(dt), Some(then)) if dt > 0.0 && now >= then => {
                                (now - then) as f64 / dt
                            }
                            _ => 0.0,
                        };
                        OperatorStatus {
                            records_in_per_second: rate(
                                o.records.records_in,
                                before.map(|b| b.records_in),
                            ),
                            records_out_per_second: rate(
                                o.records.records_out,
                                before.map(|b| b.records_out),
                            ),
                            backpressure: match (elapsed, before) {
                                (Some(dt), Some(b)) if dt > 0.0 => {
                                    let now = o.blocked.as_millis() as u64;
                                    let ms = now.saturating_sub(b.blocked_ms) as f64;
                                    let tasks = f64::from(o.records.parallelism.max(1));
                                    (ms / (dt * 1e3 * tasks)).min(1.0)
                                }
                                _ => 0.0,
                            },
                            blocked_ms: o.blocked.as_millis() as u64,
                            uid: o.records.uid,
                            parallelism: o.records.parallelism,
                            records_in: o.records.records_in,
                            records_out: o.records.records_out,
                            watermark: o.watermark,
                        }
                    })
                    .collect();
                j.last_sample = Some(sampled_ms);
            }
            TaskManagerEventKind::Ended(outcome) => {
                match outcome {
                    JobOutcome::Finished {
                        savepoint,
                        operators,
                    } => {
                        for o in operators {
                            if let Some(s) = j.operators.iter_mut().find(|s| s.uid == o.uid) {
                                s.records_in = o.records_in;
                                s.records_out = o.records_out;
                                s.records_in_per_second = 0.0;
                                s.records_out_per_second = 0.0;
                            } else {
                                j.operators.push(OperatorStatus {
                                    uid: o.uid,
                                    parallelism: o.parallelism,
                                    records_in: o.records_in,
                                    records_out: o.records_out,
                                    ..OperatorStatus::default()
                                });
                            }
                        }
                        match &savepoint {
                            Some(s) => j.settle_triggers(true, Ok(s)),
                            None => j.settle_triggers(true, Err("the job finished first")),
                        }
                        j.savepoint = savepoint;
                        j.apply(Transition::Finished);
                    }
                    JobOutcome::Canceled => match j.quota_failure.clone() {
                        Some(cause) => {
                            push_exception(j, j.restarts, cause.clone(), false);
                            j.failure = Some(cause);
                            j.apply(Transition::Failed);
                        }
                        None => {
                            j.apply(Transition::Canceled);
                        }
                    },
                    JobOutcome::Failed(cause) => {
                        let shown = weir_runtime::one_line(&cause);
                        tracing::warn!(job = %j.id, tenant = %j.tenant.name, cause = %shown, "job failed");
                        push_exception(j, j.restarts, cause.clone(), false);
                        j.failure = Some(cause);
                        j.apply(Transition::Failed);
                    }
                }
                // Checkpoints outlive only a failure (to resume from).
                let ended_id = j.id.clone();
                let delete = matches!(j.state, JobState::Finished | JobState::Canceled);
                // ...unless a job not yet ended was started from one of them.
                let dir = self
                    .inner
                    .data_dir
                    .join("tenants")
                    .join(&j.tenant.name)
                    .join("checkpoints")
                    .join(&ended_id);
                let in_use = jobs.started_from(&dir).is_some();
                let j = jobs.by_id.get_mut(&event.job).expect("present");
                if delete && !in_use {
                    std::thread::spawn(move || {
                        if let Err(e) = std::fs::remove_dir_all(&dir) {
                            if e.kind() != std::io::ErrorKind::NotFound {
                                tracing::warn!(dir = %dir.display(), error = %e, "cannot delete checkpoints");
                            }
                        }
                    });
                }
                let reason = format!("the job ended ({})", j.state.name());
                j.settle_triggers(false, Err(&reason));
                j.settle_triggers(true, Err(&reason));
                j.end_ms = Some(now_ms());
                j.last_sample = None;
                j.close_attempt();
                if j.holds_slots {
                    j.holds_slots = false;
                    jobs.slots_used -= j.slots;
                }
                let tenant = jobs.by_id[&event.job].tenant.name.clone();
                jobs.remember_ended(&event.job, &tenant);
                if let Some(j) = jobs.by_id.get(&event.job) {
                    self.journal(j);
                }
                self.schedule(jobs);
            }
        }
        disk_check
    }
}

fn push_exception(j: &mut JobRecord, attempt: u32, message: String, restarted: bool) {
    j.exceptions.push_back(ExceptionEntry {
        at_ms: now_ms(),
        attempt,
        message,
        restarted,
    });
    while j.exceptions.len() > EXCEPTION_HISTORY {
        j.exceptions.pop_front();
    }
}

/// One more job for `tenant`, which has `active` jobs that have not ended.
fn admit_jobs(tenant: &TenantConfig, active: usize) -> Result<(), ClusterError> {
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

fn too_large(tenant: &TenantConfig) -> ClusterError {
    ClusterError::new(
        ErrorKind::TooLarge,
        "too_large",
        format!(
            "the component is larger than tenant '{}''s max_component_bytes ({})",
            tenant.name, tenant.max_component_bytes
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant() -> TenantConfig {
        toml::from_str(&format!(
            "name = 't'\ntoken_sha256 = '{}'\nmax_jobs = 2\nmax_slots = 4\nmax_tasks = 10",
            "ab".repeat(32)
        ))
        .unwrap()
    }

    #[test]
    fn admission_names_the_quota_it_refuses() {
        let t = tenant();
        assert!(admit_jobs(&t, 1).is_ok());
        let e = admit_jobs(&t, 2).unwrap_err();
        assert_eq!(e.code, "quota_exceeded");
        assert!(e.message.contains("max_jobs"), "{e}");
        assert!(admit_slots(&t, 4, 8).is_ok());
        assert!(admit_slots(&t, 5, 8)
            .unwrap_err()
            .message
            .contains("max_slots"));
        assert!(admit_slots(&t, 4, 3)
            .unwrap_err()
            .message
            .contains("the cluster has 3"));
        assert!(admit_tasks(&t, 6, 4).is_ok());
        let e = admit_tasks(&t, 6, 5).unwrap_err();
        assert!(e.message.contains("runs 6 of its 10 (max_tasks)"), "{e}");
        assert!(admit_tasks(&t, u32::MAX, 1).is_err());
    }
}
