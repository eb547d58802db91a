//! Keyed process functions: per-key logic with state and timers (Flink's
//! `KeyedProcessFunction`).
//!
//! ```
//! use weir::prelude::*;
//!
//! const COUNT: ValueState<u64> = ValueState::new("count", 1);
//!
//! #[derive(Clone)]
//! struct Count;
//!
//! impl KeyedProcessFunction for Count {
//!     type Key = String;
//!     type In = String;
//!     type Out = (String, u64);
//!     const STATE: &'static [StateDescriptor] = &[COUNT.descriptor()];
//!
//!     fn process_element(&mut self, word: String, ctx: &mut Context<'_, '_, String, (String, u64)>) -> Result<()> {
//!         let n = ctx.value(&COUNT).get()?.unwrap_or(0) + 1;
//!         ctx.value(&COUNT).set(&n)?;
//!         ctx.emit((word, n))
//!     }
//! }
//! ```

use std::marker::PhantomData;

use weir_frame::TimerOpKind;

use crate::codec::{decode_postcard, encode_postcard, Data};
use crate::runtime::{BoxOp, Failure, Op, OpResult, RunCx, SideOutputs, TimeDomain};
use crate::state::{ListState, MapState, StateDescriptor, StateKind, ValueState};
use crate::stream::OutputTag;
use crate::{Error, Result};

/// Per-key logic with state and timers. Only `process_element` is required.
///
/// One instance runs in each parallel subtask; `Clone` makes those instances.
pub trait KeyedProcessFunction: Clone + 'static {
    /// The key type (what `key_by` returns).
    type Key: Data;
    /// Input records.
    type In: Data;
    /// Output records.
    type Out: Data;
    /// Every piece of keyed state the function uses.
    const STATE: &'static [StateDescriptor] = &[];

    /// Called for every record, with the record's key as the current key.
    fn process_element(
        &mut self,
        value: Self::In,
        ctx: &mut Context<'_, '_, Self::Key, Self::Out>,
    ) -> Result<()>;

    /// Called when a timer registered for the current key fires.
    fn on_timer(
        &mut self,
        _timestamp: i64,
        _domain: TimeDomain,
        _ctx: &mut Context<'_, '_, Self::Key, Self::Out>,
    ) -> Result<()> {
        Ok(())
    }

    /// Called once at the end of bounded input, after the final watermark.
    fn finish(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Resolves state handles to the operator's declared states.
pub(crate) struct StateTable {
    pub uid: String,
    pub states: Vec<StateDescriptor>,
    /// Value-slot index of each descriptor (value states only).
    pub slots: Vec<Option<usize>>,
}

impl StateTable {
    pub(crate) fn new(uid: &str, states: &[StateDescriptor]) -> Self {
        let mut next = 0;
        let slots = states
            .iter()
            .map(|s| {
                (s.kind == StateKind::Value).then(|| {
                    next += 1;
                    next - 1
                })
            })
            .collect();
        StateTable {
            uid: uid.to_string(),
            states: states.to_vec(),
            slots,
        }
    }

    pub(crate) fn index(&self, name: &str, kind: StateKind) -> Result<usize> {
        // Handles are constants: the name is usually the very string the descriptor holds,
        // so compare addresses before bytes (this runs on every state access).
        let same = |s: &StateDescriptor| {
            (s.name.as_ptr() == name.as_ptr() && s.name.len() == name.len()) || s.name == name
        };
        match self.states.iter().position(same) {
            Some(i) if self.states[i].kind == kind => Ok(i),
            Some(i) => Err(Error::msg(format!(
                "state '{name}' is declared as {:?} but used as {kind:?}",
                self.states[i].kind
            ))),
            None => Err(Error::msg(format!(
                "state '{name}' is not declared in STATE of operator '{}'",
                self.uid
            ))),
        }
    }
}

/// What a keyed function sees while handling one record or timer.
pub struct Context<'c, 'a, K, O> {
    pub(crate) cx: &'c mut RunCx<'a>,
    pub(crate) table: &'c StateTable,
    pub(crate) down: &'c mut BoxOp<O>,
    pub(crate) sides: &'c mut SideOutputs,
    pub(crate) key: Option<K>,
}

impl<'c, 'a, K: Data, O: Data> Context<'c, 'a, K, O> {
    /// The current key.
    pub fn key(&mut self) -> Result<&K> {
        if self.key.is_none() {
            let bytes = self
                .cx
                .key_bytes()
                .ok_or_else(|| Error::msg("no current key: the input is not keyed"))?;
            self.key = Some(decode_postcard(bytes)?);
        }
        Ok(self.key.as_ref().expect("just set"))
    }

    /// The current record's timestamp (or the timer's, in `on_timer`).
    pub fn timestamp(&self) -> Option<i64> {
        self.cx.ts
    }

    /// The operator's current event-time watermark.
    pub fn current_watermark(&self) -> i64 {
        self.cx.watermark
    }

    /// The host's processing time, in epoch milliseconds.
    pub fn current_processing_time(&self) -> i64 {
        self.cx.processing_time
    }

    /// Sends a record downstream with the current timestamp.
    pub fn emit(&mut self, value: O) -> Result<()> {
        self.down.element(value, self.cx).map_err(failure_to_error)
    }

    /// Sends a record to a side output.
    pub fn output<S: Data>(&mut self, tag: &OutputTag<S>, value: S) -> Result<()> {
        self.sides
            .emit(&self.table.uid, tag.name(), value, self.cx)
            .map_err(failure_to_error)
    }

    /// Value state of the current key.
    pub fn value<'s, T: Data>(&'s mut self, state: &ValueState<T>) -> ValueHandle<'s, 'a, T> {
        let slot = self
            .table
            .index(state.name(), StateKind::Value)
            .map(|i| self.table.slots[i].expect("value states have slots"));
        ValueHandle {
            cx: self.cx,
            slot,
            _type: PhantomData,
        }
    }

    /// List state of the current key.
    pub fn list<'s, T: Data>(&'s mut self, state: &ListState<T>) -> ListHandle<'s, 'a, T> {
        ListHandle {
            index: self.table.index(state.name(), StateKind::List),
            cx: self.cx,
            _type: PhantomData,
        }
    }

    /// Map state of the current key.
    pub fn map<'s, UK: Data, UV: Data>(
        &'s mut self,
        state: &MapState<UK, UV>,
    ) -> MapHandle<'s, 'a, UK, UV> {
        MapHandle {
            index: self.table.index(state.name(), StateKind::Map),
            cx: self.cx,
            _type: PhantomData,
        }
    }

    /// Fires `on_timer` for the current key when the watermark reaches `ts`. Registering
    /// the same timestamp twice fires once.
    pub fn register_event_time_timer(&mut self, ts: i64) -> Result<()> {
        self.cx
            .timer_op(TimerOpKind::RegisterEventTime, ts)
            .map_err(Error::msg)
    }

    /// Removes an event-time timer of the current key.
    pub fn delete_event_time_timer(&mut self, ts: i64) -> Result<()> {
        self.cx
            .timer_op(TimerOpKind::DeleteEventTime, ts)
            .map_err(Error::msg)
    }

    /// Fires `on_timer` for the current key when processing time reaches `ts`.
    pub fn register_processing_time_timer(&mut self, ts: i64) -> Result<()> {
        self.cx
            .timer_op(TimerOpKind::RegisterProcessingTime, ts)
            .map_err(Error::msg)
    }

    /// Removes a processing-time timer of the current key.
    pub fn delete_processing_time_timer(&mut self, ts: i64) -> Result<()> {
        self.cx
            .timer_op(TimerOpKind::DeleteProcessingTime, ts)
            .map_err(Error::msg)
    }
}

/// A value state of the current key.
pub struct ValueHandle<'s, 'a, T> {
    cx: &'s mut RunCx<'a>,
    slot: Result<usize>,
    _type: PhantomData<T>,
}

impl<T: Data> ValueHandle<'_, '_, T> {
    fn slot(&self) -> Result<usize> {
        match &self.slot {
            Ok(s) => Ok(*s),
            Err(e) => Err(Error::msg(e)),
        }
    }

    /// The current value, if any.
    pub fn get(&self) -> Result<Option<T>> {
        let slot = self.slot()?;
        self.cx.value_slot(slot).map(decode_postcard).transpose()
    }

    /// Replaces the value.
    pub fn set(&mut self, value: &T) -> Result<()> {
        let slot = self.slot()?;
        self.cx
            .write_value_slot(slot, |out| encode_postcard(value, out));
        Ok(())
    }

    /// Removes the value.
    pub fn clear(&mut self) -> Result<()> {
        let slot = self.slot()?;
        self.cx.clear_value_slot(slot);
        Ok(())
    }
}

fn current_key<'a>(cx: &RunCx<'a>) -> Result<&'a [u8]> {
    cx.key_bytes()
        .ok_or_else(|| Error::msg("keyed state needs a keyed stream (use key_by)"))
}

fn index(i: &Result<usize>) -> Result<u32> {
    match i {
        Ok(i) => Ok(*i as u32),
        Err(e) => Err(Error::msg(e)),
    }
}

/// A list state of the current key.
pub struct ListHandle<'s, 'a, T> {
    cx: &'s mut RunCx<'a>,
    index: Result<usize>,
    _type: PhantomData<T>,
}

impl<T: Data> ListHandle<'_, '_, T> {
    /// All elements.
    pub fn get(&mut self) -> Result<Vec<T>> {
        let (i, key) = (index(&self.index)?, current_key(self.cx)?);
        self.cx
            .state
            .list_get(i, key)
            .iter()
            .map(|b| decode_postcard(b))
            .collect()
    }

    /// Appends an element.
    pub fn add(&mut self, value: &T) -> Result<()> {
        let (i, key) = (index(&self.index)?, current_key(self.cx)?);
        let mut buf = Vec::new();
        encode_postcard(value, &mut buf);
        self.cx.state.list_add(i, key, &buf);
        Ok(())
    }

    /// Removes all elements.
    pub fn clear(&mut self) -> Result<()> {
        let (i, key) = (index(&self.index)?, current_key(self.cx)?);
        self.cx.state.list_clear(i, key);
        Ok(())
    }
}

/// A map state of the current key.
pub struct MapHandle<'s, 'a, K, V> {
    cx: &'s mut RunCx<'a>,
    index: Result<usize>,
    _type: PhantomData<(K, V)>,
}

impl<K: Data, V: Data> MapHandle<'_, '_, K, V> {
    fn user_key(k: &K) -> Vec<u8> {
        let mut buf = Vec::new();
        encode_postcard(k, &mut buf);
        buf
    }

    /// The value under `k`.
    pub fn get(&mut self, k: &K) -> Result<Option<V>> {
        let (i, key) = (index(&self.index)?, current_key(self.cx)?);
        self.cx
            .state
            .map_get(i, key, &Self::user_key(k))
            .map(|b| decode_postcard(&b))
            .transpose()
    }

    /// Sets the value under `k`.
    pub fn put(&mut self, k: &K, v: &V) -> Result<()> {
        let (i, key) = (index(&self.index)?, current_key(self.cx)?);
        let mut buf = Vec::new();
        encode_postcard(v, &mut buf);
        self.cx.state.map_put(i, key, &Self::user_key(k), &buf);
        Ok(())
    }

    /// Removes `k`.
    pub fn remove(&mut self, k: &K) -> Result<()> {
        let (i, key) = (index(&self.index)?, current_key(self.cx)?);
        self.cx.state.map_remove(i, key, &Self::user_key(k));
        Ok(())
    }

    /// All entries, ordered by the encoded user key.
    pub fn entries(&mut self) -> Result<Vec<(K, V)>> {
        let (i, key) = (index(&self.index)?, current_key(self.cx)?);
        self.cx
            .state
            .map_entries(i, key)
            .iter()
            .map(|(k, v)| Ok((decode_postcard(k)?, decode_postcard(v)?)))
            .collect()
    }

    /// Removes all entries.
    pub fn clear(&mut self) -> Result<()> {
        let (i, key) = (index(&self.index)?, current_key(self.cx)?);
        self.cx.state.map_clear(i, key);
        Ok(())
    }
}

/// Errors from downstream operators keep their own uid.
pub(crate) fn failure_to_error(f: Failure) -> Error {
    let mut e = Error::msg(f.message);
    e.operator = Some(f.operator);
    e
}

/// Turns an error from user code into a failure of `uid`, unless it came from downstream.
pub(crate) fn error_to_failure(uid: &str, e: Error) -> Failure {
    Failure::new(e.operator.as_deref().unwrap_or(uid), e.message())
}

/// Runs a [`KeyedProcessFunction`] in a chain.
pub(crate) struct KeyedProcessOp<F: KeyedProcessFunction> {
    pub f: F,
    pub table: StateTable,
    pub down: BoxOp<F::Out>,
    pub sides: SideOutputs,
}

impl<F: KeyedProcessFunction> Op<F::In> for KeyedProcessOp<F> {
    fn element(&mut self, value: F::In, cx: &mut RunCx<'_>) -> OpResult {
        let mut ctx = Context {
            cx,
            table: &self.table,
            down: &mut self.down,
            sides: &mut self.sides,
            key: None,
        };
        self.f
            .process_element(value, &mut ctx)
            .map_err(|e| error_to_failure(&self.table.uid, e))
    }

    fn timer(&mut self, domain: TimeDomain, ts: i64, cx: &mut RunCx<'_>) -> OpResult {
        let mut ctx = Context {
            cx,
            table: &self.table,
            down: &mut self.down,
            sides: &mut self.sides,
            key: None,
        };
        self.f
            .on_timer(ts, domain, &mut ctx)
            .map_err(|e| error_to_failure(&self.table.uid, e))
    }

    fn finish(&mut self, cx: &mut RunCx<'_>) -> OpResult {
        self.f
            .finish()
            .map_err(|e| error_to_failure(&self.table.uid, e))?;
        self.sides.finish(cx)?;
        self.down.finish(cx)
    }
}

#[cfg(test)]
mod tests {
    use crate::prelude::*;
    use crate::testing::Harness;

    const TIMEOUT: ValueState<i64> = ValueState::new("timeout", 1);

    /// Sets a check timer at ts and a timeout at ts + 3; the check cancels the timeout.
    #[derive(Clone)]
    struct CheckThenTimeout;

    impl KeyedProcessFunction for CheckThenTimeout {
        type Key = u8;
        type In = u8;
        type Out = i64;
        const STATE: &'static [StateDescriptor] = &[TIMEOUT.descriptor()];

        fn process_element(&mut self, _v: u8, ctx: &mut Context<'_, '_, u8, i64>) -> Result<()> {
            let ts = ctx.timestamp().unwrap_or(0);
            ctx.register_event_time_timer(ts)?;
            ctx.register_event_time_timer(ts + 3)?;
            ctx.value(&TIMEOUT).set(&(ts + 3))
        }

        fn on_timer(
            &mut self,
            ts: i64,
            _domain: TimeDomain,
            ctx: &mut Context<'_, '_, u8, i64>,
        ) -> Result<()> {
            if let Some(timeout) = ctx.value(&TIMEOUT).get()? {
                if timeout != ts {
                    ctx.delete_event_time_timer(timeout)?;
                    ctx.value(&TIMEOUT).clear()?;
                }
            }
            ctx.emit(ts)
        }
    }

    #[test]
    fn a_timer_deleted_by_an_earlier_timer_does_not_fire() {
        let mut h =
            Harness::new(|s: DataStream<u8>| s.key_by(|k: &u8| *k).process(CheckThenTimeout))
                .unwrap();
        h.process(1, Some(5)).unwrap();
        h.advance_watermark(10).unwrap();
        assert_eq!(h.take_output::<i64>().unwrap(), vec![5]);
        assert_eq!(h.pending_timers(), 0);
    }
}
