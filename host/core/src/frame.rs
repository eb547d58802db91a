//! Byte frames that carry records, state and timers across the Wasm boundary.
//!
//! The layouts are part of the WIT contract and specified in
//! `host/docs/design/0001-wit-contract.md`. All integers are little-endian. Frames coming
//! from a guest are untrusted: every reader here checks bounds and reports a [`FrameError`]
//! instead of panicking.

/// `u32` marker for "absent" (no key, no value, state cleared).
pub const NONE32: u32 = u32::MAX;
/// Timestamp marker for "no timestamp".
pub const NO_TS: i64 = i64::MIN;

/// A guest sent a frame that does not follow the layout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed {what} frame from the guest: {reason} at byte {offset}")]
pub struct FrameError {
    /// Which frame.
    pub what: &'static str,
    /// What was wrong.
    pub reason: &'static str,
    /// Where.
    pub offset: usize,
}

/// A bounds-checked little-endian reader.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    /// Reads `buf`, naming it `what` in errors.
    pub fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader { buf, pos: 0, what }
    }

    /// Whether everything was read.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// Current offset.
    pub fn position(&self) -> usize {
        self.pos
    }

    fn err(&self, reason: &'static str) -> FrameError {
        FrameError {
            what: self.what,
            reason,
            offset: self.pos,
        }
    }

    /// The next `n` bytes.
    #[inline]
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| self.err("truncated"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// A `u8`.
    #[inline]
    pub fn u8(&mut self) -> Result<u8, FrameError> {
        Ok(self.bytes(1)?[0])
    }

    /// A `u32`.
    #[inline]
    pub fn u32(&mut self) -> Result<u32, FrameError> {
        Ok(u32::from_le_bytes(
            self.bytes(4)?.try_into().expect("4 bytes"),
        ))
    }

    /// An `i64`.
    #[inline]
    pub fn i64(&mut self) -> Result<i64, FrameError> {
        Ok(i64::from_le_bytes(
            self.bytes(8)?.try_into().expect("8 bytes"),
        ))
    }

    /// A `u32` length followed by that many bytes, or `None` for [`NONE32`].
    #[inline]
    pub fn opt_bytes(&mut self) -> Result<Option<&'a [u8]>, FrameError> {
        match self.u32()? {
            NONE32 => Ok(None),
            n => self.bytes(n as usize).map(Some),
        }
    }

    /// A `u32` length followed by that many bytes.
    #[inline]
    pub fn len_bytes(&mut self) -> Result<&'a [u8], FrameError> {
        self.opt_bytes()?.ok_or_else(|| self.err("missing bytes"))
    }
}

#[inline]
fn put_u32(buf: &mut Vec<u8>, v: u32) {
    buf.extend_from_slice(&v.to_le_bytes());
}

#[inline]
fn put_opt_bytes(buf: &mut Vec<u8>, v: Option<&[u8]>) {
    match v {
        Some(b) => {
            put_u32(buf, b.len() as u32);
            buf.extend_from_slice(b);
        }
        None => put_u32(buf, NONE32),
    }
}

/// One record as it travels between tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// Plan edge the record travels on.
    pub edge: u32,
    /// Event timestamp.
    pub timestamp: Option<i64>,
    /// Key bytes, on keyed edges.
    pub key: Option<&'a [u8]>,
    /// The record's encoded value.
    pub value: &'a [u8],
}

/// Records in the output layout: `{ u32 edge, i64 ts, u32 key_len|NONE32, key, u32 len, value }`.
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
        put_u32(&mut self.bytes, r.edge);
        self.bytes
            .extend_from_slice(&r.timestamp.unwrap_or(NO_TS).to_le_bytes());
        put_opt_bytes(&mut self.bytes, r.key);
        put_opt_bytes(&mut self.bytes, Some(r.value));
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

/// Reads records in the output layout; yields an error (once) on a malformed frame.
#[derive(Debug, Clone)]
pub struct OutputIter<'a> {
    r: Reader<'a>,
    failed: bool,
}

impl<'a> OutputIter<'a> {
    /// Reads the `output` frame of a batch result.
    pub fn new(buf: &'a [u8]) -> Self {
        OutputIter {
            r: Reader::new(buf, "output"),
            failed: false,
        }
    }

    fn read(&mut self) -> Result<RecordRef<'a>, FrameError> {
        let edge = self.r.u32()?;
        let ts = self.r.i64()?;
        let key = self.r.opt_bytes()?;
        let value = self.r.len_bytes()?;
        Ok(RecordRef {
            edge,
            timestamp: (ts != NO_TS).then_some(ts),
            key,
            value,
        })
    }
}

impl<'a> Iterator for OutputIter<'a> {
    type Item = Result<RecordRef<'a>, FrameError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.r.is_empty() {
            return None;
        }
        let r = self.read();
        self.failed = r.is_err();
        Some(r)
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
    pub fn put(&mut self, value: Option<&[u8]>) {
        put_opt_bytes(self.buf, value);
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
        put_opt_bytes(&mut self.table, Some(key));
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
        let b = &mut self.body;
        b.reserve(20 + value.len());
        b.extend_from_slice(&edge.to_le_bytes());
        b.extend_from_slice(&ts.unwrap_or(NO_TS).to_le_bytes());
        b.extend_from_slice(&key_index.unwrap_or(NONE32).to_le_bytes());
        b.extend_from_slice(&(value.len() as u32).to_le_bytes());
        b.extend_from_slice(value);
        self.body_count += 1;
    }

    /// Appends a timer to an `on-timers` frame.
    pub fn timer(&mut self, key_index: u32, processing_time: bool, ts: i64) {
        put_u32(&mut self.body, key_index);
        self.body.push(u8::from(processing_time));
        self.body.extend_from_slice(&ts.to_le_bytes());
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
        out.reserve(8 + self.table.len() + self.body.len());
        put_u32(out, self.key_count);
        out.extend_from_slice(&self.table);
        put_u32(out, self.body_count);
        out.extend_from_slice(&self.body);
    }

    /// Writes a `process` frame straight from a batch whose records carry no key: for such
    /// records the batch layout and the frame's record layout are the same bytes. (The host
    /// strips keys from records on every edge that is not hash-partitioned.)
    pub fn unkeyed_frame(batch: &RecordBatch, out: &mut Vec<u8>) {
        out.clear();
        out.reserve(8 + batch.bytes.len());
        put_u32(out, 0);
        put_u32(out, batch.len as u32);
        out.extend_from_slice(&batch.bytes);
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

/// A value-state write from a batch result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateWrite<'a> {
    /// Index in the call's key table.
    pub key_index: u32,
    /// Index of the state in the head node's descriptors.
    pub state_index: u32,
    /// New value, or `None` to clear.
    pub value: Option<&'a [u8]>,
}

/// Reads a `state-writes` frame.
pub fn state_writes(buf: &[u8]) -> impl Iterator<Item = Result<StateWrite<'_>, FrameError>> {
    let mut r = Reader::new(buf, "state-writes");
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed || r.is_empty() {
            return None;
        }
        let w = (|| {
            Ok(StateWrite {
                key_index: r.u32()?,
                state_index: r.u32()?,
                value: r.opt_bytes()?,
            })
        })();
        failed = w.is_err();
        Some(w)
    })
}

/// What a timer op asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerOpKind {
    /// Register an event-time timer.
    RegisterEventTime,
    /// Delete an event-time timer.
    DeleteEventTime,
    /// Register a processing-time timer.
    RegisterProcessingTime,
    /// Delete a processing-time timer.
    DeleteProcessingTime,
}

/// A timer op from a batch result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerOp {
    /// What to do.
    pub kind: TimerOpKind,
    /// Index in the call's key table.
    pub key_index: u32,
    /// Timer timestamp.
    pub timestamp: i64,
}

/// Reads a `timer-ops` frame.
pub fn timer_ops(buf: &[u8]) -> impl Iterator<Item = Result<TimerOp, FrameError>> + '_ {
    let mut r = Reader::new(buf, "timer-ops");
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed || r.is_empty() {
            return None;
        }
        let op = (|| {
            let kind = match r.u8()? {
                0 => TimerOpKind::RegisterEventTime,
                1 => TimerOpKind::DeleteEventTime,
                2 => TimerOpKind::RegisterProcessingTime,
                3 => TimerOpKind::DeleteProcessingTime,
                _ => {
                    return Err(FrameError {
                        what: "timer-ops",
                        reason: "unknown timer op",
                        offset: r.position() - 1,
                    })
                }
            };
            Ok(TimerOp {
                kind,
                key_index: r.u32()?,
                timestamp: r.i64()?,
            })
        })();
        failed = op.is_err();
        Some(op)
    })
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
