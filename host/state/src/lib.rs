//! Keyed state and timers of weir tasks.
//!
//! The host owns all state of a job: guests read and write it through the WIT contract, so
//! it survives a new version of the code. A [`KeyedStateBackend`] holds the state of one
//! operator in one subtask — every declared [`StateDescriptor`] for every key in the
//! subtask's [`KeyGroupRange`] — together with its timers. State is addressed by
//! `(state index, key group, key)`, so snapshots, restores and rescaling can work a key group
//! at a time.
//!
//! This crate holds the trait, the memory backend ([`MemoryStateBackend`]), the TTL wrapper
//! ([`TtlBackend`]) and the canonical [`snapshot`] format, and links no storage engine. The
//! RocksDB backend is the `weir-state-rocksdb` crate: it builds on [`Timers`] and
//! [`ttl::is_expired`], and its own checkpoints reach the worker through
//! [`KeyedStateBackend::native_snapshots`].
//!
//! ```
//! use weir_core::{KeyGroupRange, StateDescriptor, StateKind};
//! use weir_state::{KeyedStateBackend, MemoryStateBackend, TimeDomain};
//!
//! let states = vec![StateDescriptor { name: "count".into(), kind: StateKind::Value, version: 1, ttl: None }];
//! let mut backend = MemoryStateBackend::new(states, KeyGroupRange::new(0, 128));
//! backend.put_value(0, 7, b"alice", b"3")?;
//! backend.with_value(0, 7, b"alice", &mut |v| assert_eq!(v, Some(&b"3"[..])))?;
//! backend.register_timer(TimeDomain::EventTime, 7, b"alice", 1_000);
//! let mut due = Vec::new();
//! backend.pop_due_timers(TimeDomain::EventTime, 1_000, &mut due);
//! assert_eq!(due[0].timestamp, 1_000);
//! # Ok::<(), weir_state::StateError>(())
//! ```
#![deny(missing_docs)]

mod budget;
mod memory;
pub mod snapshot;
mod timers;
pub mod ttl;

pub use budget::{Measure, StateAccount, StateLimitExceeded, StateMeter};
pub use memory::MemoryStateBackend;
pub use snapshot::{restore_snapshot, take_snapshot, RestoreStats, SnapshotError, SnapshotWriter};
pub use timers::Timers;
pub use ttl::TtlBackend;
use weir_core::{KeyGroupRange, StateDescriptor};

/// Index of a state in its operator's declared descriptors.
pub type StateIndex = u32;

/// Which clock a timer follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TimeDomain {
    /// Fires when the watermark reaches the timestamp.
    EventTime,
    /// Fires when the host's wall clock reaches the timestamp.
    ProcessingTime,
}

/// A timer that is due.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timer {
    /// When it fires.
    pub timestamp: i64,
    /// Key group of its key.
    pub key_group: u32,
    /// The key it fires for.
    pub key: Vec<u8>,
}

/// Where [`KeyedStateBackend::with_value_hinted`] found a value, so that writing it back
/// needs no second lookup. Valid only while the backend's generation is unchanged (no key
/// inserted or removed since); a stale hint is ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValueHint {
    /// The backend's generation when the hint was made.
    pub generation: u64,
    /// Backend-specific position of the entry.
    pub position: usize,
}

/// A state operation failed in the storage under the backend (a RocksDB read or write, a
/// full disk). The task fails with it — the guest whose host call failed sees a trap with
/// this message — and the job restarts from its last checkpoint. After an error, what the
/// backend holds is unspecified: it is not used again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("state {op} failed: {message}")]
pub struct StateError {
    /// What was being done (`read`, `write`, `snapshot`).
    pub op: &'static str,
    /// What the storage said.
    pub message: String,
}

impl StateError {
    /// A failed `op`.
    pub fn new(op: &'static str, message: impl std::fmt::Display) -> Self {
        StateError {
            op,
            message: message.to_string(),
        }
    }
}

/// The result of a state operation.
pub type StateResult<T> = Result<T, StateError>;

/// Keyed state and timers of one operator in one subtask.
///
/// Every method takes the key group explicitly (the caller has computed it to route the
/// record), so a backend never hashes a key twice. Reads and writes may fail in the
/// storage under the backend ([`StateError`]); timers live in memory and cannot.
pub trait KeyedStateBackend: Send {
    /// The declared states, indexed by [`StateIndex`].
    fn descriptors(&self) -> &[StateDescriptor];
    /// The key groups this backend holds.
    fn key_groups(&self) -> KeyGroupRange;

    /// Calls `f` with the current value of a value state.
    fn with_value(
        &self,
        state: StateIndex,
        key_group: u32,
        key: &[u8],
        f: &mut dyn FnMut(Option<&[u8]>),
    ) -> StateResult<()>;
    /// Sets a value state.
    fn put_value(
        &mut self,
        state: StateIndex,
        key_group: u32,
        key: &[u8],
        value: &[u8],
    ) -> StateResult<()>;

    /// Like [`KeyedStateBackend::with_value`], returning a hint for the write-back.
    fn with_value_hinted(
        &self,
        state: StateIndex,
        key_group: u32,
        key: &[u8],
        f: &mut dyn FnMut(Option<&[u8]>),
    ) -> StateResult<Option<ValueHint>> {
        self.with_value(state, key_group, key, f)?;
        Ok(None)
    }

    /// Like [`KeyedStateBackend::put_value`], skipping the lookup when `hint` is current.
    fn put_value_hinted(
        &mut self,
        _hint: Option<ValueHint>,
        state: StateIndex,
        key_group: u32,
        key: &[u8],
        value: &[u8],
    ) -> StateResult<()> {
        self.put_value(state, key_group, key, value)
    }
    /// Clears a value state.
    fn clear_value(&mut self, state: StateIndex, key_group: u32, key: &[u8]) -> StateResult<()>;

    /// The elements of a list state.
    fn list_get(&self, state: StateIndex, key_group: u32, key: &[u8]) -> StateResult<Vec<Vec<u8>>>;
    /// Appends to a list state.
    fn list_add(
        &mut self,
        state: StateIndex,
        key_group: u32,
        key: &[u8],
        value: &[u8],
    ) -> StateResult<()>;
    /// Clears a list state.
    fn list_clear(&mut self, state: StateIndex, key_group: u32, key: &[u8]) -> StateResult<()>;

    /// One entry of a map state.
    fn map_get(
        &self,
        state: StateIndex,
        key_group: u32,
        key: &[u8],
        user_key: &[u8],
    ) -> StateResult<Option<Vec<u8>>>;
    /// Sets an entry of a map state.
    fn map_put(
        &mut self,
        state: StateIndex,
        key_group: u32,
        key: &[u8],
        user_key: &[u8],
        value: &[u8],
    ) -> StateResult<()>;
    /// Removes an entry of a map state.
    fn map_remove(
        &mut self,
        state: StateIndex,
        key_group: u32,
        key: &[u8],
        user_key: &[u8],
    ) -> StateResult<()>;
    /// All entries of a map state, ordered by user key bytes.
    fn map_entries(
        &self,
        state: StateIndex,
        key_group: u32,
        key: &[u8],
    ) -> StateResult<Vec<(Vec<u8>, Vec<u8>)>>;
    /// Clears a map state.
    fn map_clear(&mut self, state: StateIndex, key_group: u32, key: &[u8]) -> StateResult<()>;

    /// Registers a timer; registering the same (domain, key, timestamp) twice keeps one.
    fn register_timer(&mut self, domain: TimeDomain, key_group: u32, key: &[u8], timestamp: i64);
    /// Deletes a timer if it exists.
    fn delete_timer(&mut self, domain: TimeDomain, key_group: u32, key: &[u8], timestamp: i64);
    /// Moves every timer of `domain` with timestamp `<= upto` into `out`, ordered by
    /// (timestamp, key group, key).
    fn pop_due_timers(&mut self, domain: TimeDomain, upto: i64, out: &mut Vec<Timer>);
    /// The earliest timer of `domain`, if any.
    fn next_timer(&self, domain: TimeDomain) -> Option<i64>;

    /// What the state holds now (keys, values, timers and an estimate of their overhead).
    /// Cheap enough to ask after every write.
    fn size(&self) -> StateSize;

    /// Writes every entry and timer into `w`, one section per non-empty key group in
    /// ascending order (see [`snapshot`]).
    fn export(&self, w: &mut SnapshotWriter) -> StateResult<()>;

    /// The task finished applying a batch's results (a TTL wrapper applies the work its
    /// reads queued).
    fn end_batch(&mut self) -> StateResult<()> {
        Ok(())
    }

    /// A backend that checkpoints its own files as they are (incrementally), not through
    /// the canonical snapshot format.
    fn native_snapshots(&self) -> Option<&dyn NativeSnapshots> {
        None
    }
}

/// The capability of a backend whose own files can be checkpointed as they are: copied
/// at a point in time, immutable files uploaded only once.
pub trait NativeSnapshots {
    /// Identifies this backend instance (its file names are unique only within it).
    fn instance(&self) -> &str;
    /// A point-in-time copy of the backend's files, and its timers.
    fn native_checkpoint(&self) -> StateResult<NativeCheckpoint>;
}

/// A point-in-time copy of a backend's files, deleted when dropped.
pub struct NativeCheckpoint {
    /// The directory holding the files.
    pub path: std::path::PathBuf,
    /// What to delete when dropped.
    pub scratch: tempfile::TempDir,
    /// File names in `path`; `*.sst` files are immutable.
    pub files: Vec<String>,
    /// The timers (a canonical snapshot with only timer entries).
    pub timers: Vec<u8>,
}

/// How much a backend holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateSize {
    /// All of it, wherever it lives.
    pub total: u64,
    /// The part on the heap (all of it for the memory backend; RocksDB's write cache and
    /// memtables).
    pub memory: u64,
}

/// A value, a list and a map state (`v`, `l`, `m`), for the backends' tests.
#[cfg(test)]
pub(crate) fn test_descriptors() -> Vec<StateDescriptor> {
    let d = |name: &str, kind| StateDescriptor {
        name: name.into(),
        kind,
        version: 1,
        ttl: None,
    };
    vec![
        d("v", weir_core::StateKind::Value),
        d("l", weir_core::StateKind::List),
        d("m", weir_core::StateKind::Map),
    ]
}
