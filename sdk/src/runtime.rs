//! The guest half of a task: a chain of operator instances, driven by frames from the host.
//!
//! Records move between chained operators as typed Rust values (no encoding); they are
//! encoded only where they leave the chain. Frames are read and written through the
//! `weir-frame` crate, which owns their layouts (`wit/frames/README.md`).

use std::any::Any;

use weir_frame::{
    on_timers_frame, process_frame, write_output_record, Counted, Entry, FrameError, KeyedFrame,
    StateWrite, TimerOp, TimerOpKind, WriteWith,
};

use crate::codec::{Data, Decode, Encode};
use crate::state::{StateDescriptor, StateKind};

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

impl From<weir_frame::TimeDomain> for TimeDomain {
    fn from(d: weir_frame::TimeDomain) -> Self {
        match d {
            weir_frame::TimeDomain::EventTime => TimeDomain::EventTime,
            weir_frame::TimeDomain::ProcessingTime => TimeDomain::ProcessingTime,
        }
    }
}

impl From<TimeDomain> for weir_frame::TimeDomain {
    fn from(d: TimeDomain) -> Self {
        match d {
            TimeDomain::EventTime => weir_frame::TimeDomain::EventTime,
            TimeDomain::ProcessingTime => weir_frame::TimeDomain::ProcessingTime,
        }
    }
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

/// The current value of one value-state slot.
#[derive(Debug, Clone, Copy)]
enum Slot<'a> {
    Absent,
    /// Prefetched: borrowed from the host's frame.
    InFrame(&'a [u8]),
    /// Written in this call: a range of the key table's arena.
    Written(u32, u32),
    Cleared,
}

/// The keys of one call and their prefetched value state, borrowed from the host's frame.
#[derive(Debug, Default)]
pub(crate) struct KeyTable<'a> {
    keys: Vec<&'a [u8]>,
    slots: Vec<Slot<'a>>,
    values: usize,
    /// Values written in this call, back to back (no allocation per write).
    arena: Vec<u8>,
}

impl<'a> KeyTable<'a> {
    /// Indexes the key table of `frame`; returns it with the records or timers after it.
    pub(crate) fn read<E: Entry<'a>>(
        mut frame: KeyedFrame<'a, E>,
        values: usize,
    ) -> Result<(KeyTable<'a>, Counted<'a, E>), FrameError> {
        let n = frame.key_count() as usize;
        let mut keys = Vec::with_capacity(n.min(1 << 16));
        let mut slots = Vec::with_capacity((n * values).min(1 << 16));
        for entry in &mut frame {
            let entry = entry?;
            keys.push(entry.key);
            slots.extend(entry.values.map(|v| v.map_or(Slot::Absent, Slot::InFrame)));
        }
        let entries = frame.entries()?;
        Ok((
            KeyTable {
                keys,
                slots,
                values,
                arena: Vec::new(),
            },
            entries,
        ))
    }

    /// Number of keys.
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }
}

/// Everything an operator sees during one call.
pub(crate) struct RunCx<'a> {
    pub keys: KeyTable<'a>,
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
    pub(crate) fn new(state: &'a mut dyn StateAccess) -> Self {
        RunCx {
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
        Some(self.keys.keys[self.key? as usize])
    }

    pub(crate) fn value_slot(&self, slot: usize) -> Option<&[u8]> {
        let key = self.key? as usize;
        match self.keys.slots[key * self.keys.values + slot] {
            Slot::Absent | Slot::Cleared => None,
            Slot::InFrame(v) => Some(v),
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

    pub(crate) fn timer_op(&mut self, kind: TimerOpKind, ts: i64) -> Result<(), String> {
        let key = self.key.ok_or("timers need a keyed stream (use key_by)")?;
        TimerOp {
            kind,
            key_index: key,
            timestamp: ts,
        }
        .write(&mut self.timer_ops);
        Ok(())
    }

    /// Writes one output record: edge, timestamp, key (written by `key`), value, each
    /// encoded in place.
    pub(crate) fn write_record(&mut self, edge: u32, key: Option<WriteFn<'_>>, value: WriteFn<'_>) {
        write_output_record(
            &mut self.out,
            edge,
            self.ts,
            key.map(WriteWith),
            WriteWith(value),
        );
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
            StateWrite {
                key_index: (i / self.keys.values) as u32,
                state_index: value_states[i % self.keys.values],
                value,
            }
            .write(&mut w);
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

    fn host_error(&self, message: impl std::fmt::Display) -> Failure {
        Failure::new(&self.head_uid, message)
    }

    fn bad_frame(&self, e: FrameError) -> Failure {
        self.host_error(format_args!("{e} (from the host)"))
    }

    pub(crate) fn process(
        &mut self,
        frame: &[u8],
        watermark: i64,
        processing_time: i64,
        state: &mut dyn StateAccess,
        unrouted: Option<&mut Kept>,
    ) -> Result<CallResult, Failure> {
        let values = self.value_states.len();
        let (keys, records) = process_frame(frame, values)
            .and_then(|f| KeyTable::read(f, values))
            .map_err(|e| self.bad_frame(e))?;
        let mut cx = RunCx::new(state);
        cx.keys = keys;
        cx.watermark = watermark;
        cx.processing_time = processing_time;
        cx.unrouted = unrouted;
        cx.out.reserve(frame.len());
        for record in records {
            let record = record.map_err(|e| self.bad_frame(e))?;
            if let Some(key) = record.key_index.filter(|&k| k as usize >= cx.keys.len()) {
                return Err(self.host_error(format!("key index {key} out of range")));
            }
            cx.key = record.key_index;
            cx.ts = record.timestamp;
            self.head.record(record.edge, record.value, &mut cx)?;
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
        let values = self.value_states.len();
        let (keys, timers) = on_timers_frame(frame, values)
            .and_then(|f| KeyTable::read(f, values))
            .map_err(|e| self.bad_frame(e))?;
        let mut cx = RunCx::new(state);
        cx.keys = keys;
        cx.watermark = watermark;
        cx.processing_time = processing_time;
        cx.unrouted = unrouted;
        for timer in timers {
            // A domain byte other than 0 or 1 is a malformed frame (`weir_frame::Timer`).
            let timer = timer.map_err(|e| self.bad_frame(e))?;
            let key = timer.key_index;
            if key as usize >= cx.keys.len() {
                return Err(self.host_error(format!("timer key index {key} out of range")));
            }
            let domain = TimeDomain::from(timer.domain);
            cx.key = Some(key);
            cx.ts = (domain == TimeDomain::EventTime).then_some(timer.timestamp);
            self.head.timer(domain, timer.timestamp, &mut cx)?;
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
        let mut cx = RunCx::new(state);
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
        let mut cx = RunCx::new(state);
        cx.watermark = watermark;
        cx.processing_time = processing_time;
        cx.unrouted = unrouted;
        self.head.finish(&mut cx)?;
        self.head.end_of_call(&mut cx)?;
        Ok(self.finish_call(cx))
    }
}
