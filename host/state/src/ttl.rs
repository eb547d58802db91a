//! State time-to-live (design note 0003): a wrapper around any backend.
//!
//! Values of a state with a TTL are stored as `last_access_ms i64 LE | value` (each list
//! element and map value too). Reads never return an expired value; they queue its removal
//! (and, with `refresh_on_read`, a rewrite with the new access time), which runs before the
//! next write and at the end of each batch ([`KeyedStateBackend::end_batch`]): reads happen
//! under `&self`, while the task prefetches.
//!
//! [`is_expired`] reads that format. It is public for backends in other crates that drop
//! expired values by themselves (the compaction filter of `weir-state-rocksdb`).

use std::cell::RefCell;

use weir_core::{KeyGroupRange, StateDescriptor, StateTtl};

use crate::{
    KeyedStateBackend, SnapshotWriter, StateIndex, StateResult, TimeDomain, Timer, ValueHint,
};

pub(crate) use weir_core::now_ms;

/// Whether a stored TTL value (`last_access_ms i64 LE | value`) has expired at `now` (ms
/// since the epoch, [`weir_core::now_ms`]'s clock): `ttl_ms` or more after its last access.
/// A value too short to hold an access time counts as expired; a TTL past `i64::MAX` never
/// ends.
pub fn is_expired(stored: &[u8], ttl_ms: u64, now: i64) -> bool {
    match stored.get(..8) {
        Some(ts) => {
            let ts = i64::from_le_bytes(ts.try_into().expect("8"));
            now.saturating_sub(ts) >= i64::try_from(ttl_ms).unwrap_or(i64::MAX)
        }
        None => true,
    }
}

fn stamp(now: i64, value: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + value.len());
    v.extend_from_slice(&now.to_le_bytes());
    v.extend_from_slice(value);
    v
}

/// Work queued by reads.
enum Deferred {
    ClearValue(StateIndex, u32, Vec<u8>),
    PutValue(StateIndex, u32, Vec<u8>, Vec<u8>),
    /// Replace a list with these stored (stamped) items.
    SetList(StateIndex, u32, Vec<u8>, Vec<Vec<u8>>),
    RemoveEntry(StateIndex, u32, Vec<u8>, Vec<u8>),
    PutEntry(StateIndex, u32, Vec<u8>, Vec<u8>, Vec<u8>),
}

/// Enforces the TTLs of an operator's states on top of another backend.
pub struct TtlBackend {
    inner: Box<dyn KeyedStateBackend>,
    ttl: Vec<Option<StateTtl>>,
    clock: Box<dyn Fn() -> i64 + Send>,
    deferred: RefCell<Vec<Deferred>>,
}

impl TtlBackend {
    /// Wraps `inner`, whose descriptors say which states have a TTL.
    pub fn new(inner: Box<dyn KeyedStateBackend>) -> Self {
        Self::with_clock(inner, Box::new(now_ms))
    }

    /// Like [`TtlBackend::new`], with another processing-time clock (tests).
    pub fn with_clock(
        inner: Box<dyn KeyedStateBackend>,
        clock: Box<dyn Fn() -> i64 + Send>,
    ) -> Self {
        let ttl = inner.descriptors().iter().map(|d| d.ttl).collect();
        TtlBackend {
            inner,
            ttl,
            clock,
            deferred: RefCell::new(Vec::new()),
        }
    }

    /// The wrapped backend, holding values as stored (each behind its access time), expired
    /// ones included until a read or a compaction removes them.
    pub fn inner(&self) -> &dyn KeyedStateBackend {
        self.inner.as_ref()
    }

    fn ttl(&self, state: StateIndex) -> Option<StateTtl> {
        self.ttl.get(state as usize).copied().flatten()
    }

    fn defer(&self, d: Deferred) {
        self.deferred.borrow_mut().push(d);
    }

    fn apply_deferred(&mut self) -> StateResult<()> {
        let work = std::mem::take(self.deferred.get_mut());
        if work.is_empty() {
            return Ok(());
        }
        let now = (self.clock)();
        // A value read (and so refreshed) in this batch is live: a later read in the same
        // batch that judged it by its old access time must not remove it.
        let refreshed: std::collections::HashSet<(StateIndex, u32, &[u8], &[u8])> = work
            .iter()
            .filter_map(|d| match d {
                Deferred::PutValue(s, kg, k, _) => Some((*s, *kg, k.as_slice(), &[][..])),
                Deferred::PutEntry(s, kg, k, uk, _) => Some((*s, *kg, k.as_slice(), uk.as_slice())),
                _ => None,
            })
            .collect();
        let mut skip = Vec::with_capacity(work.len());
        for d in &work {
            skip.push(match d {
                Deferred::ClearValue(s, kg, k) => {
                    refreshed.contains(&(*s, *kg, k.as_slice(), &[][..]))
                }
                Deferred::RemoveEntry(s, kg, k, uk) => {
                    refreshed.contains(&(*s, *kg, k.as_slice(), uk.as_slice()))
                }
                _ => false,
            });
        }
        drop(refreshed);
        for (d, skip) in work.into_iter().zip(skip) {
            if skip {
                continue;
            }
            match d {
                Deferred::ClearValue(s, kg, k) => self.inner.clear_value(s, kg, &k)?,
                Deferred::PutValue(s, kg, k, v) => {
                    self.inner.put_value(s, kg, &k, &stamp(now, &v))?
                }
                Deferred::SetList(s, kg, k, items) => {
                    self.inner.list_clear(s, kg, &k)?;
                    for i in items {
                        self.inner.list_add(s, kg, &k, &i)?;
                    }
                }
                Deferred::RemoveEntry(s, kg, k, uk) => self.inner.map_remove(s, kg, &k, &uk)?,
                Deferred::PutEntry(s, kg, k, uk, v) => {
                    self.inner.map_put(s, kg, &k, &uk, &stamp(now, &v))?
                }
            }
        }
        Ok(())
    }
}

impl KeyedStateBackend for TtlBackend {
    fn descriptors(&self) -> &[StateDescriptor] {
        self.inner.descriptors()
    }

    fn key_groups(&self) -> KeyGroupRange {
        self.inner.key_groups()
    }

    fn with_value(
        &self,
        state: StateIndex,
        key_group: u32,
        key: &[u8],
        f: &mut dyn FnMut(Option<&[u8]>),
    ) -> StateResult<()> {
        let Some(ttl) = self.ttl(state) else {
            return self.inner.with_value(state, key_group, key, f);
        };
        let now = (self.clock)();
        self.inner
            .with_value(state, key_group, key, &mut |v| match v {
                None => f(None),
                Some(v) if is_expired(v, ttl.ttl_ms, now) => {
                    self.defer(Deferred::ClearValue(state, key_group, key.to_vec()));
                    f(None)
                }
                Some(v) => {
                    if ttl.refresh_on_read {
                        self.defer(Deferred::PutValue(
                            state,
                            key_group,
                            key.to_vec(),
                            v[8..].to_vec(),
                        ));
                    }
                    f(Some(&v[8..]))
                }
            })
    }

    fn with_value_hinted(
        &self,
        state: StateIndex,
        key_group: u32,
        key: &[u8],
        f: &mut dyn FnMut(Option<&[u8]>),
    ) -> StateResult<Option<ValueHint>> {
        if self.ttl(state).is_some() {
            self.with_value(state, key_group, key, f)?;
            return Ok(None);
        }
        self.inner.with_value_hinted(state, key_group, key, f)
    }

    fn put_value(
        &mut self,
        state: StateIndex,
        key_group: u32,
        key: &[u8],
        value: &[u8],
    ) -> StateResult<()> {
        self.put_value_hinted(None, state, key_group, key, value)
    }

    fn put_value_hinted(
        &mut self,
        hint: Option<ValueHint>,
        state: StateIndex,
        key_group: u32,
        key: &[u8],
        value: &[u8],
    ) -> StateResult<()> {
        self.apply_deferred()?;
        match self.ttl(state) {
            Some(_) => {
                let v = stamp((self.clock)(), value);
                self.inner.put_value(state, key_group, key, &v)
            }
            None => self
                .inner
                .put_value_hinted(hint, state, key_group, key, value),
        }
    }

    fn clear_value(&mut self, state: StateIndex, key_group: u32, key: &[u8]) -> StateResult<()> {
        self.apply_deferred()?;
        self.inner.clear_value(state, key_group, key)
    }

    fn list_get(&self, state: StateIndex, key_group: u32, key: &[u8]) -> StateResult<Vec<Vec<u8>>> {
        let Some(ttl) = self.ttl(state) else {
            return self.inner.list_get(state, key_group, key);
        };
        let now = (self.clock)();
        let stored = self.inner.list_get(state, key_group, key)?;
        let n = stored.len();
        let mut kept: Vec<Vec<u8>> = stored
            .into_iter()
            .filter(|v| !is_expired(v, ttl.ttl_ms, now))
            .collect();
        let live = kept.iter().map(|v| v[8..].to_vec()).collect();
        if kept.len() != n || (ttl.refresh_on_read && n > 0) {
            if ttl.refresh_on_read {
                for v in &mut kept {
                    v[..8].copy_from_slice(&now.to_le_bytes());
                }
            }
            // Without refresh-on-read the survivors keep their own access times.
            self.defer(Deferred::SetList(state, key_group, key.to_vec(), kept));
        }
        Ok(live)
    }

    fn list_add(
        &mut self,
        state: StateIndex,
        key_group: u32,
        key: &[u8],
        value: &[u8],
    ) -> StateResult<()> {
        self.apply_deferred()?;
        match self.ttl(state) {
            Some(_) => {
                let v = stamp((self.clock)(), value);
                self.inner.list_add(state, key_group, key, &v)
            }
            None => self.inner.list_add(state, key_group, key, value),
        }
    }

    fn list_clear(&mut self, state: StateIndex, key_group: u32, key: &[u8]) -> StateResult<()> {
        self.apply_deferred()?;
        self.inner.list_clear(state, key_group, key)
    }

    fn map_get(
        &self,
        state: StateIndex,
        key_group: u32,
        key: &[u8],
        user_key: &[u8],
    ) -> StateResult<Option<Vec<u8>>> {
        let Some(ttl) = self.ttl(state) else {
            return self.inner.map_get(state, key_group, key, user_key);
        };
        let Some(v) = self.inner.map_get(state, key_group, key, user_key)? else {
            return Ok(None);
        };
        if is_expired(&v, ttl.ttl_ms, (self.clock)()) {
            self.defer(Deferred::RemoveEntry(
                state,
                key_group,
                key.to_vec(),
                user_key.to_vec(),
            ));
            return Ok(None);
        }
        if ttl.refresh_on_read {
            self.defer(Deferred::PutEntry(
                state,
                key_group,
                key.to_vec(),
                user_key.to_vec(),
                v[8..].to_vec(),
            ));
        }
        Ok(Some(v[8..].to_vec()))
    }

    fn map_put(
        &mut self,
        state: StateIndex,
        key_group: u32,
        key: &[u8],
        user_key: &[u8],
        value: &[u8],
    ) -> StateResult<()> {
        self.apply_deferred()?;
        match self.ttl(state) {
            Some(_) => {
                let v = stamp((self.clock)(), value);
                self.inner.map_put(state, key_group, key, user_key, &v)
            }
            None => self.inner.map_put(state, key_group, key, user_key, value),
        }
    }

    fn map_remove(
        &mut self,
        state: StateIndex,
        key_group: u32,
        key: &[u8],
        user_key: &[u8],
    ) -> StateResult<()> {
        self.apply_deferred()?;
        self.inner.map_remove(state, key_group, key, user_key)
    }

    fn map_entries(
        &self,
        state: StateIndex,
        key_group: u32,
        key: &[u8],
    ) -> StateResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let Some(ttl) = self.ttl(state) else {
            return self.inner.map_entries(state, key_group, key);
        };
        let now = (self.clock)();
        let mut live = Vec::new();
        for (uk, v) in self.inner.map_entries(state, key_group, key)? {
            if is_expired(&v, ttl.ttl_ms, now) {
                self.defer(Deferred::RemoveEntry(state, key_group, key.to_vec(), uk));
                continue;
            }
            if ttl.refresh_on_read {
                self.defer(Deferred::PutEntry(
                    state,
                    key_group,
                    key.to_vec(),
                    uk.clone(),
                    v[8..].to_vec(),
                ));
            }
            live.push((uk, v[8..].to_vec()));
        }
        Ok(live)
    }

    fn map_clear(&mut self, state: StateIndex, key_group: u32, key: &[u8]) -> StateResult<()> {
        self.apply_deferred()?;
        self.inner.map_clear(state, key_group, key)
    }

    fn register_timer(&mut self, domain: TimeDomain, key_group: u32, key: &[u8], timestamp: i64) {
        self.inner.register_timer(domain, key_group, key, timestamp)
    }

    fn delete_timer(&mut self, domain: TimeDomain, key_group: u32, key: &[u8], timestamp: i64) {
        self.inner.delete_timer(domain, key_group, key, timestamp)
    }

    fn pop_due_timers(&mut self, domain: TimeDomain, upto: i64, out: &mut Vec<Timer>) {
        self.inner.pop_due_timers(domain, upto, out)
    }

    fn next_timer(&self, domain: TimeDomain) -> Option<i64> {
        self.inner.next_timer(domain)
    }

    fn export(&self, w: &mut SnapshotWriter) -> StateResult<()> {
        self.inner.export(w)
    }

    fn native_snapshots(&self) -> Option<&dyn crate::NativeSnapshots> {
        self.inner.native_snapshots()
    }

    fn size(&self) -> crate::StateSize {
        self.inner.size()
    }

    fn end_batch(&mut self) -> StateResult<()> {
        self.apply_deferred()?;
        self.inner.end_batch()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::sync::Arc;

    use weir_core::StateKind;

    use super::*;
    use crate::{restore_snapshot, take_snapshot, MemoryStateBackend};

    fn descriptors(refresh_on_read: bool) -> Vec<StateDescriptor> {
        let ttl = Some(StateTtl {
            ttl_ms: 100,
            refresh_on_read,
        });
        let d = |name: &str, kind, ttl| StateDescriptor {
            name: name.into(),
            kind,
            version: 1,
            ttl,
        };
        vec![
            d("v", StateKind::Value, ttl),
            d("l", StateKind::List, ttl),
            d("m", StateKind::Map, ttl),
            d("forever", StateKind::Value, None),
        ]
    }

    fn value(b: &dyn KeyedStateBackend, s: u32) -> Option<Vec<u8>> {
        let mut got = None;
        b.with_value(s, 1, b"k", &mut |v| got = v.map(<[u8]>::to_vec))
            .unwrap();
        got
    }

    /// The backend the tests wrap (the same tests run on RocksDB in `weir-state-rocksdb`'s
    /// `tests/ttl.rs`).
    fn backend(refresh: bool) -> Box<dyn KeyedStateBackend> {
        Box::new(MemoryStateBackend::new(
            descriptors(refresh),
            KeyGroupRange::new(0, 4),
        ))
    }

    #[test]
    fn values_expire_after_the_last_write() {
        let inner = backend(false);
        let now = Arc::new(AtomicI64::new(1_000));
        let clock = now.clone();
        let mut b = TtlBackend::with_clock(inner, Box::new(move || clock.load(Ordering::Relaxed)));
        b.put_value(0, 1, b"k", b"x").unwrap();
        b.list_add(1, 1, b"k", b"a").unwrap();
        b.map_put(2, 1, b"k", b"u", b"1").unwrap();
        b.put_value(3, 1, b"k", b"kept").unwrap();
        now.store(1_099, Ordering::Relaxed);
        assert_eq!(value(&b, 0), Some(b"x".to_vec()));
        assert_eq!(b.list_get(1, 1, b"k").unwrap(), vec![b"a".to_vec()]);
        b.list_add(1, 1, b"k", b"b").unwrap(); // written at 1,099
        now.store(1_100, Ordering::Relaxed);
        assert_eq!(value(&b, 0), None, "expired 100 ms after the write");
        assert_eq!(b.list_get(1, 1, b"k").unwrap(), vec![b"b".to_vec()]);
        assert_eq!(b.map_get(2, 1, b"k", b"u").unwrap(), None);
        assert!(b.map_entries(2, 1, b"k").unwrap().is_empty());
        assert_eq!(value(&b, 3), Some(b"kept".to_vec()), "no TTL, no expiry");
        b.end_batch().unwrap();
        // Expired values were removed, not only hidden.
        assert_eq!(b.inner().map_entries(2, 1, b"k").unwrap().len(), 0);
        let mut raw = None;
        b.inner()
            .with_value(0, 1, b"k", &mut |v| raw = v.map(<[u8]>::to_vec))
            .unwrap();
        assert_eq!(raw, None);
    }

    #[test]
    fn reads_refresh_when_asked_and_snapshots_keep_access_times() {
        let inner = backend(true);
        // Near the real clock: a restore drops what has expired by then.
        let t0 = now_ms();
        let now = Arc::new(AtomicI64::new(t0));
        let clock = now.clone();
        let mut b = TtlBackend::with_clock(inner, Box::new(move || clock.load(Ordering::Relaxed)));
        b.put_value(0, 1, b"k", b"x").unwrap();
        for t in [t0 + 90, t0 + 180, t0 + 270] {
            now.store(t, Ordering::Relaxed);
            assert_eq!(value(&b, 0), Some(b"x".to_vec()), "at {t}");
            b.end_batch().unwrap();
        }
        // The snapshot carries the access time (270): restored, it still expires at 370.
        let snap = take_snapshot(&b).unwrap();
        let mut copy = MemoryStateBackend::new(descriptors(true), KeyGroupRange::new(0, 4));
        restore_snapshot(&mut copy, &snap).unwrap();
        let clock = now.clone();
        let copy = TtlBackend::with_clock(
            Box::new(copy),
            Box::new(move || clock.load(Ordering::Relaxed)),
        );
        now.store(t0 + 369, Ordering::Relaxed);
        assert_eq!(value(&copy, 0), Some(b"x".to_vec()));
        now.store(t0 + 370, Ordering::Relaxed);
        assert_eq!(value(&copy, 0), None);
        // Switching the TTL off is refused, naming the state.
        let mut no_ttl = descriptors(true);
        no_ttl[0].ttl = None;
        let mut other = MemoryStateBackend::new(no_ttl, KeyGroupRange::new(0, 4));
        let e = restore_snapshot(&mut other, &snap).unwrap_err().to_string();
        assert!(e.contains("state 'v'") && e.contains("TTL"), "{e}");
    }

    #[test]
    fn expiring_one_list_item_does_not_extend_the_others_and_huge_ttls_never_expire() {
        let now = Arc::new(AtomicI64::new(0));
        let clock = now.clone();
        let inner = MemoryStateBackend::new(descriptors(false), KeyGroupRange::new(0, 4));
        let mut b = TtlBackend::with_clock(
            Box::new(inner),
            Box::new(move || clock.load(Ordering::Relaxed)),
        );
        b.list_add(1, 1, b"k", b"a").unwrap();
        now.store(50, Ordering::Relaxed);
        b.list_add(1, 1, b"k", b"b").unwrap();
        now.store(100, Ordering::Relaxed);
        assert_eq!(b.list_get(1, 1, b"k").unwrap(), vec![b"b".to_vec()]);
        b.end_batch().unwrap();
        now.store(150, Ordering::Relaxed);
        assert!(
            b.list_get(1, 1, b"k").unwrap().is_empty(),
            "b expires 100 ms after its write"
        );

        assert!(
            !is_expired(&stamp(0, b"x"), u64::MAX, now_ms()),
            "a TTL past i64 never ends"
        );
    }

    #[test]
    fn a_value_refreshed_earlier_in_a_batch_is_not_removed_by_a_later_read() {
        let now = Arc::new(AtomicI64::new(0));
        let clock = now.clone();
        let inner = MemoryStateBackend::new(descriptors(true), KeyGroupRange::new(0, 4));
        let mut b = TtlBackend::with_clock(
            Box::new(inner),
            Box::new(move || clock.load(Ordering::Relaxed)),
        );
        b.map_put(2, 1, b"k", b"u", b"1").unwrap();
        now.store(99, Ordering::Relaxed);
        assert_eq!(b.map_get(2, 1, b"k", b"u").unwrap(), Some(b"1".to_vec()));
        now.store(100, Ordering::Relaxed);
        // Judged by the old access time, it looks expired; the refresh above wins.
        assert!(b.map_entries(2, 1, b"k").unwrap().is_empty());
        b.end_batch().unwrap();
        now.store(150, Ordering::Relaxed);
        assert_eq!(b.map_get(2, 1, b"k", b"u").unwrap(), Some(b"1".to_vec()));
    }
}
