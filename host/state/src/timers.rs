//! Timers held on the heap, shared by the backends.

use std::collections::BTreeSet;

use weir_core::KeyGroupRange;

use crate::{TimeDomain, Timer};

/// Event- and processing-time timers, ordered by (timestamp, key group, key).
///
/// Every backend keeps its timers on the heap (as Flink's "heap timers"), whatever holds its
/// state; a backend implements the timer methods of [`crate::KeyedStateBackend`] with one of
/// these. It is public for the backends in other crates (`weir-state-rocksdb`).
#[derive(Debug, Default)]
pub struct Timers {
    sets: [BTreeSet<Timer>; 2],
    /// What the timers hold, as [`crate::StateSize`] counts it.
    bytes: u64,
}

/// What one timer costs besides its key: timestamp, key group, the key's header and the
/// tree's share.
const TIMER_OVERHEAD: u64 = 64;

fn timer_bytes(key: &[u8]) -> u64 {
    key.len() as u64 + TIMER_OVERHEAD
}

impl Timers {
    /// Adds a timer; one already registered for (domain, key, timestamp) is kept as it is.
    pub fn register(&mut self, domain: TimeDomain, key_group: u32, key: &[u8], ts: i64) {
        let added = self.sets[domain as usize].insert(Timer {
            timestamp: ts,
            key_group,
            key: key.to_vec(),
        });
        if added {
            self.bytes += timer_bytes(key);
        }
    }

    /// Removes a timer if it exists.
    pub fn delete(&mut self, domain: TimeDomain, key_group: u32, key: &[u8], ts: i64) {
        let removed = self.sets[domain as usize].remove(&Timer {
            timestamp: ts,
            key_group,
            key: key.to_vec(),
        });
        if removed {
            self.bytes -= timer_bytes(key);
        }
    }

    /// Moves every timer of `domain` with timestamp `<= upto` into `out`, in order.
    pub fn pop_due(&mut self, domain: TimeDomain, upto: i64, out: &mut Vec<Timer>) {
        let timers = &mut self.sets[domain as usize];
        while timers.first().is_some_and(|t| t.timestamp <= upto) {
            let t = timers.pop_first().expect("not empty");
            self.bytes -= timer_bytes(&t.key);
            out.push(t);
        }
    }

    /// Bytes the timers hold (their part of [`crate::StateSize`]).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The earliest timer of `domain`, if any.
    pub fn next(&self, domain: TimeDomain) -> Option<i64> {
        self.sets[domain as usize].first().map(|t| t.timestamp)
    }

    /// Every timer, bucketed by key group (index 0 is `range.start`), for writing them into
    /// a snapshot a key group at a time.
    pub fn by_key_group(&self, range: KeyGroupRange) -> Vec<Vec<(TimeDomain, &Timer)>> {
        let mut out = vec![Vec::new(); range.len()];
        for (domain, set) in [TimeDomain::EventTime, TimeDomain::ProcessingTime]
            .into_iter()
            .zip(&self.sets)
        {
            for t in set {
                out[(t.key_group - range.start) as usize].push((domain, t));
            }
        }
        out
    }
}
