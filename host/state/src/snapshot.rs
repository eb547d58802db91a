//! The canonical state snapshot format (design note 0002, format 1).
//!
//! A snapshot holds one operator's keyed state and timers for one subtask, as a sequence of
//! key-group sections in ascending order. It does not depend on the backend that wrote it:
//! every backend exports into a [`SnapshotWriter`] and restores through the ordinary
//! [`KeyedStateBackend`] write methods, so a snapshot taken on one backend restores into any
//! other, and at any parallelism (sections outside the restoring backend's key groups are
//! skipped by length).
//!
//! ```text
//! magic "WEIRSTAT", u16 format (2; 1 is read too)
//! u32 states, states x { str name, u8 kind (bit 7: a TTL), u32 version }
//! sections: u8 1, u32 key_group, u64 body_len, body
//!   body entries: u8 tag
//!     1 value { u32 state, bytes key, bytes value }
//!     2 list  { u32 state, bytes key, u32 n, n x bytes }
//!     3 map   { u32 state, bytes key, u32 n, n x { bytes user_key, bytes value } }
//!     4 timer { u8 domain, i64 timestamp, bytes key }
//! trailer: u8 0, u64 sections
//! ```
//!
//! Integers are little-endian; `bytes` and `str` are a u32 length and the bytes. The whole
//! file is checked against the SHA-256 recorded in the checkpoint's metadata before it is
//! read; this format only has to reject what is malformed.

use weir_core::{KeyGroupRange, StateDescriptor, StateKind};

use crate::{KeyedStateBackend, TimeDomain};

const MAGIC: &[u8; 8] = b"WEIRSTAT";
/// The snapshot format this build writes (it reads 1 too).
pub const SNAPSHOT_FORMAT: u16 = 2;
/// Bit 7 of a state's kind byte: the state has a TTL and its values carry their last access
/// time (design note 0003). Format 2.
const TTL_FLAG: u8 = 0x80;

const TAG_END: u8 = 0;
const TAG_SECTION: u8 = 1;
const TAG_VALUE: u8 = 1;
const TAG_LIST: u8 = 2;
const TAG_MAP: u8 = 3;
const TAG_TIMER: u8 = 4;

/// A snapshot cannot be restored.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The bytes are not a snapshot of a format this build reads.
    #[error("not a weir state snapshot (bad magic or format {0})")]
    Format(u16),
    /// The bytes end early or hold an impossible value.
    #[error("malformed state snapshot at byte {offset}: {message}")]
    Malformed {
        /// Where reading failed.
        offset: usize,
        /// What was wrong.
        message: String,
    },
    /// A state in the snapshot does not fit the operator's declaration.
    #[error("state '{name}': {message}")]
    Incompatible {
        /// The state's name.
        name: String,
        /// What differs.
        message: String,
    },
    /// The backend restored into failed.
    #[error(transparent)]
    State(#[from] crate::StateError),
}

fn kind_tag(kind: StateKind) -> u8 {
    match kind {
        StateKind::Value => 0,
        StateKind::List => 1,
        StateKind::Map => 2,
    }
}

fn kind_name(kind: StateKind) -> &'static str {
    match kind {
        StateKind::Value => "value",
        StateKind::List => "list",
        StateKind::Map => "map",
    }
}

/// Writes a snapshot. Backends call [`SnapshotWriter::begin_group`] for each non-empty key
/// group in ascending order, then the entry methods.
pub struct SnapshotWriter {
    out: Vec<u8>,
    /// Offset of the current section's length field.
    open: Option<usize>,
    sections: u64,
    last_group: Option<u32>,
}

impl SnapshotWriter {
    /// Starts a snapshot of states declared as `descriptors`.
    pub fn new(descriptors: &[StateDescriptor]) -> Self {
        let mut out = Vec::with_capacity(4096);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&SNAPSHOT_FORMAT.to_le_bytes());
        out.extend_from_slice(&(descriptors.len() as u32).to_le_bytes());
        let mut w = SnapshotWriter {
            out,
            open: None,
            sections: 0,
            last_group: None,
        };
        for d in descriptors {
            w.bytes(d.name.as_bytes());
            w.out
                .push(kind_tag(d.kind) | if d.ttl.is_some() { TTL_FLAG } else { 0 });
            w.u32(d.version);
        }
        w
    }

    fn u32(&mut self, v: u32) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }

    fn bytes(&mut self, b: &[u8]) {
        self.u32(b.len() as u32);
        self.out.extend_from_slice(b);
    }

    /// Starts the section of `key_group` (closing the previous one).
    ///
    /// # Panics
    /// If key groups do not ascend: that is a bug in the backend.
    pub fn begin_group(&mut self, key_group: u32) {
        self.end_group();
        assert!(
            self.last_group.is_none_or(|g| g < key_group),
            "key group sections must ascend"
        );
        self.last_group = Some(key_group);
        self.out.push(TAG_SECTION);
        self.u32(key_group);
        self.open = Some(self.out.len());
        self.out.extend_from_slice(&0u64.to_le_bytes());
    }

    fn end_group(&mut self) {
        if let Some(at) = self.open.take() {
            let len = (self.out.len() - at - 8) as u64;
            self.out[at..at + 8].copy_from_slice(&len.to_le_bytes());
            self.sections += 1;
        }
    }

    /// One value state entry.
    pub fn value(&mut self, state: u32, key: &[u8], value: &[u8]) {
        self.out.push(TAG_VALUE);
        self.u32(state);
        self.bytes(key);
        self.bytes(value);
    }

    /// One list state.
    pub fn list(&mut self, state: u32, key: &[u8], items: &[Vec<u8>]) {
        self.out.push(TAG_LIST);
        self.u32(state);
        self.bytes(key);
        self.u32(items.len() as u32);
        for i in items {
            self.bytes(i);
        }
    }

    /// One map state.
    pub fn map<'a>(
        &mut self,
        state: u32,
        key: &[u8],
        entries: impl ExactSizeIterator<Item = (&'a [u8], &'a [u8])>,
    ) {
        self.out.push(TAG_MAP);
        self.u32(state);
        self.bytes(key);
        self.u32(entries.len() as u32);
        for (k, v) in entries {
            self.bytes(k);
            self.bytes(v);
        }
    }

    /// One timer.
    pub fn timer(&mut self, domain: TimeDomain, timestamp: i64, key: &[u8]) {
        self.out.push(TAG_TIMER);
        self.out.push(domain as u8);
        self.out.extend_from_slice(&timestamp.to_le_bytes());
        self.bytes(key);
    }

    /// The finished snapshot.
    pub fn finish(mut self) -> Vec<u8> {
        self.end_group();
        self.out.push(TAG_END);
        let n = self.sections;
        self.out.extend_from_slice(&n.to_le_bytes());
        self.out
    }
}

struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn fail(&self, message: impl Into<String>) -> SnapshotError {
        SnapshotError::Malformed {
            offset: self.at,
            message: message.into(),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], SnapshotError> {
        if self.data.len() - self.at < n {
            return Err(self.fail(format!("{n} bytes expected, the snapshot ends")));
        }
        let s = &self.data[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, SnapshotError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, SnapshotError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }

    fn u64(&mut self) -> Result<u64, SnapshotError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }

    fn bytes(&mut self) -> Result<&'a [u8], SnapshotError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

/// What a restore applied.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RestoreStats {
    /// Key-group sections read (others were skipped).
    pub sections: u64,
    /// Entries applied (values, lists, maps, timers).
    pub entries: u64,
}

/// A state as a snapshot's header declares it, and whether it had a TTL.
type Declared = (StateDescriptor, bool);

fn header(r: &mut Reader<'_>) -> Result<Vec<Declared>, SnapshotError> {
    if r.data.len() < 10 || &r.data[..8] != MAGIC {
        return Err(SnapshotError::Format(0));
    }
    r.at = 8;
    let format = u16::from_le_bytes([r.data[8], r.data[9]]);
    r.at = 10;
    if !(1..=SNAPSHOT_FORMAT).contains(&format) {
        return Err(SnapshotError::Format(format));
    }
    let n = r.u32()?;
    let mut states = Vec::new();
    for _ in 0..n {
        let name = std::str::from_utf8(r.bytes()?)
            .map_err(|_| r.fail("state name is not UTF-8"))?
            .to_string();
        let tag = r.u8()?;
        let kind = match tag & !TTL_FLAG {
            0 => StateKind::Value,
            1 => StateKind::List,
            2 => StateKind::Map,
            k => return Err(r.fail(format!("unknown state kind {k}"))),
        };
        let version = r.u32()?;
        states.push((
            StateDescriptor {
                name,
                kind,
                version,
                ttl: None,
            },
            tag & TTL_FLAG != 0,
        ));
    }
    Ok(states)
}

/// Applies the sections of `data` whose key groups `backend` holds.
///
/// States are matched by name: a state the operator no longer declares is skipped, one
/// whose kind or schema version changed is an error. The caller restores into a fresh
/// backend and discards it on error, so nothing is half-restored.
pub fn restore_snapshot(
    backend: &mut dyn KeyedStateBackend,
    data: &[u8],
) -> Result<RestoreStats, SnapshotError> {
    let mut r = Reader { data, at: 0 };
    let states = header(&mut r)?;
    let mut map: Vec<Option<u32>> = Vec::with_capacity(states.len());
    // Per state of the snapshot: its TTL in the restoring backend, to drop expired entries.
    let mut ttl: Vec<Option<u64>> = Vec::with_capacity(states.len());
    for (s, had_ttl) in &states {
        let target = backend.descriptors().iter().position(|d| d.name == s.name);
        if let Some(i) = target {
            let d = &backend.descriptors()[i];
            if d.kind != s.kind {
                return Err(SnapshotError::Incompatible {
                    name: s.name.clone(),
                    message: format!(
                        "the snapshot holds {} state, the operator declares {} state",
                        kind_name(s.kind),
                        kind_name(d.kind)
                    ),
                });
            }
            if d.version != s.version {
                return Err(SnapshotError::Incompatible {
                    name: s.name.clone(),
                    message: format!(
                        "schema version {} in the snapshot, {} declared; give the new schema \
                         another state name or keep the version",
                        s.version, d.version
                    ),
                });
            }
            if *had_ttl != d.ttl.is_some() {
                return Err(SnapshotError::Incompatible {
                    name: s.name.clone(),
                    message: format!(
                        "the snapshot's state {} a TTL, the operator's {}; switching a TTL on \
                         or off needs another state name",
                        if *had_ttl { "has" } else { "has no" },
                        if d.ttl.is_some() {
                            "has one"
                        } else {
                            "has none"
                        }
                    ),
                });
            }
        }
        ttl.push(target.and_then(|i| backend.descriptors()[i].ttl.map(|t| t.ttl_ms)));
        map.push(target.map(|i| i as u32));
    }
    let now = crate::ttl::now_ms();
    // A TTL value is `last_access i64 LE | value`: expired ones are not restored.
    let expired = |s: u32, v: &[u8]| -> bool {
        match ttl.get(s as usize).copied().flatten() {
            Some(ttl_ms) => crate::ttl::is_expired(v, ttl_ms, now),
            None => false,
        }
    };
    let range: KeyGroupRange = backend.key_groups();
    let mut stats = RestoreStats::default();
    let mut seen = 0u64;
    loop {
        match r.u8()? {
            TAG_END => break,
            TAG_SECTION => {}
            t => return Err(r.fail(format!("unknown section tag {t}"))),
        }
        seen += 1;
        let kg = r.u32()?;
        let len = r.u64()? as usize;
        let start = r.at;
        if len > data.len() - start {
            return Err(r.fail("section runs past the end"));
        }
        if !range.contains(kg) {
            r.at += len;
            continue;
        }
        stats.sections += 1;
        let end = start + len;
        let state_of = |r: &Reader<'_>, s: u32| -> Result<Option<u32>, SnapshotError> {
            map.get(s as usize)
                .copied()
                .ok_or_else(|| r.fail(format!("state index {s} is not declared")))
        };
        while r.at < end {
            stats.entries += 1;
            match r.u8()? {
                TAG_VALUE => {
                    let s = r.u32()?;
                    let (key, value) = (r.bytes()?, r.bytes()?);
                    let expired = expired(s, value);
                    if let (Some(s), false) = (state_of(&r, s)?, expired) {
                        backend.put_value(s, kg, key, value)?;
                    }
                }
                TAG_LIST => {
                    let index = r.u32()?;
                    let s = state_of(&r, index)?;
                    let key = r.bytes()?;
                    let n = r.u32()?;
                    for _ in 0..n {
                        let item = r.bytes()?;
                        if let (Some(s), false) = (s, expired(index, item)) {
                            backend.list_add(s, kg, key, item)?;
                        }
                    }
                }
                TAG_MAP => {
                    let index = r.u32()?;
                    let s = state_of(&r, index)?;
                    let key = r.bytes()?;
                    let n = r.u32()?;
                    for _ in 0..n {
                        let (uk, v) = (r.bytes()?, r.bytes()?);
                        if let (Some(s), false) = (s, expired(index, v)) {
                            backend.map_put(s, kg, key, uk, v)?;
                        }
                    }
                }
                TAG_TIMER => {
                    let domain = match r.u8()? {
                        0 => TimeDomain::EventTime,
                        1 => TimeDomain::ProcessingTime,
                        d => return Err(r.fail(format!("unknown time domain {d}"))),
                    };
                    let ts = i64::from_le_bytes(r.take(8)?.try_into().expect("8"));
                    let key = r.bytes()?;
                    backend.register_timer(domain, kg, key, ts);
                }
                t => return Err(r.fail(format!("unknown entry tag {t}"))),
            }
        }
        if r.at != end {
            return Err(r.fail("an entry runs past its section"));
        }
    }
    let count = r.u64()?;
    if count != seen {
        return Err(r.fail(format!("{seen} sections read, the trailer says {count}")));
    }
    if r.at != data.len() {
        return Err(r.fail("bytes after the trailer"));
    }
    Ok(stats)
}

/// Takes a canonical snapshot of everything `backend` holds.
pub fn take_snapshot(backend: &dyn KeyedStateBackend) -> crate::StateResult<Vec<u8>> {
    let mut w = SnapshotWriter::new(backend.descriptors());
    backend.export(&mut w)?;
    Ok(w.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryStateBackend;

    use crate::test_descriptors as descriptors;

    fn filled() -> MemoryStateBackend {
        let mut b = MemoryStateBackend::new(descriptors(), KeyGroupRange::new(0, 16));
        for kg in 0..16u32 {
            let key = format!("k{kg}");
            b.put_value(0, kg, key.as_bytes(), &kg.to_le_bytes())
                .unwrap();
            b.list_add(1, kg, key.as_bytes(), b"a").unwrap();
            b.list_add(1, kg, key.as_bytes(), b"b").unwrap();
            b.map_put(2, kg, key.as_bytes(), b"x", b"1").unwrap();
            b.register_timer(
                TimeDomain::EventTime,
                kg,
                key.as_bytes(),
                i64::from(kg) * 10,
            );
            b.register_timer(TimeDomain::ProcessingTime, kg, key.as_bytes(), -5);
        }
        b
    }

    fn value(b: &MemoryStateBackend, kg: u32) -> Option<Vec<u8>> {
        let mut got = None;
        b.with_value(0, kg, format!("k{kg}").as_bytes(), &mut |v| {
            got = v.map(<[u8]>::to_vec)
        })
        .unwrap();
        got
    }

    #[test]
    fn round_trip_and_split_by_key_group() {
        let snap = take_snapshot(&filled()).unwrap();
        // Restore into two halves, as when rescaling from 1 to 2 subtasks.
        for range in [KeyGroupRange::new(0, 8), KeyGroupRange::new(8, 16)] {
            let mut b = MemoryStateBackend::new(descriptors(), range);
            let stats = restore_snapshot(&mut b, &snap).unwrap();
            assert_eq!(stats.sections, 8);
            for kg in range.start..range.end {
                let key = format!("k{kg}");
                assert_eq!(value(&b, kg), Some(kg.to_le_bytes().to_vec()));
                assert_eq!(b.list_get(1, kg, key.as_bytes()).unwrap().len(), 2);
                assert_eq!(
                    b.map_get(2, kg, key.as_bytes(), b"x").unwrap(),
                    Some(b"1".to_vec())
                );
            }
            let mut due = Vec::new();
            b.pop_due_timers(TimeDomain::EventTime, i64::MAX, &mut due);
            assert_eq!(due.len(), 8);
            assert!(due.iter().all(|t| range.contains(t.key_group)));
        }
    }

    #[test]
    fn states_match_by_name_and_version() {
        let snap = take_snapshot(&filled()).unwrap();
        // Reordered and with one state dropped: restores what is still declared.
        let mut ds = descriptors();
        ds.swap(0, 2);
        ds.pop();
        let mut b = MemoryStateBackend::new(ds.clone(), KeyGroupRange::new(0, 16));
        restore_snapshot(&mut b, &snap).unwrap();
        assert_eq!(b.map_get(0, 3, b"k3", b"x").unwrap(), Some(b"1".to_vec()));
        // A changed schema version is refused, naming the state.
        ds[0].version = 2;
        let mut b = MemoryStateBackend::new(ds, KeyGroupRange::new(0, 16));
        let e = restore_snapshot(&mut b, &snap).unwrap_err().to_string();
        assert!(
            e.contains("state 'm'") && e.contains("schema version"),
            "{e}"
        );
    }

    #[test]
    fn truncated_or_damaged_snapshots_are_rejected() {
        let snap = take_snapshot(&filled()).unwrap();
        for cut in [0, 5, 12, snap.len() / 2, snap.len() - 1] {
            let mut b = MemoryStateBackend::new(descriptors(), KeyGroupRange::new(0, 16));
            assert!(
                restore_snapshot(&mut b, &snap[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let mut bad = snap.clone();
        bad[8] = 9;
        let mut b = MemoryStateBackend::new(descriptors(), KeyGroupRange::new(0, 16));
        assert!(matches!(
            restore_snapshot(&mut b, &bad),
            Err(SnapshotError::Format(_))
        ));
    }
}
