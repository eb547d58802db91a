//! How a running job is steered: commands in over a channel, events out over another.
//!
//! Whoever runs a job keeps a [`JobHandle`] and gives the job its [`JobLink`]. The job's
//! checkpoint coordinator takes the commands as they come; what was asked and not yet done
//! (a stop whose savepoint is being written, a stop asked for during a restart) is kept by
//! the job itself in [`Requests`], so it survives a restart of the job's tasks.

use crossbeam_channel::{Receiver, Sender, TryRecvError};

use crate::{JobEvent, StateLimits};

/// What a job can be asked to do while it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum JobCommand {
    /// Stop now, without a savepoint.
    Cancel,
    /// Take a savepoint into the job's savepoint directory and go on.
    Savepoint,
    /// Stop with a savepoint (without a savepoint directory: cancel).
    Stop {
        /// End the input first: the final watermark passes and event-time windows fire.
        drain: bool,
    },
}

/// The steering side of a job: cheap to clone and usable from any thread.
#[derive(Debug, Clone)]
pub struct JobHandle {
    commands: Sender<JobCommand>,
}

impl JobHandle {
    /// Asks the job to do `command`; `false` when the job has ended.
    pub fn send(&self, command: JobCommand) -> bool {
        self.commands.send(command).is_ok()
    }
}

/// The job's side of its steering: the commands it takes, where it reports what happens,
/// and what its keyed state is charged to.
pub struct JobLink {
    pub(crate) commands: Receiver<JobCommand>,
    pub(crate) events: Option<Sender<JobEvent>>,
    pub(crate) state_limits: StateLimits,
}

impl JobLink {
    /// A link and the handle that steers through it.
    pub fn new() -> (JobHandle, JobLink) {
        let (tx, rx) = crossbeam_channel::unbounded();
        (
            JobHandle { commands: tx },
            JobLink {
                commands: rx,
                events: None,
                state_limits: StateLimits::default(),
            },
        )
    }

    /// A job nobody steers: it runs until its input ends or it fails.
    pub fn unsteered() -> JobLink {
        JobLink {
            commands: crossbeam_channel::never(),
            events: None,
            state_limits: StateLimits::default(),
        }
    }

    /// Reports what happens (attempts, restarts, snapshots) to `events`.
    pub fn with_events(mut self, events: Sender<JobEvent>) -> Self {
        self.events = Some(events);
        self
    }

    /// Charges the job's keyed state to `limits`.
    pub fn with_state_limits(mut self, limits: StateLimits) -> Self {
        self.state_limits = limits;
        self
    }

    pub(crate) fn emit(&self, event: JobEvent) {
        if let Some(tx) = &self.events {
            let _ = tx.send(event);
        }
    }
}

/// What was asked of a job and is not done yet.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Requests {
    /// Cancel (wins over everything else).
    pub cancel: bool,
    /// Stop with a savepoint; `Some(drain)`. A second stop while one is under way changes
    /// nothing.
    pub stop: Option<bool>,
    /// A savepoint, and the job goes on.
    pub savepoint: bool,
}

impl Requests {
    /// Records one command.
    pub fn apply(&mut self, command: JobCommand) {
        match command {
            JobCommand::Cancel => self.cancel = true,
            JobCommand::Savepoint => self.savepoint = true,
            JobCommand::Stop { drain } => {
                self.stop.get_or_insert(drain);
            }
        }
    }

    /// Records every command waiting in `commands`. When every handle is gone, `commands`
    /// is replaced by a channel that never delivers (so that waiting on it does not spin).
    pub fn take_from(&mut self, commands: &mut Receiver<JobCommand>) {
        loop {
            match commands.try_recv() {
                Ok(c) => self.apply(c),
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Disconnected) => {
                    *commands = crossbeam_channel::never();
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_kept_until_done() {
        let (handle, link) = JobLink::new();
        let mut rx = link.commands.clone();
        let mut r = Requests::default();
        assert!(handle.send(JobCommand::Stop { drain: true }));
        assert!(handle.send(JobCommand::Stop { drain: false }));
        assert!(handle.send(JobCommand::Savepoint));
        r.take_from(&mut rx);
        assert_eq!(
            r,
            Requests {
                cancel: false,
                stop: Some(true),
                savepoint: true
            }
        );
        handle.send(JobCommand::Cancel);
        r.take_from(&mut rx);
        assert!(r.cancel);
    }

    #[test]
    fn a_link_nobody_holds_does_not_spin() {
        let (handle, link) = JobLink::new();
        let mut rx = link.commands.clone();
        drop(link);
        handle.send(JobCommand::Savepoint);
        drop(handle);
        let mut r = Requests::default();
        r.take_from(&mut rx);
        assert!(r.savepoint);
        // Now a channel that never delivers: a wait on it times out instead of failing.
        assert_eq!(
            rx.recv_timeout(std::time::Duration::from_millis(1)),
            Err(crossbeam_channel::RecvTimeoutError::Timeout)
        );
    }

    #[test]
    fn commands_round_trip_through_json() {
        for c in [
            JobCommand::Cancel,
            JobCommand::Savepoint,
            JobCommand::Stop { drain: true },
            JobCommand::Stop { drain: false },
        ] {
            let text = serde_json::to_string(&c).unwrap();
            assert_eq!(serde_json::from_str::<JobCommand>(&text).unwrap(), c);
        }
    }
}
