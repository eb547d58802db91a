//! Byte frames that carry records, state and timers across the Wasm boundary.
//!
//! The layouts belong to the crate `weir-frame` (`wit/codec/`), which the guest SDK uses
//! too; they are described byte by byte, with golden examples, in `wit/frames/`. This module
//! re-exports that crate and adds the host's own layers on top of it: [`RecordBatch`] (the
//! batches tasks exchange) and [`FrameBuilder`] (`process` and `on-timers` frames with
//! deduplicated keys and prefetched value state). Frames coming from a guest are untrusted:
//! every reader checks bounds and reports a [`FrameError`] instead of panicking.

pub use weir_frame::*;

/// One record as it travels between tasks (an `output` frame entry).
pub use weir_frame::OutputRecord as RecordRef;

/// Reads records in the output layout; yields an error (once) on a malformed frame.
pub type OutputIter<'a> = Entries<'a, RecordRef<'a>>;

/// Records in the `output` layout ([`RecordRef`]), counted.
///
/// This is what a guest returns in `batch-result.output` and what the host sends between
/// tasks, so a guest's output can be forwarded without re-encoding.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordBatch {
    bytes: Vec<u8>,
    len: usize,
}

impl RecordBatch {
    /// An empty batch with room for `bytes`.
    pub fn with_capacity(bytes: usize) -> Self {
        RecordBatch {
            bytes: Vec::with_capacity(bytes),
            len: 0,
        }
    }

    /// Appends a record.
    #[inline]
    pub fn push(&mut self, r: RecordRef<'_>) {
        r.write(&mut self.bytes);
        self.len += 1;
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the batch holds no record.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Size in bytes.
    pub fn byte_len(&self) -> usize {
        self.bytes.len()
    }

    /// The batch as an `output` frame.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The records (the batch was built by the host, so it is well formed).
    pub fn iter(&self) -> OutputIter<'_> {
        OutputIter::new(&self.bytes)
    }

    /// Removes every record, keeping the allocation.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.len = 0;
    }
}

/// Builds a `process` or `on-timers` frame: a key table with prefetched value state, then
/// records or timers that refer to keys by index.
///
/// Keys are deduplicated through a hash table over a byte arena, so adding a record costs
/// no allocation once the builder's buffers have grown.
#[derive(Default)]
pub struct FrameBuilder {
    table: Vec<u8>,
    key_count: u32,
    arena: Vec<u8>,
    ranges: Vec<(u32, u32)>,
    index: hashbrown::HashTable<u32>,
    hasher: hashbrown::DefaultHashBuilder,
    body: Vec<u8>,
    body_count: u32,
}

impl std::fmt::Debug for FrameBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameBuilder")
            .field("keys", &self.key_count)
            .field("entries", &self.body_count)
            .finish()
    }
}

/// Where the prefetched values of one key's value states are written, in declaration order.
pub struct ValueSlots<'a> {
    buf: &'a mut Vec<u8>,
}

impl ValueSlots<'_> {
    /// The next value state's current value, or `None` if it has none.
    #[inline]
    pub fn put(&mut self, value: Option<&[u8]>) {
        write_value(self.buf, value);
    }
}

impl FrameBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Key `i` of the table.
    pub fn key_at(&self, i: u32) -> Option<&[u8]> {
        let &(start, len) = self.ranges.get(i as usize)?;
        Some(&self.arena[start as usize..(start + len) as usize])
    }

    /// Number of keys in the table.
    pub fn key_count(&self) -> u32 {
        self.key_count
    }

    /// Index of `key` in the key table, adding it (and its prefetched values, written by
    /// `prefetch`) the first time it is seen.
    pub fn key(&mut self, key: &[u8], prefetch: impl FnOnce(&mut ValueSlots<'_>)) -> u32 {
        use std::hash::BuildHasher;
        let hash = self.hasher.hash_one(key);
        let (arena, ranges) = (&self.arena, &self.ranges);
        let slice = |i: u32| {
            let (s, l) = ranges[i as usize];
            &arena[s as usize..(s + l) as usize]
        };
        if let Some(&i) = self.index.find(hash, |&i| slice(i) == key) {
            return i;
        }
        let i = self.key_count;
        write_key(&mut self.table, key);
        prefetch(&mut ValueSlots {
            buf: &mut self.table,
        });
        self.ranges
            .push((self.arena.len() as u32, key.len() as u32));
        self.arena.extend_from_slice(key);
        self.key_count += 1;
        let (arena, ranges, hasher) = (&self.arena, &self.ranges, &self.hasher);
        self.index.insert_unique(hash, i, |&j| {
            let (s, l) = ranges[j as usize];
            hasher.hash_one(&arena[s as usize..(s + l) as usize])
        });
        i
    }

    /// Appends a record to a `process` frame.
    #[inline]
    pub fn record(&mut self, edge: u32, key_index: Option<u32>, ts: Option<i64>, value: &[u8]) {
        ProcessRecord {
            edge,
            timestamp: ts,
            key_index,
            value,
        }
        .write(&mut self.body);
        self.body_count += 1;
    }

    /// Appends a timer to an `on-timers` frame.
    pub fn timer(&mut self, key_index: u32, processing_time: bool, ts: i64) {
        Timer {
            key_index,
            domain: if processing_time {
                TimeDomain::ProcessingTime
            } else {
                TimeDomain::EventTime
            },
            timestamp: ts,
        }
        .write(&mut self.body);
        self.body_count += 1;
    }

    /// Number of records or timers added.
    pub fn count(&self) -> u32 {
        self.body_count
    }

    /// Writes the frame into `out` (cleared first). The key table stays readable through
    /// [`FrameBuilder::key_at`] until [`FrameBuilder::clear`].
    pub fn finish_into(&self, out: &mut Vec<u8>) {
        out.clear();
        write_keyed_frame(
            out,
            self.key_count,
            &self.table,
            self.body_count,
            &self.body,
        );
    }

    /// Writes a `process` frame straight from a batch whose records carry no key: for such
    /// records the batch layout and the frame's record layout are the same bytes. (The host
    /// strips keys from records on every edge that is not hash-partitioned.)
    pub fn unkeyed_frame(batch: &RecordBatch, out: &mut Vec<u8>) {
        out.clear();
        write_unkeyed_process_frame(out, batch.len as u32, &batch.bytes);
    }

    /// Empties the builder for the next frame, keeping its allocations.
    pub fn clear(&mut self) {
        self.table.clear();
        self.key_count = 0;
        self.arena.clear();
        self.ranges.clear();
        self.index.clear();
        self.body.clear();
        self.body_count = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_batch_round_trips() {
        let mut b = RecordBatch::default();
        b.push(RecordRef {
            edge: 3,
            timestamp: Some(42),
            key: Some(b"k"),
            value: b"v1",
        });
        b.push(RecordRef {
            edge: 0,
            timestamp: None,
            key: None,
            value: b"",
        });
        let got: Vec<_> = b.iter().collect::<Result<_, _>>().unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].key, Some(&b"k"[..]));
        assert_eq!(got[0].timestamp, Some(42));
        assert_eq!(got[1].timestamp, None);
        assert_eq!(got[1].key, None);
    }

    #[test]
    fn truncated_frames_are_errors_not_panics() {
        let mut b = RecordBatch::default();
        b.push(RecordRef {
            edge: 1,
            timestamp: Some(1),
            key: Some(b"key"),
            value: b"value",
        });
        for cut in 0..b.bytes.len() {
            let items: Vec<_> = OutputIter::new(&b.bytes[..cut]).collect();
            if cut > 0 {
                assert!(items.last().unwrap().is_err(), "cut at {cut}");
            }
        }
        assert!(timer_ops(&[9, 0, 0, 0, 0]).next().unwrap().is_err());
        assert!(state_writes(&[0, 0]).next().unwrap().is_err());
    }

    #[test]
    fn builder_deduplicates_keys() {
        let mut f = FrameBuilder::new();
        let a = f.key(b"a", |s| s.put(Some(b"1")));
        let b = f.key(b"b", |s| s.put(None));
        assert_eq!(f.key(b"a", |_| panic!("prefetched twice")), a);
        f.record(0, Some(a), Some(5), b"x");
        f.record(0, Some(b), None, b"y");
        let mut out = Vec::new();
        f.finish_into(&mut out);
        let mut r = Reader::new(&out, "test");
        assert_eq!(r.u32().unwrap(), 2);
        assert_eq!(r.len_bytes().unwrap(), b"a");
        assert_eq!(r.opt_bytes().unwrap(), Some(&b"1"[..]));
        assert_eq!(r.len_bytes().unwrap(), b"b");
        assert_eq!(r.opt_bytes().unwrap(), None);
        assert_eq!(r.u32().unwrap(), 2);
    }
}
