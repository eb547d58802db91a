//! The byte layouts of weir's frames: the `list<u8>` buffers that carry records, prefetched
//! value state, timers, state writes and timer ops across the Wasm boundary
//! (`wit/weir.wit`). This crate is the one place those layouts are written down; the host
//! (`weir_core::frame`) and the guest SDK (`weir`) both encode and decode through it, and
//! `wit/frames/` holds golden examples of every frame, described byte by byte in
//! `wit/frames/README.md`, for guests written in other languages.
//!
//! | frame | direction | entries | reader | writer |
//! |---|---|---|---|---|
//! | `process` | host → guest | key table, then `u32` count × [`ProcessRecord`] | [`process_frame`] | [`write_key`], [`write_value`], [`Entry::write`], [`write_keyed_frame`] |
//! | `on-timers` | host → guest | key table, then `u32` count × [`Timer`] | [`on_timers_frame`] | the same |
//! | `output` | guest → host, and between host tasks | [`OutputRecord`] to the end | [`output_records`] | [`Entry::write`], [`write_output_record`] |
//! | `state-writes` | guest → host | [`StateWrite`] to the end | [`state_writes`] | [`Entry::write`] |
//! | `timer-ops` | guest → host | [`TimerOp`] to the end | [`timer_ops`] | [`Entry::write`] |
//!
//! All integers are little-endian; a `u32` length of [`NONE32`] means "absent" and a
//! timestamp of [`NO_TS`] means "no timestamp". Readers borrow from the frame (no copy, no
//! allocation) and never panic: a frame that does not follow its layout is a [`FrameError`]
//! saying which frame, what and where. Writers append to a caller's `Vec<u8>`, so a caller
//! that reuses its buffers allocates nothing once they have grown.
//!
//! ```
//! use weir_frame::{output_records, Entry, OutputRecord};
//!
//! let mut frame = Vec::new();
//! OutputRecord { edge: 1, timestamp: Some(42), key: Some(b"k"), value: b"v" }.write(&mut frame);
//! OutputRecord { edge: 1, timestamp: None, key: None, value: b"" }.write(&mut frame);
//! let records: Vec<_> = output_records(&frame).collect::<Result<_, _>>()?;
//! assert_eq!(records[0].key, Some(&b"k"[..]));
//! assert_eq!(records[1].timestamp, None);
//! // A truncated frame is an error, not a panic.
//! let err = output_records(&frame[..5]).next().unwrap().unwrap_err();
//! assert_eq!(err.to_string(), "malformed output frame: truncated at byte 4");
//! # Ok::<(), weir_frame::FrameError>(())
//! ```
#![no_std]
#![deny(missing_docs)]

extern crate alloc;

mod entries;
mod keyed;
mod output;
mod read;
mod result;
mod write;

pub use entries::{Counted, Entries, Entry};
pub use keyed::{
    on_timers_frame, process_frame, write_key, write_keyed_frame, write_unkeyed_process_frame,
    write_value, KeyEntry, KeyedFrame, ProcessFrame, ProcessRecord, TimeDomain, Timer, TimersFrame,
    Values,
};
pub use output::{output_records, write_output_record, OutputRecord};
pub use read::{FrameError, Reader};
pub use result::{state_writes, timer_ops, StateWrite, TimerOp, TimerOpKind};
pub use write::{Bytes, WriteWith};

/// `u32` marker for "absent": no key, no value, state cleared, no key index.
pub const NONE32: u32 = u32::MAX;
/// Timestamp marker for "no timestamp".
pub const NO_TS: i64 = i64::MIN;

/// Timer-domain byte of an `on-timers` entry: event time.
pub const DOMAIN_EVENT_TIME: u8 = 0;
/// Timer-domain byte of an `on-timers` entry: processing time.
pub const DOMAIN_PROCESSING_TIME: u8 = 1;

/// Op byte of a `timer-ops` entry: register an event-time timer.
pub const OP_REGISTER_EVENT_TIME: u8 = 0;
/// Op byte of a `timer-ops` entry: delete an event-time timer.
pub const OP_DELETE_EVENT_TIME: u8 = 1;
/// Op byte of a `timer-ops` entry: register a processing-time timer.
pub const OP_REGISTER_PROCESSING_TIME: u8 = 2;
/// Op byte of a `timer-ops` entry: delete a processing-time timer.
pub const OP_DELETE_PROCESSING_TIME: u8 = 3;
