//! A job's lifecycle as an explicit state machine, and what the REST API shows of a job.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::components::PlanSummary;

/// Where a job is in its life.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobState {
    /// Accepted, nothing allocated yet.
    Created,
    /// Waiting for slots, or being deployed to the TaskManager.
    Scheduled,
    /// Every task runs.
    Running,
    /// A task failed; the job restarts from its latest checkpoint.
    Restarting,
    /// Stopping with a savepoint (and, with `drain`, ending its input first).
    Finishing,
    /// Cancel asked for; tasks are stopping.
    Cancelling,
    /// Ended: the input was consumed, or the job stopped with a savepoint.
    Finished,
    /// Ended by a cancel.
    Canceled,
    /// Ended by a failure beyond its restart strategy, or a quota.
    Failed,
}

impl JobState {
    /// Whether the job has ended.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Finished | JobState::Canceled | JobState::Failed
        )
    }

    /// Every state, in lifecycle order.
    pub const ALL: [JobState; 9] = [
        JobState::Created,
        JobState::Scheduled,
        JobState::Running,
        JobState::Restarting,
        JobState::Finishing,
        JobState::Cancelling,
        JobState::Finished,
        JobState::Canceled,
        JobState::Failed,
    ];

    /// The name the API uses (`RUNNING`, ...).
    pub fn name(self) -> &'static str {
        match self {
            JobState::Created => "CREATED",
            JobState::Scheduled => "SCHEDULED",
            JobState::Running => "RUNNING",
            JobState::Restarting => "RESTARTING",
            JobState::Finishing => "FINISHING",
            JobState::Cancelling => "CANCELLING",
            JobState::Finished => "FINISHED",
            JobState::Canceled => "CANCELED",
            JobState::Failed => "FAILED",
        }
    }

    /// The state after `t`, or `None` when `t` is not allowed now.
    pub fn next(self, t: Transition) -> Option<JobState> {
        use JobState::*;
        let to = match (self, t) {
            (s, _) if s.is_terminal() => return None,
            (Created, Transition::Schedule) => Scheduled,
            (Scheduled | Restarting, Transition::TasksRunning) => Running,
            // Finishing and cancelling jobs stay so while their tasks come up again.
            (Finishing | Cancelling, Transition::TasksRunning) => self,
            (Scheduled | Running, Transition::TaskFailed) => Restarting,
            (Finishing | Cancelling, Transition::TaskFailed) => self,
            (Running | Restarting | Scheduled, Transition::Stop) => Finishing,
            (Finishing, Transition::StopFailed) => Running,
            (Cancelling, Transition::Cancel) => return None,
            (_, Transition::Cancel) => Cancelling,
            (_, Transition::Finished) => Finished,
            (_, Transition::Canceled) => Canceled,
            (_, Transition::Failed) => Failed,
            _ => return None,
        };
        Some(to)
    }
}

/// What moves a job from one state to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Slots are asked for.
    Schedule,
    /// The TaskManager reports every task running.
    TasksRunning,
    /// A task failed and the restart strategy allows another attempt.
    TaskFailed,
    /// Stop with a savepoint.
    Stop,
    /// The savepoint to stop with failed: the job goes on.
    StopFailed,
    /// Cancel.
    Cancel,
    /// The tasks ended normally (input consumed or stopped with a savepoint).
    Finished,
    /// The tasks ended by a cancel.
    Canceled,
    /// The job failed for good.
    Failed,
}

/// `POST /v1/jobs`.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitJob {
    /// The component's id (from `POST /v1/components`).
    pub component: String,
    /// Default parallelism of its operators (default 1).
    #[serde(default)]
    pub parallelism: Option<u32>,
    /// Job arguments.
    #[serde(default)]
    pub args: BTreeMap<String, String>,
    /// `memory` (default) or `rocksdb`.
    #[serde(default)]
    pub state_backend: Option<String>,
    /// Time between checkpoints in ms; none: no periodic checkpoints.
    #[serde(default)]
    pub checkpoint_interval_ms: Option<u64>,
    /// Start from this savepoint (a location a savepoint of this tenant answered with).
    #[serde(default)]
    pub from_savepoint: Option<String>,
    /// Drop state of operators the new version no longer has.
    #[serde(default)]
    pub allow_non_restored_state: bool,
    /// Restarts allowed after task failures (default 3 with checkpoints, 0 without).
    #[serde(default)]
    pub restart_attempts: Option<u32>,
    /// Wait in `SCHEDULED` until slots are free instead of failing at once.
    #[serde(default)]
    pub wait: bool,
}

/// One line of `GET /v1/jobs`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobOverview {
    /// Job id.
    pub id: String,
    /// The job's name (from its plan).
    pub name: String,
    /// Lifecycle state.
    pub state: JobState,
    /// Owner.
    pub tenant: String,
    /// Component id.
    pub component: String,
    /// Slots it holds (or waits for).
    pub slots: u32,
    /// Submission time, ms since the epoch.
    pub start_ms: i64,
    /// End time, ms since the epoch.
    pub end_ms: Option<i64>,
    /// Restarts so far.
    pub restarts: u32,
}

/// `GET /v1/jobs/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobDetails {
    /// Job id.
    pub id: String,
    /// The job's name.
    pub name: String,
    /// Lifecycle state.
    pub state: JobState,
    /// Owner.
    pub tenant: String,
    /// Component id.
    pub component: String,
    /// The request it was submitted with.
    pub request: SubmitJob,
    /// Slots it holds (or waits for).
    pub slots: u32,
    /// Submission time, ms since the epoch.
    pub start_ms: i64,
    /// End time, ms since the epoch.
    pub end_ms: Option<i64>,
    /// Every state it went through, with the time it entered it.
    pub timestamps: Vec<StateEntry>,
    /// Restarts so far.
    pub restarts: u32,
    /// Why it failed, if it did.
    pub failure: Option<String>,
    /// The plan, with the parallelism each operator runs at.
    pub plan: PlanSummary,
    /// Per operator: records, rates, watermark.
    pub operators: Vec<OperatorStatus>,
    /// The latest completed checkpoint.
    pub last_checkpoint: Option<CheckpointEntry>,
    /// The savepoint it stopped with.
    pub savepoint: Option<String>,
    /// Time its guests have spent running code, over all attempts, in ms.
    pub guest_cpu_ms: u64,
    /// Linear memory its guest instances hold now, in bytes.
    pub guest_memory_bytes: u64,
}

/// A state and when the job entered it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StateEntry {
    /// The state.
    pub state: JobState,
    /// ms since the epoch.
    pub at_ms: i64,
}

/// One operator's progress.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct OperatorStatus {
    /// Operator uid.
    pub uid: String,
    /// Subtasks.
    pub parallelism: u32,
    /// Records taken in (a source: produced) in the current attempt.
    pub records_in: u64,
    /// Records sent on in the current attempt.
    pub records_out: u64,
    /// Records in per second, over the last sampling interval.
    pub records_in_per_second: f64,
    /// Records out per second, over the last sampling interval.
    pub records_out_per_second: f64,
    /// The smallest input watermark over its subtasks (ms), once every subtask has one.
    pub watermark: Option<i64>,
    /// Share of the last interval its subtasks spent blocked on full downstream channels
    /// (0: never, 1: always); operators chained together share it.
    pub backpressure: f64,
    /// Time its subtasks have spent blocked in the current attempt, summed, in ms.
    pub blocked_ms: u64,
}

/// `GET /v1/jobs/{id}/exceptions`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ExceptionEntry {
    /// ms since the epoch.
    pub at_ms: i64,
    /// The attempt that failed (0: the first run).
    pub attempt: u32,
    /// What failed, naming the task and operator.
    pub message: String,
    /// Whether the job restarted after it.
    pub restarted: bool,
}

/// One completed checkpoint or savepoint.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CheckpointEntry {
    /// Id.
    pub id: u64,
    /// A savepoint.
    pub savepoint: bool,
    /// Where it is.
    pub location: String,
    /// From trigger to completion.
    pub duration_ms: u64,
    /// State it references.
    pub state_bytes: u64,
    /// Completion time, ms since the epoch.
    pub completed_ms: i64,
}

/// `GET /v1/jobs/{id}/checkpoints`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct CheckpointStats {
    /// Completed checkpoints (savepoints not counted).
    pub completed: u64,
    /// Failed or expired ones.
    pub failed: u64,
    /// The latest completed one.
    pub latest: Option<CheckpointEntry>,
    /// The latest savepoint.
    pub latest_savepoint: Option<CheckpointEntry>,
    /// The most recent completed checkpoints and savepoints, newest first.
    pub history: Vec<CheckpointEntry>,
}

/// Status of a savepoint trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TriggerStatus {
    /// Not complete yet.
    InProgress,
    /// Done: see `location`.
    Completed,
    /// Failed: see `failure`.
    Failed,
}

/// `GET /v1/jobs/{id}/savepoints/{trigger}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SavepointStatus {
    /// Trigger id.
    pub id: String,
    /// Progress.
    pub status: TriggerStatus,
    /// Where the savepoint is (completed).
    pub location: Option<String>,
    /// Why it failed.
    pub failure: Option<String>,
    /// Whether the job stops with it.
    pub stop: bool,
}

#[cfg(test)]
mod tests {
    use super::JobState::*;
    use super::Transition as T;
    use super::*;

    #[test]
    fn the_lifecycle() {
        let path = [
            (T::Schedule, Scheduled),
            (T::TasksRunning, Running),
            (T::TaskFailed, Restarting),
            (T::TasksRunning, Running),
            (T::Stop, Finishing),
            (T::TasksRunning, Finishing),
            (T::Finished, Finished),
        ];
        let mut s = Created;
        for (t, to) in path {
            s = s.next(t).unwrap_or_else(|| panic!("{s:?} --{t:?}-->"));
            assert_eq!(s, to);
        }
    }

    #[test]
    fn ended_jobs_stay_ended_and_nonsense_is_refused() {
        for end in [Finished, Canceled, Failed] {
            for t in [T::Schedule, T::TasksRunning, T::Cancel, T::Stop, T::Failed] {
                assert_eq!(end.next(t), None, "{end:?} {t:?}");
            }
        }
        assert_eq!(Created.next(T::TasksRunning), None);
        assert_eq!(Created.next(T::Stop), None);
        assert_eq!(Cancelling.next(T::Stop), None);
        assert_eq!(Cancelling.next(T::Cancel), None);
        assert_eq!(Running.next(T::Cancel), Some(Cancelling));
        assert_eq!(Cancelling.next(T::Canceled), Some(Canceled));
    }

    #[test]
    fn names_are_capitals() {
        for s in JobState::ALL {
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.name())
            );
        }
    }
}
