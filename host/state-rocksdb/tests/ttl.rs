//! State TTL on RocksDB: `weir-state`'s TTL wrapper over this backend (the same tests run on
//! the memory backend in `weir-state`'s `ttl.rs`), and the compaction filter that drops
//! expired values on its own.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use weir_core::{now_ms, KeyGroupRange, StateDescriptor, StateKind, StateTtl};
use weir_state::{
    restore_snapshot, take_snapshot, KeyedStateBackend, MemoryStateBackend, TtlBackend,
};
use weir_state_rocksdb::RocksDbStateBackend;

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

/// A value as the TTL wrapper stores it: `last_access_ms i64 LE | value`.
fn stamp(now: i64, value: &[u8]) -> Vec<u8> {
    let mut v = now.to_le_bytes().to_vec();
    v.extend_from_slice(value);
    v
}

fn backend(refresh: bool, dir: &std::path::Path) -> Box<dyn KeyedStateBackend> {
    let range = KeyGroupRange::new(0, 4);
    Box::new(RocksDbStateBackend::new(descriptors(refresh), range, dir).unwrap())
}

#[test]
fn values_expire_after_the_last_write() {
    let dir = tempfile::tempdir().unwrap();
    let inner = backend(false, dir.path());
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
    let dir = tempfile::tempdir().unwrap();
    let inner = backend(true, dir.path());
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
fn rocksdb_compaction_drops_expired_values() {
    let dir = tempfile::tempdir().unwrap();
    let range = KeyGroupRange::new(0, 4);
    let mut b = RocksDbStateBackend::new(descriptors(false), range, dir.path()).unwrap();
    // Written long ago (access time 1 ms after the epoch).
    b.put_value(0, 1, b"old", &stamp(1, b"x")).unwrap();
    b.put_value(0, 1, b"new", &stamp(now_ms(), b"y")).unwrap();
    b.list_add(1, 1, b"old", &stamp(1, b"a")).unwrap();
    b.map_put(2, 1, b"old", b"u", &stamp(1, b"1")).unwrap();
    b.put_value(3, 1, b"old", b"no ttl").unwrap();
    b.compact().unwrap();
    let raw = |b: &RocksDbStateBackend, s, k: &[u8]| {
        let mut got = false;
        b.with_value(s, 1, k, &mut |v| got = v.is_some()).unwrap();
        got
    };
    assert!(!raw(&b, 0, b"old"));
    assert!(raw(&b, 0, b"new"));
    assert!(b.list_get(1, 1, b"old").unwrap().is_empty());
    assert!(b.map_entries(2, 1, b"old").unwrap().is_empty());
    assert!(raw(&b, 3, b"old"));
}
