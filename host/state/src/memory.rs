//! The in-memory backend: hash maps per key group and state.

use std::collections::BTreeMap;

use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashMap, HashTable};
use smallvec::SmallVec;
use weir_core::{KeyGroupRange, StateDescriptor};

use crate::timers::Timers;
use crate::{
    KeyedStateBackend, SnapshotWriter, StateIndex, StateResult, StateSize, TimeDomain, Timer,
    ValueHint,
};

/// Keys and values up to 16 bytes live inline in the hash table: no pointer to chase on
/// lookup, no allocation on insert.
type Inline = SmallVec<[u8; 16]>;

/// The map states of one state index: key → (user key → value).
type MapStates = HashMap<Inline, BTreeMap<Vec<u8>, Vec<u8>>>;

/// State of one key group.
#[derive(Debug, Default, Clone)]
struct KeyGroupState {
    /// Per state index: (key, value) entries.
    values: Vec<HashTable<(Inline, Inline)>>,
    lists: Vec<HashMap<Inline, Vec<Vec<u8>>>>,
    maps: Vec<MapStates>,
}

/// Keeps all keyed state and timers on the heap.
#[derive(Debug)]
pub struct MemoryStateBackend {
    descriptors: Vec<StateDescriptor>,
    range: KeyGroupRange,
    groups: Vec<KeyGroupState>,
    timers: Timers,
    hasher: DefaultHashBuilder,
    /// Bumped whenever a value entry is inserted or removed (which may move others).
    generation: u64,
    /// What the entries hold, as [`crate::StateSize`] counts it (timers apart).
    bytes: u64,
}

/// What an entry costs besides its bytes: the table's slot, vectors' headers, the tree's
/// share for map entries. An estimate, so that many tiny entries are not free.
const ENTRY_OVERHEAD: u64 = 48;

fn entry_bytes(key: &[u8], value: &[u8]) -> u64 {
    (key.len() + value.len()) as u64 + ENTRY_OVERHEAD
}

impl MemoryStateBackend {
    /// An empty backend for `descriptors` over `range`.
    pub fn new(descriptors: Vec<StateDescriptor>, range: KeyGroupRange) -> Self {
        let n = descriptors.len();
        let group = KeyGroupState {
            values: vec![HashTable::new(); n],
            lists: vec![HashMap::new(); n],
            maps: vec![HashMap::new(); n],
        };
        MemoryStateBackend {
            descriptors,
            range,
            groups: vec![group; range.len()],
            timers: Timers::default(),
            hasher: DefaultHashBuilder::default(),
            generation: 0,
            bytes: 0,
        }
    }

    fn group(&self, key_group: u32) -> &KeyGroupState {
        assert!(
            self.range.contains(key_group),
            "key group {key_group} is not in this backend's range {:?}",
            self.range
        );
        &self.groups[(key_group - self.range.start) as usize]
    }

    fn group_mut(&mut self, key_group: u32) -> &mut KeyGroupState {
        assert!(
            self.range.contains(key_group),
            "key group {key_group} is not in this backend's range {:?}",
            self.range
        );
        &mut self.groups[(key_group - self.range.start) as usize]
    }
}

impl KeyedStateBackend for MemoryStateBackend {
    fn descriptors(&self) -> &[StateDescriptor] {
        &self.descriptors
    }

    fn key_groups(&self) -> KeyGroupRange {
        self.range
    }

    fn with_value(
        &self,
        state: StateIndex,
        key_group: u32,
        key: &[u8],
        f: &mut dyn FnMut(Option<&[u8]>),
    ) -> StateResult<()> {
        self.with_value_hinted(state, key_group, key, f)?;
        Ok(())
    }

    fn with_value_hinted(
        &self,
        state: StateIndex,
        key_group: u32,
        key: &[u8],
        f: &mut dyn FnMut(Option<&[u8]>),
    ) -> StateResult<Option<ValueHint>> {
        let table = &self.group(key_group).values[state as usize];
        let hash = self.hasher.hash_one(key);
        match table.find_bucket_index(hash, |(k, _)| k.as_slice() == key) {
            Some(position) => {
                let (_, v) = table.get_bucket(position).expect("bucket just found");
                f(Some(v.as_slice()));
                Ok(Some(ValueHint {
                    generation: self.generation,
                    position,
                }))
            }
            None => {
                f(None);
                Ok(None)
            }
        }
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
        let generation = self.generation;
        let hasher = self.hasher.clone();
        let table = &mut self.group_mut(key_group).values[state as usize];
        let replace = |v: &mut Inline| -> u64 {
            let old = v.len() as u64;
            v.clear();
            v.extend_from_slice(value);
            old
        };
        if let Some(h) = hint.filter(|h| h.generation == generation) {
            if let Some((k, v)) = table.get_bucket_mut(h.position) {
                if k.as_slice() == key {
                    let old = replace(v);
                    self.bytes = self.bytes - old + value.len() as u64;
                    return Ok(());
                }
            }
        }
        let hash = hasher.hash_one(key);
        if let Some((_, v)) = table.find_mut(hash, |(k, _)| k.as_slice() == key) {
            let old = replace(v);
            self.bytes = self.bytes - old + value.len() as u64;
            return Ok(());
        }
        table.insert_unique(
            hash,
            (Inline::from_slice(key), Inline::from_slice(value)),
            |(k, _)| hasher.hash_one(k.as_slice()),
        );
        self.bytes += entry_bytes(key, value);
        self.generation += 1;
        Ok(())
    }

    fn clear_value(&mut self, state: StateIndex, key_group: u32, key: &[u8]) -> StateResult<()> {
        let hash = self.hasher.hash_one(key);
        let table = &mut self.group_mut(key_group).values[state as usize];
        if let Ok(entry) = table.find_entry(hash, |(k, _)| k.as_slice() == key) {
            let ((k, v), _) = entry.remove();
            self.bytes -= entry_bytes(&k, &v);
            self.generation += 1;
        }
        Ok(())
    }

    fn list_get(&self, state: StateIndex, key_group: u32, key: &[u8]) -> StateResult<Vec<Vec<u8>>> {
        Ok(self.group(key_group).lists[state as usize]
            .get(key)
            .cloned()
            .unwrap_or_default())
    }

    fn list_add(
        &mut self,
        state: StateIndex,
        key_group: u32,
        key: &[u8],
        value: &[u8],
    ) -> StateResult<()> {
        let lists = &mut self.group_mut(key_group).lists[state as usize];
        let added = match lists.get_mut(key) {
            Some(items) => {
                items.push(value.to_vec());
                entry_bytes(&[], value)
            }
            None => {
                lists.insert(Inline::from_slice(key), vec![value.to_vec()]);
                entry_bytes(key, &[]) + entry_bytes(&[], value)
            }
        };
        self.bytes += added;
        Ok(())
    }

    fn list_clear(&mut self, state: StateIndex, key_group: u32, key: &[u8]) -> StateResult<()> {
        if let Some(items) = self.group_mut(key_group).lists[state as usize].remove(key) {
            let held: u64 = items.iter().map(|v| entry_bytes(&[], v)).sum();
            self.bytes -= entry_bytes(key, &[]) + held;
        }
        Ok(())
    }

    fn map_get(
        &self,
        state: StateIndex,
        key_group: u32,
        key: &[u8],
        user_key: &[u8],
    ) -> StateResult<Option<Vec<u8>>> {
        Ok(self.group(key_group).maps[state as usize]
            .get(key)
            .and_then(|m| m.get(user_key))
            .cloned())
    }

    fn map_put(
        &mut self,
        state: StateIndex,
        key_group: u32,
        key: &[u8],
        user_key: &[u8],
        value: &[u8],
    ) -> StateResult<()> {
        let maps = &mut self.group_mut(key_group).maps[state as usize];
        let mut added = 0;
        let m = match maps.get_mut(key) {
            Some(m) => m,
            None => {
                added += entry_bytes(key, &[]);
                maps.entry(Inline::from_slice(key)).or_default()
            }
        };
        match m.insert(user_key.to_vec(), value.to_vec()) {
            Some(old) => {
                added = added
                    .wrapping_add(value.len() as u64)
                    .wrapping_sub(old.len() as u64)
            }
            None => added += entry_bytes(user_key, value),
        }
        // (`added` may wrap for a smaller value: the sum comes out right.)
        self.bytes = self.bytes.wrapping_add(added);
        Ok(())
    }

    fn map_remove(
        &mut self,
        state: StateIndex,
        key_group: u32,
        key: &[u8],
        user_key: &[u8],
    ) -> StateResult<()> {
        let maps = &mut self.group_mut(key_group).maps[state as usize];
        let mut freed = 0;
        if let Some(m) = maps.get_mut(key) {
            if let Some(old) = m.remove(user_key) {
                freed += entry_bytes(user_key, &old);
            }
            if m.is_empty() {
                maps.remove(key);
                freed += entry_bytes(key, &[]);
            }
        }
        self.bytes -= freed;
        Ok(())
    }

    fn map_entries(
        &self,
        state: StateIndex,
        key_group: u32,
        key: &[u8],
    ) -> StateResult<Vec<(Vec<u8>, Vec<u8>)>> {
        Ok(self.group(key_group).maps[state as usize]
            .get(key)
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default())
    }

    fn map_clear(&mut self, state: StateIndex, key_group: u32, key: &[u8]) -> StateResult<()> {
        if let Some(m) = self.group_mut(key_group).maps[state as usize].remove(key) {
            let held: u64 = m.iter().map(|(uk, v)| entry_bytes(uk, v)).sum();
            self.bytes -= entry_bytes(key, &[]) + held;
        }
        Ok(())
    }

    fn register_timer(&mut self, domain: TimeDomain, key_group: u32, key: &[u8], timestamp: i64) {
        self.timers.register(domain, key_group, key, timestamp);
    }

    fn delete_timer(&mut self, domain: TimeDomain, key_group: u32, key: &[u8], timestamp: i64) {
        self.timers.delete(domain, key_group, key, timestamp);
    }

    fn pop_due_timers(&mut self, domain: TimeDomain, upto: i64, out: &mut Vec<Timer>) {
        self.timers.pop_due(domain, upto, out);
    }

    fn next_timer(&self, domain: TimeDomain) -> Option<i64> {
        self.timers.next(domain)
    }

    fn size(&self) -> StateSize {
        let bytes = self.bytes + self.timers.bytes();
        StateSize {
            total: bytes,
            memory: bytes,
        }
    }

    fn export(&self, w: &mut SnapshotWriter) -> StateResult<()> {
        // Timers are ordered by time: bucket them by key group once.
        let timers = self.timers.by_key_group(self.range);
        for (i, g) in self.groups.iter().enumerate() {
            let empty = timers[i].is_empty()
                && g.values.iter().all(|t| t.is_empty())
                && g.lists.iter().all(|m| m.is_empty())
                && g.maps.iter().all(|m| m.is_empty());
            if empty {
                continue;
            }
            w.begin_group(self.range.start + i as u32);
            for (s, table) in g.values.iter().enumerate() {
                for (k, v) in table {
                    w.value(s as u32, k, v);
                }
            }
            for (s, lists) in g.lists.iter().enumerate() {
                for (k, items) in lists {
                    w.list(s as u32, k, items);
                }
            }
            for (s, maps) in g.maps.iter().enumerate() {
                for (k, m) in maps {
                    w.map(
                        s as u32,
                        k,
                        m.iter().map(|(uk, v)| (uk.as_slice(), v.as_slice())),
                    );
                }
            }
            for (domain, t) in &timers[i] {
                w.timer(*domain, t.timestamp, &t.key);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn size_follows_every_write_and_returns_to_zero() {
        let mut b = MemoryStateBackend::new(crate::test_descriptors(), KeyGroupRange::new(0, 4));
        let size = |b: &MemoryStateBackend| b.size().total;
        b.put_value(0, 1, b"k", &[0; 100]).unwrap();
        let one = size(&b);
        assert!(one >= 101, "{one}");
        // Overwriting changes the size by the difference, hinted or not.
        b.put_value(0, 1, b"k", &[0; 10]).unwrap();
        assert_eq!(size(&b), one - 90);
        let hint = b.with_value_hinted(0, 1, b"k", &mut |_| {}).unwrap();
        assert!(hint.is_some());
        b.put_value_hinted(hint, 0, 1, b"k", &[0; 100]).unwrap();
        assert_eq!(size(&b), one);
        b.list_add(1, 2, b"l", &[0; 1000]).unwrap();
        b.list_add(1, 2, b"l", &[0; 1000]).unwrap();
        b.map_put(2, 3, b"m", b"a", &[0; 500]).unwrap();
        b.map_put(2, 3, b"m", b"a", &[0; 50]).unwrap();
        b.map_put(2, 3, b"m", b"b", &[0; 5]).unwrap();
        b.register_timer(TimeDomain::EventTime, 1, b"k", 10);
        b.register_timer(TimeDomain::EventTime, 1, b"k", 10);
        assert!(size(&b) > one + 2000 + 55, "{}", size(&b));
        b.clear_value(0, 1, b"k").unwrap();
        b.list_clear(1, 2, b"l").unwrap();
        b.map_remove(2, 3, b"m", b"a").unwrap();
        b.map_clear(2, 3, b"m").unwrap();
        let mut due = Vec::new();
        b.pop_due_timers(TimeDomain::EventTime, 10, &mut due);
        assert_eq!(due.len(), 1);
        assert_eq!(b.size(), StateSize::default());
    }

    fn backend() -> MemoryStateBackend {
        MemoryStateBackend::new(crate::test_descriptors(), KeyGroupRange::new(4, 8))
    }

    #[test]
    fn state_is_scoped_by_key_group_and_key() {
        let mut b = backend();
        b.put_value(0, 4, b"k", b"1").unwrap();
        b.put_value(0, 5, b"k", b"2").unwrap();
        b.with_value(0, 4, b"k", &mut |v| assert_eq!(v, Some(&b"1"[..])))
            .unwrap();
        b.with_value(0, 5, b"k", &mut |v| assert_eq!(v, Some(&b"2"[..])))
            .unwrap();
        b.clear_value(0, 4, b"k").unwrap();
        b.with_value(0, 4, b"k", &mut |v| assert_eq!(v, None))
            .unwrap();
        b.list_add(1, 6, b"k", b"a").unwrap();
        b.list_add(1, 6, b"k", b"b").unwrap();
        assert_eq!(
            b.list_get(1, 6, b"k").unwrap(),
            vec![b"a".to_vec(), b"b".to_vec()]
        );
        b.map_put(2, 7, b"k", b"x", b"1").unwrap();
        b.map_put(2, 7, b"k", b"a", b"2").unwrap();
        assert_eq!(b.map_get(2, 7, b"k", b"x").unwrap(), Some(b"1".to_vec()));
        assert_eq!(b.map_entries(2, 7, b"k").unwrap()[0].0, b"a".to_vec());
        b.map_remove(2, 7, b"k", b"x").unwrap();
        b.map_remove(2, 7, b"k", b"a").unwrap();
        assert!(b.map_entries(2, 7, b"k").unwrap().is_empty());
    }

    #[test]
    fn timers_fire_in_order_once() {
        let mut b = backend();
        b.register_timer(TimeDomain::EventTime, 4, b"b", 10);
        b.register_timer(TimeDomain::EventTime, 4, b"a", 10);
        b.register_timer(TimeDomain::EventTime, 4, b"a", 10);
        b.register_timer(TimeDomain::EventTime, 5, b"a", 5);
        b.register_timer(TimeDomain::EventTime, 5, b"a", 20);
        b.register_timer(TimeDomain::ProcessingTime, 5, b"a", 1);
        b.delete_timer(TimeDomain::EventTime, 5, b"a", 20);
        let mut due = vec![];
        b.pop_due_timers(TimeDomain::EventTime, 15, &mut due);
        let got: Vec<_> = due.iter().map(|t| (t.timestamp, t.key.clone())).collect();
        assert_eq!(
            got,
            vec![(5, b"a".to_vec()), (10, b"a".to_vec()), (10, b"b".to_vec())]
        );
        assert_eq!(b.next_timer(TimeDomain::EventTime), None);
        assert_eq!(b.next_timer(TimeDomain::ProcessingTime), Some(1));
    }

    #[test]
    fn hints_skip_the_lookup_only_while_current() {
        let mut b = backend();
        b.put_value(0, 4, b"a", b"1").unwrap();
        let hint = b
            .with_value_hinted(0, 4, b"a", &mut |v| assert_eq!(v, Some(&b"1"[..])))
            .unwrap();
        assert!(hint.is_some());
        b.put_value_hinted(hint, 0, 4, b"a", b"2").unwrap();
        b.with_value(0, 4, b"a", &mut |v| assert_eq!(v, Some(&b"2"[..])))
            .unwrap();
        // A hint used for another key is not trusted.
        b.put_value_hinted(hint, 0, 4, b"b", b"3").unwrap();
        b.with_value(0, 4, b"a", &mut |v| assert_eq!(v, Some(&b"2"[..])))
            .unwrap();
        b.with_value(0, 4, b"b", &mut |v| assert_eq!(v, Some(&b"3"[..])))
            .unwrap();
        // Inserting many keys moves entries: the old hint is stale and ignored.
        for i in 0..1000u32 {
            b.put_value(0, 4, &i.to_le_bytes(), b"x").unwrap();
        }
        b.put_value_hinted(hint, 0, 4, b"a", b"4").unwrap();
        b.with_value(0, 4, b"a", &mut |v| assert_eq!(v, Some(&b"4"[..])))
            .unwrap();
        b.clear_value(0, 4, b"a").unwrap();
        b.with_value(0, 4, b"a", &mut |v| assert_eq!(v, None))
            .unwrap();
    }

    #[test]
    #[should_panic(expected = "not in this backend's range")]
    fn foreign_key_groups_are_a_host_bug() {
        backend().put_value(0, 9, b"k", b"v").unwrap();
    }
}
