//! What a chain returns besides its output: `batch-result.state-writes` and
//! `batch-result.timer-ops`, both entries back to back until the end of the frame.

use alloc::vec::Vec;

use crate::write::{put_i64, put_opt, put_u32};
use crate::{
    Entries, Entry, FrameError, Reader, TimeDomain, OP_DELETE_EVENT_TIME,
    OP_DELETE_PROCESSING_TIME, OP_REGISTER_EVENT_TIME, OP_REGISTER_PROCESSING_TIME,
};

/// One value-state write: `u32 key_index, u32 state_index, u32 len | NONE32, value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateWrite<'a> {
    /// Index in the call's key table.
    pub key_index: u32,
    /// Index of the state in the head node's state descriptors (all kinds counted).
    pub state_index: u32,
    /// New value, or `None` to clear.
    pub value: Option<&'a [u8]>,
}

impl<'a> Entry<'a> for StateWrite<'a> {
    const FRAME: &'static str = "state-writes";

    #[inline]
    fn read(r: &mut Reader<'a>) -> Result<Self, FrameError> {
        Ok(StateWrite {
            key_index: r.u32()?,
            state_index: r.u32()?,
            value: r.opt_bytes()?,
        })
    }

    #[inline]
    fn write(&self, out: &mut Vec<u8>) {
        put_u32(out, self.key_index);
        put_u32(out, self.state_index);
        put_opt(out, self.value);
    }
}

/// Reads a `state-writes` frame.
#[inline]
pub fn state_writes(frame: &[u8]) -> Entries<'_, StateWrite<'_>> {
    Entries::new(frame)
}

/// What a timer op asks for: the op byte of a `timer-ops` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum TimerOpKind {
    /// Register an event-time timer ([`OP_REGISTER_EVENT_TIME`]).
    RegisterEventTime = OP_REGISTER_EVENT_TIME,
    /// Delete an event-time timer ([`OP_DELETE_EVENT_TIME`]).
    DeleteEventTime = OP_DELETE_EVENT_TIME,
    /// Register a processing-time timer ([`OP_REGISTER_PROCESSING_TIME`]).
    RegisterProcessingTime = OP_REGISTER_PROCESSING_TIME,
    /// Delete a processing-time timer ([`OP_DELETE_PROCESSING_TIME`]).
    DeleteProcessingTime = OP_DELETE_PROCESSING_TIME,
}

impl TimerOpKind {
    /// Registering (or, with `delete`, deleting) a timer in `domain`.
    #[inline]
    pub fn new(domain: TimeDomain, delete: bool) -> Self {
        match (domain, delete) {
            (TimeDomain::EventTime, false) => TimerOpKind::RegisterEventTime,
            (TimeDomain::EventTime, true) => TimerOpKind::DeleteEventTime,
            (TimeDomain::ProcessingTime, false) => TimerOpKind::RegisterProcessingTime,
            (TimeDomain::ProcessingTime, true) => TimerOpKind::DeleteProcessingTime,
        }
    }

    /// The op of an op byte; `None` for any byte above 3.
    #[inline]
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            OP_REGISTER_EVENT_TIME => Some(TimerOpKind::RegisterEventTime),
            OP_DELETE_EVENT_TIME => Some(TimerOpKind::DeleteEventTime),
            OP_REGISTER_PROCESSING_TIME => Some(TimerOpKind::RegisterProcessingTime),
            OP_DELETE_PROCESSING_TIME => Some(TimerOpKind::DeleteProcessingTime),
            _ => None,
        }
    }

    /// The op byte.
    #[inline]
    pub fn byte(self) -> u8 {
        self as u8
    }

    /// The clock of the timer.
    #[inline]
    pub fn domain(self) -> TimeDomain {
        match self {
            TimerOpKind::RegisterEventTime | TimerOpKind::DeleteEventTime => TimeDomain::EventTime,
            TimerOpKind::RegisterProcessingTime | TimerOpKind::DeleteProcessingTime => {
                TimeDomain::ProcessingTime
            }
        }
    }

    /// Whether the op deletes the timer (rather than registers it).
    #[inline]
    pub fn is_delete(self) -> bool {
        matches!(
            self,
            TimerOpKind::DeleteEventTime | TimerOpKind::DeleteProcessingTime
        )
    }
}

/// One timer op: `u8 op, u32 key_index, i64 timestamp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerOp {
    /// What to do.
    pub kind: TimerOpKind,
    /// Index of the timer's key in the call's key table.
    pub key_index: u32,
    /// Timer timestamp.
    pub timestamp: i64,
}

impl Entry<'_> for TimerOp {
    const FRAME: &'static str = "timer-ops";

    #[inline]
    fn read(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        let at = r.position();
        let kind =
            TimerOpKind::from_byte(r.u8()?).ok_or_else(|| r.error_at(at, "unknown timer op"))?;
        Ok(TimerOp {
            kind,
            key_index: r.u32()?,
            timestamp: r.i64()?,
        })
    }

    #[inline]
    fn write(&self, out: &mut Vec<u8>) {
        out.push(self.kind.byte());
        put_u32(out, self.key_index);
        put_i64(out, self.timestamp);
    }
}

/// Reads a `timer-ops` frame.
#[inline]
pub fn timer_ops(frame: &[u8]) -> Entries<'_, TimerOp> {
    Entries::new(frame)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn op_bytes_round_trip_and_others_are_refused() {
        for b in 0..=255u8 {
            match TimerOpKind::from_byte(b) {
                Some(k) => {
                    assert_eq!(k.byte(), b);
                    assert_eq!(TimerOpKind::new(k.domain(), k.is_delete()), k);
                }
                None => assert!(b > 3),
            }
        }
        let e = timer_ops(&[9, 0, 0, 0, 0]).next().unwrap().unwrap_err();
        assert_eq!(
            (e.what, e.reason, e.offset),
            ("timer-ops", "unknown timer op", 0)
        );
        let e = state_writes(&[0, 0]).next().unwrap().unwrap_err();
        assert_eq!(e.reason, "truncated");
    }
}
