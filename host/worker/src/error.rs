//! Why a task or a job stopped, as typed causes, and whether a restart may help.

use std::time::Duration;

use weir_checkpoint::{CheckpointError, StorageError};
use weir_core::frame::FrameError;
use weir_runtime::GuestError;
use weir_state::{SnapshotError, StateError};

use crate::connectors::ConnectorError;

/// Why a task stopped.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// Guest code failed or trapped.
    #[error(transparent)]
    Guest(#[from] GuestError),
    /// A connector failed.
    #[error(transparent)]
    Connector(#[from] ConnectorError),
    /// The task's keyed state failed in its backend (I/O).
    #[error(transparent)]
    State(#[from] StateError),
    /// The guest broke the frame protocol.
    #[error("{0}")]
    Protocol(String),
    /// The job was cancelled (or another task failed first).
    #[error("cancelled")]
    Cancelled,
}

impl TaskError {
    pub(crate) fn frame(e: FrameError) -> Self {
        TaskError::Protocol(e.to_string())
    }

    /// Whether the job may succeed when restarted from its last checkpoint: not when it
    /// was cancelled, nor when its state is over a limit (it would be again).
    pub fn retryable(&self) -> bool {
        !matches!(
            self,
            TaskError::Cancelled | TaskError::Guest(GuestError::StateLimit { .. })
        )
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
    /// The host could not provide what the job needs (a thread, a local state database).
    #[error("{what}: {message}")]
    Resources {
        /// What was asked for.
        what: &'static str,
        /// Why it failed.
        message: String,
    },
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
    /// A checkpoint or savepoint cannot be restored.
    #[error("cannot restore: {0}")]
    Restore(RestoreError),
    /// Checkpointing failed more often than tolerated.
    #[error("checkpointing failed: {0}")]
    Checkpoint(CheckpointFailure),
}

// Not `#[from]`: that would make the cause the error's source as well as part of its
// message, and a report of the chain would say it twice.
impl From<RestoreError> for JobError {
    fn from(e: RestoreError) -> Self {
        JobError::Restore(e)
    }
}

impl From<CheckpointFailure> for JobError {
    fn from(e: CheckpointFailure) -> Self {
        JobError::Checkpoint(e)
    }
}

impl JobError {
    /// Whether restarting the job from its latest checkpoint may help: yes after I/O
    /// failures and guest faults in a task; no for a bad plan, a wrong configuration, a
    /// quota, a snapshot that does not fit the job, or a cancel.
    pub fn retryable(&self) -> bool {
        match self {
            JobError::Task { error, .. } => error.retryable(),
            JobError::Checkpoint(_) | JobError::Resources { .. } => true,
            JobError::Restore(e) => e.retryable(),
            JobError::Guest(_)
            | JobError::Connector(_)
            | JobError::Unsupported(_)
            | JobError::Cancelled => false,
        }
    }
}

/// Why a job cannot start from its checkpoint or savepoint.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The snapshot's files cannot be read, or are not what its metadata says.
    #[error(transparent)]
    Read(#[from] CheckpointError),
    /// Its files cannot be written where the task's state lives.
    #[error("{path}: {message}")]
    Local {
        /// The local path.
        path: String,
        /// Why.
        message: String,
    },
    /// An operator's state in the snapshot does not fit what the operator declares now.
    #[error("operator '{operator}': {error}")]
    State {
        /// The operator's uid.
        operator: String,
        /// What does not fit, or failed.
        error: SnapshotError,
        /// The state file, when its content is at fault.
        file: Option<String>,
    },
    /// The snapshot does not fit the job (operators, key groups, finished subtasks).
    #[error("{0}")]
    Mismatch(String),
    /// A source cannot go on from its recorded position.
    #[error("source '{operator}': {message}")]
    Source {
        /// The source's uid.
        operator: String,
        /// Why.
        message: String,
    },
}

impl RestoreError {
    /// Only failures of the storage or the local disk may pass.
    pub fn retryable(&self) -> bool {
        match self {
            RestoreError::Read(CheckpointError::Storage(e)) => {
                matches!(e, StorageError::Store { .. })
            }
            RestoreError::Local { .. } => true,
            RestoreError::State { error, .. } => matches!(error, SnapshotError::State(_)),
            _ => false,
        }
    }
}

/// Why checkpointing failed the job.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointFailure {
    /// A checkpoint expired, more in a row than tolerated.
    #[error("checkpoint {id} expired after {after:?} ({failures} failed in a row)")]
    Expired {
        /// Its id.
        id: u64,
        /// The timeout.
        after: Duration,
        /// Failed in a row.
        failures: u32,
    },
    /// A task could not take its part of a checkpoint.
    #[error("checkpoint {id} failed: {reason}")]
    Declined {
        /// Its id.
        id: u64,
        /// The task's reason.
        reason: String,
    },
    /// The savepoint to stop with expired.
    #[error("the savepoint to stop with ({id}) expired after {after:?}")]
    StopExpired {
        /// Its id.
        id: u64,
        /// The timeout.
        after: Duration,
    },
    /// A task could not take its part of the savepoint to stop with.
    #[error("the savepoint to stop with failed: {reason}")]
    StopDeclined {
        /// The task's reason.
        reason: String,
    },
    /// The snapshot's metadata could not be written.
    #[error(transparent)]
    Write(#[from] CheckpointError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_is_told_once() {
        use std::error::Error as _;
        let e = JobError::from(RestoreError::Mismatch("max parallelism changed".into()));
        assert_eq!(e.to_string(), "cannot restore: max parallelism changed");
        assert!(e.source().is_none());
    }

    #[test]
    fn only_failures_a_restart_can_cure_are_retried() {
        let task = |error| JobError::Task {
            task: "count#0".into(),
            error,
        };
        let trap = GuestError::Trap {
            operator: "count".into(),
            message: "boom".into(),
        };
        let state = StateError::new("write", "RocksDB: IO error: No space left on device");
        assert!(task(TaskError::Guest(trap)).retryable());
        assert!(task(TaskError::State(state.clone())).retryable());
        assert!(task(TaskError::Protocol("bad frame".into())).retryable());
        assert!(!task(TaskError::Cancelled).retryable());
        let limit = GuestError::StateLimit {
            operator: "count".into(),
            error: weir_state::StateLimitExceeded::Value { size: 9, limit: 8 },
        };
        assert!(!task(TaskError::Guest(limit)).retryable());
        let declined = CheckpointFailure::Declined {
            id: 3,
            reason: "disk full".into(),
        };
        assert!(JobError::Checkpoint(declined).retryable());
        assert!(!JobError::Unsupported("two inputs".into()).retryable());
        assert!(!JobError::Cancelled.retryable());
        assert!(!JobError::Guest(GuestError::Plan("bad args".into())).retryable());
        // A snapshot that does not fit the job fails it; its storage failing may pass.
        let mismatch = RestoreError::Mismatch("max parallelism changed".into());
        assert!(!JobError::Restore(mismatch).retryable());
        let missing = CheckpointError::Storage(StorageError::NotFound("file:///c/x".into()));
        assert!(!JobError::Restore(RestoreError::Read(missing)).retryable());
        let incompatible = RestoreError::State {
            operator: "count".into(),
            error: SnapshotError::Incompatible {
                name: "n".into(),
                message: "kind changed".into(),
            },
            file: None,
        };
        assert!(!JobError::Restore(incompatible).retryable());
        let failed_read = RestoreError::State {
            operator: "count".into(),
            error: SnapshotError::State(state),
            file: None,
        };
        assert!(JobError::Restore(failed_read).retryable());
        let local = RestoreError::Local {
            path: "/tmp/x".into(),
            message: "No space left on device".into(),
        };
        assert!(JobError::Restore(local).retryable());
    }
}
