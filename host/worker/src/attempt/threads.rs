//! One thread per task; when one fails, the others are cancelled.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use weir_runtime::GuestError;

use crate::task::Task;
use crate::{JobError, TaskError};

type Handle = (String, JoinHandle<Result<(), TaskError>>);

/// Starts every task on its own thread, inside the caller's span (a cluster's job and
/// tenant cover the tasks' logs too).
pub(super) fn spawn(tasks: Vec<Task>, cancel: &Arc<AtomicBool>) -> Result<Vec<Handle>, JobError> {
    let mut handles = Vec::with_capacity(tasks.len());
    for t in tasks {
        let label = t.label.clone();
        let cancel = cancel.clone();
        let span = tracing::Span::current();
        let handle = std::thread::Builder::new()
            .name(format!("weir-task-{label}"))
            .spawn(move || {
                let _entered = span.enter();
                let r = t.run();
                if r.is_err() {
                    cancel.store(true, Ordering::Relaxed);
                }
                r
            })
            .map_err(|e| JobError::Resources {
                what: "cannot start a task thread",
                message: e.to_string(),
            })?;
        handles.push((label, handle));
    }
    Ok(handles)
}

/// How the tasks of an attempt ended.
pub(super) struct Joined {
    /// The first task that failed (not cancelled).
    pub failure: Option<JobError>,
    /// Some task was cancelled.
    pub cancelled: bool,
}

/// Waits for every task; a panic in one is an internal error that fails the attempt.
pub(super) fn join(handles: Vec<Handle>, cancel: &AtomicBool) -> Joined {
    let mut joined = Joined {
        failure: None,
        cancelled: false,
    };
    for (label, h) in handles {
        let outcome = h.join().unwrap_or_else(|panic| {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            cancel.store(true, Ordering::Relaxed);
            Err(TaskError::Protocol(format!(
                "internal error in the host: {msg}"
            )))
        });
        match outcome {
            Ok(()) => {}
            Err(TaskError::Cancelled | TaskError::Guest(GuestError::Interrupted)) => {
                joined.cancelled = true
            }
            Err(error) => {
                let shown = error.to_string();
                let shown = weir_runtime::one_line(&shown);
                tracing::info!(task = %label, error = %shown, "task failed");
                if joined.failure.is_none() {
                    joined.failure = Some(JobError::Task { task: label, error });
                }
            }
        }
    }
    joined
}
