//! Key groups: the unit in which keyed state is partitioned, snapshotted and rescaled.
//!
//! As in Flink, a key hashes into one of `max_parallelism` key groups, and each subtask of a
//! keyed operator owns one contiguous range of key groups. The hash is part of the state
//! layout (a savepoint's key groups must mean the same thing to every later host), so it is
//! fixed: XXH3-64 with seed 0 over the key's bytes, modulo `max_parallelism`.

/// Number of key groups when a job does not choose one.
pub const DEFAULT_MAX_PARALLELISM: u32 = 128;

/// The key group a key belongs to.
pub fn key_group_for(key: &[u8], max_parallelism: u32) -> u32 {
    (xxhash_rust::xxh3::xxh3_64(key) % u64::from(max_parallelism)) as u32
}

/// The subtask (of `parallelism`) that owns key group `key_group`.
pub fn subtask_for_key_group(key_group: u32, max_parallelism: u32, parallelism: u32) -> u32 {
    (u64::from(key_group) * u64::from(parallelism) / u64::from(max_parallelism)) as u32
}

/// A half-open range `[start, end)` of key groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyGroupRange {
    /// First key group in the range.
    pub start: u32,
    /// One past the last key group.
    pub end: u32,
}

impl KeyGroupRange {
    /// The range `[start, end)`.
    pub fn new(start: u32, end: u32) -> Self {
        assert!(start <= end, "key group range {start}..{end} is reversed");
        KeyGroupRange { start, end }
    }

    /// The key groups owned by `subtask`: exactly those for which
    /// [`subtask_for_key_group`] names it.
    pub fn for_subtask(max_parallelism: u32, parallelism: u32, subtask: u32) -> Self {
        let (max, p, i) = (
            u64::from(max_parallelism),
            u64::from(parallelism),
            u64::from(subtask),
        );
        // Smallest kg with kg * p / max >= i is ceil(i * max / p).
        let start = (i * max).div_ceil(p);
        let end = ((i + 1) * max).div_ceil(p);
        KeyGroupRange::new(start as u32, end as u32)
    }

    /// Whether `key_group` is in the range.
    pub fn contains(&self, key_group: u32) -> bool {
        (self.start..self.end).contains(&key_group)
    }

    /// Number of key groups in the range.
    pub fn len(&self) -> usize {
        (self.end - self.start) as usize
    }

    /// Whether the range holds no key group.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_partition_key_groups_as_assignment_does() {
        for max in [1u32, 7, 128, 1000] {
            for p in 1..=max.min(17) {
                let mut next = 0;
                for i in 0..p {
                    let r = KeyGroupRange::for_subtask(max, p, i);
                    assert_eq!(r.start, next, "max={max} p={p} i={i}");
                    for kg in r.start..r.end {
                        assert_eq!(subtask_for_key_group(kg, max, p), i);
                    }
                    next = r.end;
                }
                assert_eq!(next, max);
            }
        }
    }

    #[test]
    fn key_group_hash_is_stable() {
        // Part of the state layout: these values must never change.
        assert_eq!(
            key_group_for(b"", 128),
            (xxhash_rust::xxh3::xxh3_64(b"") % 128) as u32
        );
        let a = key_group_for(b"hello", 128);
        assert_eq!(a, key_group_for(b"hello", 128));
        assert!(a < 128);
    }
}
