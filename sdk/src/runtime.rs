//! The guest half of a task: a chain of operator instances, driven by frames from the host.
//!
//! Records move between chained operators as typed Rust values (no encoding); they are
//! encoded only where they leave the chain. Frame layouts: `host/docs/design/0001-wit-contract.md`.

use std::any::Any;

use crate::codec::{Data, Decode, Encode};
use crate::state::{StateDescriptor, StateKind};

pub(crate) const NONE32: u32 = u32::MAX;
pub(crate) const NO_TS: i64 = i64::MIN;

/// A failure of one operator, reported to the host with its uid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    pub operator: String,
    pub message: String,
}

impl Failure {
    pub(crate) fn new(operator: &str, message: impl std::fmt::Display) -> Self {
        Failure {
            operator: operator.to_string(),
            message: message.to_string(),
        }
    }
}

pub(crate) type OpResult = Result<(), Failure>;

/// Records the test harness keeps: (output name, timestamp, postcard bytes).
pub(crate) type Kept = Vec<(String, Option<i64>, Vec<u8>)>;

/// Writes a record's key bytes.
pub(crate) type KeyWriter<T> = std::rc::Rc<dyn Fn(&T, &mut Vec<u8>)>;

/// Writes bytes into an output frame.
pub(crate) type WriteFn<'w> = &'w dyn Fn(&mut Vec<u8>);

/// Which clock a timer follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TimeDomain {
    /// Fires when the watermark passes it.
    EventTime,
    /// Fires when the host's clock passes it.
    ProcessingTime,
}

/// List and map state, which stay in the host and are reached by a call each.
pub(crate) trait StateAccess {
    fn list_get(&mut self, state: u32, key: &[u8]) -> Vec<Vec<u8>>;
    fn list_add(&mut self, state: u32, key: &[u8], value: &[u8]);
    fn list_clear(&mut self, state: u32, key: &[u8]);
    fn map_get(&mut self, state: u32, key: &[u8], user_key: &[u8]) -> Option<Vec<u8>>;
    fn map_put(&mut self, state: u32, key: &[u8], user_key: &[u8], value: &[u8]);
    fn map_remove(&mut self, state: u32, key: &[u8], user_key: &[u8]);
    fn map_entries(&mut self, state: u32, key: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)>;
    fn map_clear(&mut self, state: u32, key: &[u8]);
}

/// A bounds-checked reader over a host frame.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| format!("frame from the host truncated at byte {}", self.pos))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    pub(crate) fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }

    pub(crate) fn i64(&mut self) -> Result<i64, String> {
        Ok(i64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }

    /// Length-prefixed bytes as a range into the frame, or `None` for NONE32.
    pub(crate) fn opt_range(&mut self) -> Result<Option<(u32, u32)>, String> {
        match self.u32()? {
            NONE32 => Ok(None),
            n => {
                let start = self.pos as u32;
                self.take(n as usize)?;
                Ok(Some((start, n)))
            }
        }
    }

    pub(crate) fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = self.u32()?;
        if n == NONE32 {
            return Err(format!("missing bytes at byte {}", self.pos));
        }
        self.take(n as usize)
    }
}

/// The current value of one value-state slot.
#[derive(Debug, Clone, Copy)]
enum Slot {
    Absent,
    /// Prefetched: a range of the host's frame.
    InFrame(u32, u32),
    /// Written in this call: a range of the key table's arena.
    Written(u32, u32),
    Cleared,
}

/// The keys of one call and their prefetched value state.
#[derive(Debug, Default)]
pub(crate) struct KeyTable {
    keys: Vec<(u32, u32)>,
    slots: Vec<Slot>,
    values: usize,
    /// Values written in this call, back to back (no allocation per write).
    arena: Vec<u8>,
}

impl KeyTable {
    fn parse(r: &mut Reader<'_>, values: usize) -> Result<KeyTable, String> {
        let n = r.u32()? as usize;
        let mut keys = Vec::with_capacity(n.min(1 << 16));
        let mut slots = Vec::with_capacity((n * values).min(1 << 16));
        for _ in 0..n {
            keys.push(r.opt_range()?.ok_or("a key in the key table is missing")?);
            for _ in 0..values {
                slots.push(match r.opt_range()? {
                    Some((s, l)) => Slot::InFrame(s, l),
                    None => Slot::Absent,
                });
            }
        }
        Ok(KeyTable {
            keys,
            slots,
            values,
            arena: Vec::new(),
        })
    }
}

/// Everything an operator sees during one call.
pub(crate) struct RunCx<'a> {
    pub frame: &'a [u8],
    pub keys: KeyTable,
    pub key: Option<u32>,
    pub ts: Option<i64>,
    pub watermark: i64,
    pub processing_time: i64,
    pub max_ts: Option<i64>,
    pub out: Vec<u8>,
    pub timer_ops: Vec<u8>,
    pub state: &'a mut dyn StateAccess,
    /// Set by the test harness: records with nowhere to go are kept here, postcard-encoded,
    /// by output name ("" for the main output).
    pub unrouted: Option<&'a mut Kept>,
}

impl<'a> RunCx<'a> {
    pub(crate) fn new(frame: &'a [u8], state: &'a mut dyn StateAccess) -> Self {
        RunCx {
            frame,
            keys: KeyTable::default(),
            key: None,
            ts: None,
            watermark: i64::MIN,
            processing_time: 0,
            max_ts: None,
            out: Vec::new(),
            timer_ops: Vec::new(),
            state,
            unrouted: None,
        }
    }

    pub(crate) fn key_bytes(&self) -> Option<&'a [u8]> {
        let (s, l) = self.keys.keys[self.key? as usize];
        Some(&self.frame[s as usize..(s + l) as usize])
    }

    pub(crate) fn value_slot(&self, slot: usize) -> Option<&[u8]> {
        let key = self.key? as usize;
        match self.keys.slots[key * self.keys.values + slot] {
            Slot::Absent | Slot::Cleared => None,
            Slot::InFrame(s, l) => Some(&self.frame[s as usize..(s + l) as usize]),
            Slot::Written(s, l) => Some(&self.keys.arena[s as usize..(s + l) as usize]),
        }
    }

    /// Sets the current key's value in `slot` to what `write` appends.
    pub(crate) fn write_value_slot(&mut self, slot: usize, write: impl FnOnce(&mut Vec<u8>)) {
        if let Some(key) = self.key {
            let start = self.keys.arena.len();
            write(&mut self.keys.arena);
            let len = self.keys.arena.len() - start;
            let i = key as usize * self.keys.values + slot;
            self.keys.slots[i] = Slot::Written(start as u32, len as u32);
        }
    }

    /// Clears the current key's value in `slot`.
    pub(crate) fn clear_value_slot(&mut self, slot: usize) {
        if let Some(key) = self.key {
            let i = key as usize * self.keys.values + slot;
            self.keys.slots[i] = Slot::Cleared;
        }
    }

    pub(crate) fn timer_op(&mut self, op: u8, ts: i64) -> Result<(), String> {
        let key = self.key.ok_or("timers need a keyed stream (use key_by)")?;
        self.timer_ops.push(op);
        self.timer_ops.extend_from_slice(&key.to_le_bytes());
        self.timer_ops.extend_from_slice(&ts.to_le_bytes());
        Ok(())
    }

    /// Writes one output record: edge, timestamp, key (written by `key`), value.
    pub(crate) fn write_record(&mut self, edge: u32, key: Option<WriteFn<'_>>, value: WriteFn<'_>) {
        let out = &mut self.out;
        out.extend_from_slice(&edge.to_le_bytes());
        out.extend_from_slice(&self.ts.unwrap_or(NO_TS).to_le_bytes());
        for part in [key, Some(value)] {
            match part {
                None => out.extend_from_slice(&NONE32.to_le_bytes()),
                Some(write) => {
                    let at = out.len();
                    out.extend_from_slice(&[0; 4]);
                    write(out);
                    let len = (out.len() - at - 4) as u32;
                    out[at..at + 4].copy_from_slice(&len.to_le_bytes());
                }
            }
        }
    }

    /// The state-writes frame for every value slot written in this call.
    pub(crate) fn state_writes(&self, value_states: &[u32]) -> Vec<u8> {
        let mut w = Vec::new();
        if self.keys.values == 0 {
            return w;
        }
        for (i, slot) in self.keys.slots.iter().enumerate() {
            let value = match *slot {
                Slot::Written(s, l) => Some(&self.keys.arena[s as usize..(s + l) as usize]),
                Slot::Cleared => None,
                Slot::Absent | Slot::InFrame(..) => continue,
            };
            let key = (i / self.keys.values) as u32;
            let state = value_states[i % self.keys.values];
            w.extend_from_slice(&key.to_le_bytes());
            w.extend_from_slice(&state.to_le_bytes());
            match value {
                Some(b) => {
                    w.extend_from_slice(&(b.len() as u32).to_le_bytes());
                    w.extend_from_slice(b);
                }
                None => w.extend_from_slice(&NONE32.to_le_bytes()),
            }
        }
        w
    }
}

/// uids of the chain's operators, and the position of the one running now: a panic aborts
/// the instance, so the panic hook reads them to name the operator. (A guest instance is
/// single-threaded; a relaxed atomic is a plain load or store on wasm32, cheaper than a
/// thread-local on this hot path.)
static CHAIN: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
static CURRENT_OP: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

fn swap_current(position: u32) -> u32 {
    CURRENT_OP.swap(position, std::sync::atomic::Ordering::Relaxed)
}

/// Marks the operator at `position` of the chain as the one running.
pub(crate) fn enter_operator(position: u32) {
    swap_current(position);
}

pub(crate) fn set_chain_operators(uids: Vec<String>) {
    *CHAIN.lock().unwrap_or_else(|e| e.into_inner()) = uids;
}

#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
pub(crate) fn current_operator() -> String {
    let i = CURRENT_OP.load(std::sync::atomic::Ordering::Relaxed) as usize;
    CHAIN
        .lock()
        .map(|c| c.get(i).cloned().unwrap_or_default())
        .unwrap_or_default()
}

/// Marks which operator of the chain is running, for the panic hook, and counts its input.
pub(crate) struct Tracked<I> {
    pub position: u32,
    pub inner: BoxOp<I>,
    pub records_in: std::rc::Rc<std::cell::Cell<u64>>,
}

impl<I> Op<I> for Tracked<I> {
    fn element(&mut self, value: I, cx: &mut RunCx<'_>) -> OpResult {
        self.records_in.set(self.records_in.get() + 1);
        let previous = swap_current(self.position);
        let r = self.inner.element(value, cx);
        swap_current(previous);
        r
    }

    fn timer(&mut self, domain: TimeDomain, ts: i64, cx: &mut RunCx<'_>) -> OpResult {
        let previous = swap_current(self.position);
        let r = self.inner.timer(domain, ts, cx);
        swap_current(previous);
        r
    }

    fn finish(&mut self, cx: &mut RunCx<'_>) -> OpResult {
        let previous = swap_current(self.position);
        let r = self.inner.finish(cx);
        swap_current(previous);
        r
    }

    fn end_of_call(&mut self, cx: &mut RunCx<'_>) -> OpResult {
        let previous = swap_current(self.position);
        let r = self.inner.end_of_call(cx);
        swap_current(previous);
        r
    }
}

/// An operator instance that consumes `I`.
pub(crate) trait Op<I> {
    fn element(&mut self, value: I, cx: &mut RunCx<'_>) -> OpResult;
    fn timer(&mut self, _domain: TimeDomain, _ts: i64, _cx: &mut RunCx<'_>) -> OpResult {
        Ok(())
    }
    fn finish(&mut self, cx: &mut RunCx<'_>) -> OpResult;
    /// The call from the host ends: write back what was cached during it (key indices
    /// are only valid within one call).
    fn end_of_call(&mut self, _cx: &mut RunCx<'_>) -> OpResult {
        Ok(())
    }
}

pub(crate) type BoxOp<I> = Box<dyn Op<I>>;

/// Writes records onto one plan edge.
pub(crate) struct EdgeWriter<T> {
    pub edge: u32,
    pub encode: Encode<T>,
    pub key: Option<KeyWriter<T>>,
}

impl<T: Data> Op<T> for EdgeWriter<T> {
    fn element(&mut self, value: T, cx: &mut RunCx<'_>) -> OpResult {
        let encode = self.encode;
        match &self.key {
            Some(k) => cx.write_record(self.edge, Some(&|out| k(&value, out)), &|out| {
                encode(&value, out)
            }),
            None => cx.write_record(self.edge, None, &|out| encode(&value, out)),
        }
        Ok(())
    }

    fn finish(&mut self, _cx: &mut RunCx<'_>) -> OpResult {
        Ok(())
    }
}

/// Sends each record to several outputs.
pub(crate) struct Tee<T>(pub Vec<BoxOp<T>>);

impl<T: Data> Op<T> for Tee<T> {
    fn element(&mut self, value: T, cx: &mut RunCx<'_>) -> OpResult {
        if let Some((last, rest)) = self.0.split_last_mut() {
            for op in rest {
                op.element(value.clone(), cx)?;
            }
            last.element(value, cx)?;
        }
        Ok(())
    }

    fn finish(&mut self, cx: &mut RunCx<'_>) -> OpResult {
        self.0.iter_mut().try_for_each(|op| op.finish(cx))
    }
}

/// An output nothing reads: dropped, or kept for the test harness.
pub(crate) struct Unrouted {
    pub name: String,
}

impl<T: Data> Op<T> for Unrouted {
    fn element(&mut self, value: T, cx: &mut RunCx<'_>) -> OpResult {
        let ts = cx.ts;
        if let Some(kept) = cx.unrouted.as_deref_mut() {
            let bytes = postcard::to_allocvec(&value).expect("encoding to a Vec cannot fail");
            kept.push((self.name.clone(), ts, bytes));
        }
        Ok(())
    }

    fn finish(&mut self, _cx: &mut RunCx<'_>) -> OpResult {
        Ok(())
    }
}

/// Combines erased outputs of one type into one erased `BoxOp<T>`.
pub(crate) fn tee_erased<T: Data>(mut outs: Vec<Box<dyn Any>>, name: &str) -> Box<dyn Any> {
    let op: BoxOp<T> = match outs.len() {
        0 => Box::new(Unrouted {
            name: name.to_string(),
        }),
        1 => *outs
            .pop()
            .expect("one")
            .downcast::<BoxOp<T>>()
            .expect("edge writer of the stream's type"),
        _ => Box::new(Tee(outs
            .into_iter()
            .map(|o| {
                *o.downcast::<BoxOp<T>>()
                    .expect("edge writer of the stream's type")
            })
            .collect())),
    };
    Box::new(op)
}

/// Side outputs of one operator instance, by name.
#[derive(Default)]
pub(crate) struct SideOutputs {
    outputs: Vec<(String, Box<dyn Any>)>,
}

impl SideOutputs {
    pub(crate) fn new(outputs: Vec<(String, Box<dyn Any>)>) -> Self {
        SideOutputs { outputs }
    }

    pub(crate) fn emit<S: Data>(
        &mut self,
        operator: &str,
        name: &str,
        value: S,
        cx: &mut RunCx<'_>,
    ) -> OpResult {
        match self.outputs.iter_mut().find(|(n, _)| n == name) {
            Some((_, out)) => match out.downcast_mut::<BoxOp<S>>() {
                Some(op) => op.element(value, cx),
                None => Err(Failure::new(
                    operator,
                    format!("side output '{name}' is used with two different record types"),
                )),
            },
            None => {
                let mut kept = Unrouted {
                    name: name.to_string(),
                };
                Op::<S>::element(&mut kept, value, cx)
            }
        }
    }

    pub(crate) fn finish(&mut self, _cx: &mut RunCx<'_>) -> OpResult {
        Ok(())
    }
}

/// The head of a chain, with the decoders of its input edges.
pub(crate) trait Head {
    fn record(&mut self, edge: u32, bytes: &[u8], cx: &mut RunCx<'_>) -> OpResult;
    fn timer(&mut self, domain: TimeDomain, ts: i64, cx: &mut RunCx<'_>) -> OpResult;
    fn finish(&mut self, cx: &mut RunCx<'_>) -> OpResult;
    fn end_of_call(&mut self, cx: &mut RunCx<'_>) -> OpResult;
    /// Polls a source head; other heads have nothing to poll.
    fn poll(&mut self, _max: usize, _cx: &mut RunCx<'_>) -> Result<bool, Failure> {
        Err(Failure::new(
            "",
            "this chain is not headed by a guest source",
        ))
    }
}

pub(crate) struct TypedHead<I> {
    pub uid: String,
    pub op: BoxOp<I>,
    pub decoders: Vec<(u32, Decode<I>)>,
}

impl<I: Data> Head for TypedHead<I> {
    fn record(&mut self, edge: u32, bytes: &[u8], cx: &mut RunCx<'_>) -> OpResult {
        let decode = match self.decoders.iter().find(|(e, _)| *e == edge) {
            Some((_, d)) => *d,
            None => {
                return Err(Failure::new(
                    &self.uid,
                    format!("record arrived on edge {edge}, which does not lead here"),
                ))
            }
        };
        let value = decode(bytes).map_err(|e| Failure::new(&self.uid, e))?;
        self.op.element(value, cx)
    }

    fn timer(&mut self, domain: TimeDomain, ts: i64, cx: &mut RunCx<'_>) -> OpResult {
        self.op.timer(domain, ts, cx)
    }

    fn finish(&mut self, cx: &mut RunCx<'_>) -> OpResult {
        self.op.finish(cx)
    }

    fn end_of_call(&mut self, cx: &mut RunCx<'_>) -> OpResult {
        self.op.end_of_call(cx)
    }
}

pub(crate) fn make_head<I: Data>(
    uid: &str,
    op: Box<dyn Any>,
    decoders: Vec<(u32, Box<dyn Any>)>,
) -> Box<dyn Head> {
    Box::new(TypedHead::<I> {
        uid: uid.to_string(),
        op: *op
            .downcast::<BoxOp<I>>()
            .expect("head operator of its input type"),
        decoders: decoders
            .into_iter()
            .map(|(e, d)| {
                (
                    e,
                    *d.downcast::<Decode<I>>()
                        .expect("decoder of the input type"),
                )
            })
            .collect(),
    })
}

/// What the host gets back from one call.
pub(crate) struct CallResult {
    pub output: Vec<u8>,
    pub state_writes: Vec<u8>,
    pub timer_ops: Vec<u8>,
    pub max_timestamp: Option<i64>,
}

/// A chain of operators opened for one subtask.
pub(crate) struct Chain {
    pub head: Box<dyn Head>,
    /// Records in of each chained node, in chain order.
    pub counters: Vec<std::rc::Rc<std::cell::Cell<u64>>>,
    /// Descriptor index of each value state of the head node, in slot order.
    pub value_states: Vec<u32>,
    pub head_uid: String,
}

impl Chain {
    pub(crate) fn value_slots(states: &[StateDescriptor]) -> Vec<u32> {
        states
            .iter()
            .enumerate()
            .filter(|(_, s)| s.kind == StateKind::Value)
            .map(|(i, _)| i as u32)
            .collect()
    }

    fn finish_call(&self, cx: RunCx<'_>) -> CallResult {
        CallResult {
            state_writes: cx.state_writes(&self.value_states),
            output: cx.out,
            timer_ops: cx.timer_ops,
            max_timestamp: cx.max_ts,
        }
    }

    fn host_error(&self, message: String) -> Failure {
        Failure::new(&self.head_uid, message)
    }

    pub(crate) fn process(
        &mut self,
        frame: &[u8],
        watermark: i64,
        processing_time: i64,
        state: &mut dyn StateAccess,
        unrouted: Option<&mut Kept>,
    ) -> Result<CallResult, Failure> {
        let mut r = Reader::new(frame);
        let keys =
            KeyTable::parse(&mut r, self.value_states.len()).map_err(|e| self.host_error(e))?;
        let mut cx = RunCx::new(frame, state);
        cx.keys = keys;
        cx.watermark = watermark;
        cx.processing_time = processing_time;
        cx.unrouted = unrouted;
        cx.out.reserve(frame.len());
        let n = r.u32().map_err(|e| self.host_error(e))?;
        for _ in 0..n {
            let edge = r.u32().map_err(|e| self.host_error(e))?;
            let ts = r.i64().map_err(|e| self.host_error(e))?;
            let key = r.u32().map_err(|e| self.host_error(e))?;
            let bytes = r.bytes().map_err(|e| self.host_error(e))?;
            if key != NONE32 && key as usize >= cx.keys.keys.len() {
                return Err(self.host_error(format!("key index {key} out of range")));
            }
            cx.key = (key != NONE32).then_some(key);
            cx.ts = (ts != NO_TS).then_some(ts);
            self.head.record(edge, bytes, &mut cx)?;
        }
        self.head.end_of_call(&mut cx)?;
        Ok(self.finish_call(cx))
    }

    pub(crate) fn on_timers(
        &mut self,
        frame: &[u8],
        watermark: i64,
        processing_time: i64,
        state: &mut dyn StateAccess,
        unrouted: Option<&mut Kept>,
    ) -> Result<CallResult, Failure> {
        let mut r = Reader::new(frame);
        let keys =
            KeyTable::parse(&mut r, self.value_states.len()).map_err(|e| self.host_error(e))?;
        let mut cx = RunCx::new(frame, state);
        cx.keys = keys;
        cx.watermark = watermark;
        cx.processing_time = processing_time;
        cx.unrouted = unrouted;
        let n = r.u32().map_err(|e| self.host_error(e))?;
        for _ in 0..n {
            let key = r.u32().map_err(|e| self.host_error(e))?;
            // The host writes 0 or 1 (`weir_core::frame`); anything else is a broken frame.
            let domain = match r.u8().map_err(|e| self.host_error(e))? {
                0 => TimeDomain::EventTime,
                1 => TimeDomain::ProcessingTime,
                other => return Err(self.host_error(format!("unknown timer domain {other}"))),
            };
            let ts = r.i64().map_err(|e| self.host_error(e))?;
            if key as usize >= cx.keys.keys.len() {
                return Err(self.host_error(format!("timer key index {key} out of range")));
            }
            cx.key = Some(key);
            cx.ts = (domain == TimeDomain::EventTime).then_some(ts);
            self.head.timer(domain, ts, &mut cx)?;
        }
        self.head.end_of_call(&mut cx)?;
        Ok(self.finish_call(cx))
    }

    /// Polls the chain's guest source; `Ok((result, finished))`.
    pub(crate) fn poll(
        &mut self,
        max: usize,
        watermark: i64,
        processing_time: i64,
        state: &mut dyn StateAccess,
        unrouted: Option<&mut Kept>,
    ) -> Result<(CallResult, bool), Failure> {
        let mut cx = RunCx::new(&[], state);
        cx.watermark = watermark;
        cx.processing_time = processing_time;
        cx.unrouted = unrouted;
        let more = self.head.poll(max, &mut cx).map_err(|mut f| {
            if f.operator.is_empty() {
                f.operator = self.head_uid.clone();
            }
            f
        })?;
        self.head.end_of_call(&mut cx)?;
        Ok((self.finish_call(cx), !more))
    }

    pub(crate) fn finish(
        &mut self,
        watermark: i64,
        processing_time: i64,
        state: &mut dyn StateAccess,
        unrouted: Option<&mut Kept>,
    ) -> Result<CallResult, Failure> {
        let mut cx = RunCx::new(&[], state);
        cx.watermark = watermark;
        cx.processing_time = processing_time;
        cx.unrouted = unrouted;
        self.head.finish(&mut cx)?;
        self.head.end_of_call(&mut cx)?;
        Ok(self.finish_call(cx))
    }
}
