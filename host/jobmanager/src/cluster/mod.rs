//! The JobManager: the dispatcher (components, submissions, the job table), a job master's
//! bookkeeping per job (lifecycle, restarts, exceptions, checkpoints, savepoint triggers)
//! and the resource manager (slots). It drives the TaskManager only through messages and
//! learns what happens from the TaskManager's events, on a thread of its own.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use weir_runtime::{Runtime, RuntimeConfig};

mod events;
mod submit;

use crate::auth::{random_hex, Authenticator, Principal};
use crate::components::{now_ms, ComponentInfo, ComponentStore, PlanSummary, Upload};
use crate::config::{ClusterConfig, TenantConfig};
use crate::disk::{self, DiskUsage, SavepointInfo, TenantDirs, TenantUsage};
use crate::error::{ClusterError, ErrorCode};
use crate::job::*;
use crate::taskmanager::{
    Deployment, Registration, TaskManager, TaskManagerCommand, TaskManagerMessage,
};
use weir_connectors::paths;
use weir_worker::JobCommand;

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
    runtime: Arc<Runtime>,
    components: ComponentStore,
    taskmanager: TaskManager,
    /// The TaskManagers registered and the slots they offer.
    taskmanagers: Mutex<Vec<Registration>>,
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

    /// What a tenant's jobs that have not ended hold.
    fn load_of(&self, tenant: &str) -> submit::TenantLoad {
        self.active_of(tenant)
            .fold(submit::TenantLoad::default(), |mut load, j| {
                load.jobs += 1;
                load.tasks += j.tasks;
                if j.holds_slots {
                    load.slots += j.slots;
                }
                load
            })
    }

    /// Waiting jobs that fit now — in the cluster's free slots and their tenants' — in
    /// submission order (a job that does not fit does not hold back smaller ones behind
    /// it); they hold their slots from now on. Returns their deployments.
    fn take_deployable(&mut self, total_slots: u32) -> Vec<Deployment> {
        let mut deploy = Vec::new();
        let mut i = 0;
        while i < self.waiting.len() {
            let id = self.waiting[i].clone();
            let Some(job) = self.by_id.get(&id) else {
                self.waiting.remove(i);
                continue;
            };
            let tenant_slots = self.load_of(&job.tenant.name).slots;
            let fits = job.slots <= total_slots - self.slots_used
                && tenant_slots + job.slots <= job.tenant.max_slots;
            if !fits {
                i += 1;
                continue;
            }
            self.waiting.remove(i);
            self.slots_used += job.slots;
            let job = self.by_id.get_mut(&id).expect("present");
            job.holds_slots = true;
            deploy.extend(job.deployment.take().map(|d| *d));
        }
        deploy
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
    /// Its component's digest (compiled code is kept while a job not ended uses it).
    sha256: String,
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
        let runtime = Arc::new(
            Runtime::new(RuntimeConfig {
                call_timeout: config.server.call_timeout(),
                max_call_output: config.server.max_call_output_bytes,
                ..RuntimeConfig::default()
            })
            .map_err(|e| ClusterError::internal(e.to_string()))?,
        );
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
        let taskmanager = TaskManager::start(
            events_tx,
            config.server.slots,
            config.server.state_memory_budget_bytes,
            runtime.clone(),
        )
        .map_err(|e| io("cannot start the TaskManager", e))?;
        // Jobs are scheduled on the slots TaskManagers offer: the local one first.
        let registered = match events_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(TaskManagerMessage::Registered(r)) => r,
            _ => {
                return Err(ClusterError::internal(
                    "the local TaskManager did not register",
                ))
            }
        };
        tracing::info!(id = %registered.id, slots = registered.slots, "TaskManager registered");
        let inner = Arc::new(Inner {
            auth: Authenticator::new(&config),
            config,
            data_dir,
            runtime,
            components,
            taskmanager,
            taskmanagers: Mutex::new(vec![registered]),
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
                for message in events_rx {
                    let Some(inner) = weak.upgrade() else { return };
                    let jm = JobManager { inner };
                    match message {
                        TaskManagerMessage::Job(event) => jm.on_event(event),
                        TaskManagerMessage::Registered(r) => {
                            tracing::info!(id = %r.id, slots = r.slots, "TaskManager registered");
                            jm.inner.taskmanagers.lock().expect("not poisoned").push(r);
                        }
                    }
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

    /// The slots the registered TaskManagers offer.
    fn slots(&self) -> u32 {
        let tms = self.inner.taskmanagers.lock().expect("not poisoned");
        tms.iter().map(|t| t.slots).sum()
    }

    fn jobs(&self) -> MutexGuard<'_, Jobs> {
        self.inner.jobs.lock().expect("not poisoned")
    }

    fn tenant_of<'p>(&self, p: &'p Principal) -> Result<&'p Arc<TenantConfig>, ClusterError> {
        match p {
            Principal::Tenant(t) => Ok(t),
            Principal::Admin => Err(ClusterError::new(
                ErrorCode::TenantOnly,
                "the admin token is for cluster operations; use a tenant's token for this",
            )),
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
                ErrorCode::InUse,
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
            return Err(ClusterError::new(ErrorCode::InUse,
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
            &self.sandbox(tenant).runtime_config(),
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

    /// Forgets the compiled code of `sha256` unless a stored component has the same bytes
    /// or a job that has not ended runs it (a job waiting for slots is deployed from it).
    fn release_compiled(&self, jobs: &Jobs, sha256: &str) {
        let stored = self
            .inner
            .components
            .list(None)
            .iter()
            .any(|c| c.sha256 == sha256);
        let used = jobs
            .by_id
            .values()
            .any(|j| j.sha256 == sha256 && !j.state.is_terminal());
        if !stored && !used {
            self.inner.runtime.evict(sha256);
        }
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
        self.release_compiled(&self.jobs(), &removed.sha256);
        Ok(removed)
    }

    // ---- jobs -------------------------------------------------------------------------

    /// Deploys waiting jobs, in order, while slots and their tenants' quotas allow.
    fn schedule(&self, jobs: &mut Jobs) {
        for d in jobs.take_deployable(self.slots()) {
            self.inner
                .taskmanager
                .send(TaskManagerCommand::Deploy(Box::new(d)));
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
                self.inner.taskmanager.steer(id, JobCommand::Cancel);
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
        let j = &jobs.by_id[id];
        let (details, tenant, sha256) = (j.details(), j.tenant.name.clone(), j.sha256.clone());
        jobs.waiting.retain(|w| w != id);
        jobs.remember_ended(id, &tenant);
        self.release_compiled(jobs, &sha256);
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
            self.inner.taskmanager.steer(id, JobCommand::Savepoint);
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
            self.inner.taskmanager.steer(id, JobCommand::Stop { drain });
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
            taskmanagers: self.inner.taskmanagers.lock().expect("not poisoned").len() as u32,
            started_ms: self.inner.started_ms,
            version: env!("CARGO_PKG_VERSION").to_string(),
            usage,
        }
    }

    /// The TaskManagers (one, local), as `p` may see them: a tenant sees its own slots and
    /// jobs, not the cluster's nor the process's memory.
    pub fn taskmanagers(&self, p: &Principal) -> Vec<TaskManagerInfo> {
        // Every job runs on the local TaskManager, the one registered at start (so far the
        // only one).
        let id = self.inner.taskmanagers.lock().expect("not poisoned")[0]
            .id
            .clone();
        let jobs = self.jobs();
        let (total, used) = self.slots_seen_by(&jobs, p);
        vec![TaskManagerInfo {
            id,
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
        let cluster = self.slots();
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
                    self.inner
                        .taskmanager
                        .steer(&id, JobCommand::Stop { drain: false });
                } else if j.apply(Transition::Cancel) {
                    self.inner.taskmanager.steer(&id, JobCommand::Cancel);
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
                self.inner.taskmanager.steer(&j.id, JobCommand::Cancel);
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

fn too_large(tenant: &TenantConfig) -> ClusterError {
    ClusterError::new(
        ErrorCode::TooLarge,
        format!(
            "the component is larger than tenant '{}''s max_component_bytes ({})",
            tenant.name, tenant.max_component_bytes
        ),
    )
}

#[cfg(test)]
mod tests;
