//! What the JobManager does with each event a TaskManager reports: one method per kind.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use weir_worker::{JobCommand, JobUsage, OperatorProgress, OperatorSummary, SnapshotStats};

use super::{push_exception, JobManager, JobRecord, Jobs, CHECKPOINT_HISTORY, DISK_CHECK_INTERVAL};
use crate::components::now_ms;
use crate::config::TenantConfig;
use crate::job::*;
use crate::taskmanager::{JobOutcome, TaskManagerEvent, TaskManagerEventKind};

impl JobManager {
    /// Applies an event; after a checkpoint, measures the tenant's disk (with the job table
    /// unlocked: it walks directories) and fails the job if the tenant is over its quota.
    pub(super) fn on_event(&self, event: TaskManagerEvent) {
        let job = event.job.clone();
        let Some((tenant, checkpoint)) = self.apply_event(event) else {
            return;
        };
        let Err(e) = self.check_disk(&tenant) else {
            return;
        };
        let mut jobs = self.jobs();
        if let Some(j) = jobs.by_id.get_mut(&job) {
            if !j.state.is_terminal() && j.quota_failure.is_none() {
                let cause = format!("checkpoint {checkpoint}: {}", e.message);
                tracing::warn!(job = %j.id, %cause, "disk quota exceeded");
                j.quota_failure = Some(cause);
                j.apply(Transition::Cancel);
                self.inner.taskmanager.steer(&j.id, JobCommand::Cancel);
            }
        }
    }

    /// Applies an event to its job's record; answers a disk check to make after a
    /// checkpoint (the job's tenant, the checkpoint).
    fn apply_event(&self, event: TaskManagerEvent) -> Option<(Arc<TenantConfig>, u64)> {
        let mut guard = self.jobs();
        let jobs = &mut *guard;
        let j = jobs.by_id.get_mut(&event.job)?;
        match event.kind {
            TaskManagerEventKind::Running { attempt } => j.on_running(attempt),
            TaskManagerEventKind::Restarting { attempt, cause } => j.on_restarting(attempt, cause),
            TaskManagerEventKind::Snapshot(s) => {
                j.on_snapshot(&s);
                return jobs.disk_check_due(&event.job, s.id);
            }
            TaskManagerEventKind::SnapshotFailed {
                savepoint,
                stop,
                reason,
            } => j.on_snapshot_failed(savepoint, stop, &reason),
            TaskManagerEventKind::Metrics {
                operators,
                usage,
                sampled_ms,
            } => {
                let delta = j.on_metrics(operators, usage, sampled_ms);
                let tenant = j.tenant.name.clone();
                *jobs.tenant_guest_time.entry(tenant).or_default() += delta;
            }
            TaskManagerEventKind::Ended(outcome) => {
                j.on_ended(outcome);
                self.after_end(jobs, &event.job);
            }
        }
        None
    }

    /// A job ended: its checkpoints go unless it failed (or another job was started from
    /// them), its slots and compiled code are given back, and waiting jobs get a chance.
    fn after_end(&self, jobs: &mut Jobs, id: &str) {
        let j = &jobs.by_id[id];
        // Checkpoints outlive only a failure (to resume from)...
        let delete = matches!(j.state, JobState::Finished | JobState::Canceled);
        let dir = self
            .inner
            .data_dir
            .join("tenants")
            .join(&j.tenant.name)
            .join("checkpoints")
            .join(id);
        // ...unless a job not yet ended was started from one of them.
        if delete && jobs.started_from(&dir).is_none() {
            std::thread::spawn(move || {
                if let Err(e) = std::fs::remove_dir_all(&dir) {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        tracing::warn!(dir = %dir.display(), error = %e, "cannot delete checkpoints");
                    }
                }
            });
        }
        let j = jobs.by_id.get_mut(id).expect("present");
        if j.holds_slots {
            j.holds_slots = false;
            jobs.slots_used -= j.slots;
        }
        let (tenant, sha256) = (j.tenant.name.clone(), j.sha256.clone());
        self.journal(j);
        jobs.remember_ended(id, &tenant);
        self.release_compiled(jobs, &sha256);
        self.schedule(jobs);
    }
}

impl Jobs {
    /// Checkpoints are written as jobs run: a tenant's disk quota is checked as they
    /// complete, once every few seconds per tenant.
    fn disk_check_due(&mut self, id: &str, checkpoint: u64) -> Option<(Arc<TenantConfig>, u64)> {
        let j = &self.by_id[id];
        let due = self
            .disk_checked
            .get(&j.tenant.name)
            .is_none_or(|t| t.elapsed() >= DISK_CHECK_INTERVAL);
        if !due || j.quota_failure.is_some() {
            return None;
        }
        self.disk_checked
            .insert(j.tenant.name.clone(), Instant::now());
        Some((j.tenant.clone(), checkpoint))
    }
}

impl JobRecord {
    pub(super) fn on_running(&mut self, attempt: u32) {
        self.restarts = attempt;
        self.apply(Transition::TasksRunning);
    }

    pub(super) fn on_restarting(&mut self, attempt: u32, cause: String) {
        // The cause may carry a guest's words: one line, as guest logs are.
        let shown = weir_runtime::one_line(&cause);
        tracing::warn!(job = %self.id, tenant = %self.tenant.name, attempt, cause = %shown, "job restarting");
        push_exception(self, attempt - 1, cause, true);
        self.restarts = attempt;
        for o in &mut self.operators {
            o.records_in_per_second = 0.0;
            o.records_out_per_second = 0.0;
        }
        self.last_sample = None;
        self.close_attempt();
        self.apply(Transition::TaskFailed);
    }

    pub(super) fn on_snapshot(&mut self, s: &SnapshotStats) {
        let entry = CheckpointEntry {
            id: s.id,
            savepoint: s.savepoint,
            location: s.location.clone(),
            duration_ms: s.duration_ms,
            state_bytes: s.state_bytes,
            completed_ms: s.completed_ms,
        };
        let c = &mut self.checkpoints;
        if s.savepoint {
            c.latest_savepoint = Some(entry.clone());
        } else {
            c.completed += 1;
            c.latest = Some(entry.clone());
        }
        c.history.insert(0, entry);
        c.history.truncate(CHECKPOINT_HISTORY);
        if s.savepoint {
            // Triggers asked for after this savepoint began wait for the next one (the
            // TaskManager takes another: the request is still pending there).
            let began = s.completed_ms - s.duration_ms as i64;
            self.settle_triggers_before(false, Ok(&s.location), began);
        }
    }

    pub(super) fn on_snapshot_failed(&mut self, savepoint: bool, stop: bool, reason: &str) {
        self.checkpoints.failed += 1;
        if stop {
            // The job goes on, as before the stop was asked for.
            self.settle_triggers(true, Err(reason));
            self.apply(Transition::StopFailed);
        } else if savepoint {
            self.settle_triggers(false, Err(reason));
        }
    }

    /// Takes a sample of the job's operators; rates are computed since the last one.
    /// Returns the guest time used since the last sample.
    pub(super) fn on_metrics(
        &mut self,
        operators: Vec<OperatorProgress>,
        usage: JobUsage,
        sampled_ms: i64,
    ) -> Duration {
        let delta = usage.guest_time.saturating_sub(self.usage.guest_time);
        self.usage = usage;
        let elapsed = self
            .last_sample
            .map(|t| sampled_ms.saturating_sub(t).max(0) as f64 / 1000.0);
        let previous: HashMap<String, OperatorStatus> = std::mem::take(&mut self.operators)
            .into_iter()
            .map(|o| (o.uid.clone(), o))
            .collect();
        self.operators = operators
            .into_iter()
            .map(|o| {
                let before = previous.get(&o.records.uid);
                operator_status(o, before, elapsed)
            })
            .collect();
        self.last_sample = Some(sampled_ms);
        delta
    }

    pub(super) fn on_ended(&mut self, outcome: JobOutcome) {
        match outcome {
            JobOutcome::Finished {
                savepoint,
                operators,
            } => {
                self.final_counts(operators);
                match &savepoint {
                    Some(s) => self.settle_triggers(true, Ok(s)),
                    None => self.settle_triggers(true, Err("the job finished first")),
                }
                self.savepoint = savepoint;
                self.apply(Transition::Finished);
            }
            JobOutcome::Canceled => match self.quota_failure.clone() {
                Some(cause) => {
                    push_exception(self, self.restarts, cause.clone(), false);
                    self.failure = Some(cause);
                    self.apply(Transition::Failed);
                }
                None => {
                    self.apply(Transition::Canceled);
                }
            },
            JobOutcome::Failed(cause) => {
                let shown = weir_runtime::one_line(&cause);
                tracing::warn!(job = %self.id, tenant = %self.tenant.name, cause = %shown, "job failed");
                push_exception(self, self.restarts, cause.clone(), false);
                self.failure = Some(cause);
                self.apply(Transition::Failed);
            }
        }
        let reason = format!("the job ended ({})", self.state.name());
        self.settle_triggers(false, Err(&reason));
        self.settle_triggers(true, Err(&reason));
        self.end_ms = Some(now_ms());
        self.last_sample = None;
        self.close_attempt();
    }

    /// The final record counts of a finished job.
    fn final_counts(&mut self, operators: Vec<OperatorSummary>) {
        for o in operators {
            if let Some(s) = self.operators.iter_mut().find(|s| s.uid == o.uid) {
                s.records_in = o.records_in;
                s.records_out = o.records_out;
                s.records_in_per_second = 0.0;
                s.records_out_per_second = 0.0;
            } else {
                self.operators.push(OperatorStatus {
                    uid: o.uid,
                    parallelism: o.parallelism,
                    records_in: o.records_in,
                    records_out: o.records_out,
                    ..OperatorStatus::default()
                });
            }
        }
    }
}

/// An operator's status from a sample, with rates since `before` (`elapsed` seconds ago).
fn operator_status(
    o: OperatorProgress,
    before: Option<&OperatorStatus>,
    elapsed: Option<f64>,
) -> OperatorStatus {
    let rate = |now: u64, then: Option<u64>| match (elapsed, then) {
        (Some(dt), Some(then)) if dt > 0.0 && now >= then => (now - then) as f64 / dt,
        _ => 0.0,
    };
    let blocked_ms = o.blocked.as_millis() as u64;
    OperatorStatus {
        records_in_per_second: rate(o.records.records_in, before.map(|b| b.records_in)),
        records_out_per_second: rate(o.records.records_out, before.map(|b| b.records_out)),
        backpressure: match (elapsed, before) {
            (Some(dt), Some(b)) if dt > 0.0 => {
                let ms = blocked_ms.saturating_sub(b.blocked_ms) as f64;
                let tasks = f64::from(o.records.parallelism.max(1));
                (ms / (dt * 1e3 * tasks)).min(1.0)
            }
            _ => 0.0,
        },
        blocked_ms,
        uid: o.records.uid,
        parallelism: o.records.parallelism,
        records_in: o.records.records_in,
        records_out: o.records.records_out,
        watermark: o.watermark,
    }
}
