//! Unit-test operators natively with plain `cargo test`: no Wasm, no cluster.
//!
//! [`Harness`] runs a pipeline the way the host does — records in batch frames, keyed state
//! and timers kept outside the guest code, timers fired as the watermark or processing time
//! advance — so a test sees what a real run would.
//!
//! ```
//! use weir::prelude::*;
//! use weir::testing::Harness;
//!
//! const SUM: ValueState<i64> = ValueState::new("sum", 1);
//!
//! #[derive(Clone)]
//! struct RunningSum;
//!
//! impl KeyedProcessFunction for RunningSum {
//!     type Key = String;
//!     type In = (String, i64);
//!     type Out = (String, i64);
//!     const STATE: &'static [StateDescriptor] = &[SUM.descriptor()];
//!
//!     fn process_element(&mut self, (k, v): (String, i64), ctx: &mut Context<'_, '_, String, (String, i64)>) -> Result<()> {
//!         let sum = ctx.value(&SUM).get()?.unwrap_or(0) + v;
//!         ctx.value(&SUM).set(&sum)?;
//!         ctx.emit((k, sum))
//!     }
//! }
//!
//! let mut h = Harness::new(|input: DataStream<(String, i64)>| {
//!     input.key_by(|r: &(String, i64)| r.0.clone()).process(RunningSum)
//! }).unwrap();
//! h.process(("a".into(), 2), Some(1)).unwrap();
//! h.process(("a".into(), 3), Some(2)).unwrap();
//! assert_eq!(h.take_output::<(String, i64)>().unwrap(), vec![("a".into(), 2), ("a".into(), 5)]);
//! assert_eq!(h.value_state(&"a".to_string(), &SUM).unwrap(), Some(5));
//! ```

use std::any::Any;
use std::collections::{BTreeMap, BTreeSet};

use weir_frame::{
    output_records, state_writes, timer_ops, write_key, write_keyed_frame, write_value, Entry,
    FrameError, ProcessRecord, Timer,
};

use crate::codec::{decode_postcard, encode_postcard, Data, SinkFormat};
use crate::guest::{build_graph, open_chain, to_wit_plan};
use crate::runtime::{BoxOp, CallResult, Chain, Kept, RunCx, StateAccess, TimeDomain};
use crate::state::{StateDescriptor, StateKind, ValueState};
use crate::stream::OutputTag;
use crate::stream::{DataStream, NodeKindDef, StreamEnv};
use crate::{Error, Result};

/// A summary of a job's plan, for tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanView {
    /// Job name.
    pub name: String,
    /// (uid, name) of every node.
    pub nodes: Vec<(String, String)>,
    /// (source index, target index, side output) of every edge.
    pub edges: Vec<(u32, u32, Option<String>)>,
}

/// Builds a job's graph natively and summarizes it.
pub fn plan_of(
    build: impl FnOnce(&mut StreamEnv) -> Result<()>,
    args: &[(String, String)],
) -> Result<PlanView> {
    let env = build_graph(build, args)?;
    let plan = to_wit_plan(&env.graph.borrow());
    Ok(PlanView {
        name: plan.name,
        nodes: plan.nodes.into_iter().map(|n| (n.uid, n.name)).collect(),
        edges: plan
            .edges
            .into_iter()
            .map(|e| (e.source, e.target, e.side_output))
            .collect(),
    })
}

type MapStates = BTreeMap<(u32, Vec<u8>), BTreeMap<Vec<u8>, Vec<u8>>>;

/// State the harness keeps in place of the host.
#[derive(Default)]
pub(crate) struct NativeState {
    values: BTreeMap<(u32, Vec<u8>), Vec<u8>>,
    lists: BTreeMap<(u32, Vec<u8>), Vec<Vec<u8>>>,
    maps: MapStates,
}

impl StateAccess for NativeState {
    fn list_get(&mut self, state: u32, key: &[u8]) -> Vec<Vec<u8>> {
        self.lists
            .get(&(state, key.to_vec()))
            .cloned()
            .unwrap_or_default()
    }
    fn list_add(&mut self, state: u32, key: &[u8], value: &[u8]) {
        self.lists
            .entry((state, key.to_vec()))
            .or_default()
            .push(value.to_vec());
    }
    fn list_clear(&mut self, state: u32, key: &[u8]) {
        self.lists.remove(&(state, key.to_vec()));
    }
    fn map_get(&mut self, state: u32, key: &[u8], user_key: &[u8]) -> Option<Vec<u8>> {
        self.maps
            .get(&(state, key.to_vec()))
            .and_then(|m| m.get(user_key).cloned())
    }
    fn map_put(&mut self, state: u32, key: &[u8], user_key: &[u8], value: &[u8]) {
        self.maps
            .entry((state, key.to_vec()))
            .or_default()
            .insert(user_key.to_vec(), value.to_vec());
    }
    fn map_remove(&mut self, state: u32, key: &[u8], user_key: &[u8]) {
        if let Some(m) = self.maps.get_mut(&(state, key.to_vec())) {
            m.remove(user_key);
        }
    }
    fn map_entries(&mut self, state: u32, key: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.maps
            .get(&(state, key.to_vec()))
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }
    fn map_clear(&mut self, state: u32, key: &[u8]) {
        self.maps.remove(&(state, key.to_vec()));
    }
}

/// Runs one chain of operators natively, as the host would.
pub struct Harness<I> {
    chain: Chain,
    input: BoxOp<I>,
    states: Vec<StateDescriptor>,
    state: NativeState,
    /// (timestamp, domain, key)
    timers: BTreeSet<(i64, TimeDomain, Vec<u8>)>,
    watermark: i64,
    processing_time: i64,
    output: Kept,
}

impl<I: Data> Harness<I> {
    /// Builds the pipeline `build` makes from an input stream of `I`. Every operator it adds
    /// must chain (no second `key_by`, `rebalance` or `union`).
    pub fn new<O: Data>(build: impl FnOnce(DataStream<I>) -> DataStream<O>) -> Result<Self> {
        Self::with_args(&[], |env| {
            build(env.harness_input::<I>());
        })
    }

    /// Like [`Harness::new`], with job arguments.
    pub fn with_args(
        args: &[(String, String)],
        build: impl FnOnce(&mut StreamEnv),
    ) -> Result<Self> {
        let env = build_graph(
            |env| {
                build(env);
                Ok(())
            },
            args,
        )?;
        let g = env.graph.borrow();
        let nodes: Vec<u32> = (0..g.nodes.len() as u32)
            .filter(|&i| matches!(g.nodes[i as usize].kind, NodeKindDef::Operator))
            .collect();
        let chain = open_chain(&g, &nodes, 0, 1).map_err(|f| {
            Error::msg(format!(
                "operator '{}': {} (the harness runs one chain of operators, as Flink's \
                 operator test harnesses run one operator: test the parts before and after a \
                 key_by separately)",
                f.operator, f.message
            ))
        })?;
        let input_edge = g
            .edges
            .iter()
            .position(|e| e.source == 0)
            .ok_or_else(|| Error::msg("the pipeline does not read its input"))?;
        let input: Box<dyn Any> =
            (g.edges[input_edge].writer)(input_edge as u32, SinkFormat::Postcard);
        let input = *input
            .downcast::<BoxOp<I>>()
            .map_err(|_| Error::msg("input type mismatch"))?;
        let head = nodes[0] as usize;
        Ok(Harness {
            chain,
            input,
            states: g.nodes[head].states.clone(),
            state: NativeState::default(),
            timers: BTreeSet::new(),
            watermark: i64::MIN,
            processing_time: 0,
            output: Vec::new(),
        })
    }

    /// The current watermark.
    pub fn watermark(&self) -> i64 {
        self.watermark
    }

    fn value_slots(&self) -> Vec<u32> {
        Chain::value_slots(&self.states)
    }

    /// A `process` or `on-timers` frame: the key table of `keys` with their value state as
    /// the host would prefetch it, then `body` (`count` entries).
    fn keyed_frame(&self, keys: &[Vec<u8>], count: u32, body: &[u8]) -> Vec<u8> {
        let mut table = Vec::new();
        for k in keys {
            write_key(&mut table, k);
            for s in self.value_slots() {
                let v = self.state.values.get(&(s, k.clone()));
                write_value(&mut table, v.map(Vec::as_slice));
            }
        }
        let mut frame = Vec::new();
        write_keyed_frame(&mut frame, keys.len() as u32, &table, count, body);
        frame
    }

    /// The `on-timers` frame for `due` and its keys.
    fn timers_frame(&self, due: &[(i64, TimeDomain, Vec<u8>)]) -> (Vec<Vec<u8>>, Vec<u8>) {
        let mut keys: Vec<Vec<u8>> = Vec::new();
        let mut body = Vec::new();
        for (ts, domain, key) in due {
            let k = match keys.iter().position(|k| k == key) {
                Some(k) => k,
                None => {
                    keys.push(key.clone());
                    keys.len() - 1
                }
            };
            Timer {
                key_index: k as u32,
                domain: (*domain).into(),
                timestamp: *ts,
            }
            .write(&mut body);
        }
        let frame = self.keyed_frame(&keys, due.len() as u32, &body);
        (keys, frame)
    }

    fn apply(&mut self, keys: &[Vec<u8>], r: CallResult) -> Result<()> {
        let bad = |e: FrameError| Error::msg(format!("malformed result: {e}"));
        let key = |i: u32| {
            keys.get(i as usize)
                .cloned()
                .ok_or_else(|| Error::msg(format!("malformed result: no key index {i}")))
        };
        for w in state_writes(&r.state_writes) {
            let w = w.map_err(bad)?;
            let k = (w.state_index, key(w.key_index)?);
            match w.value {
                Some(v) => self.state.values.insert(k, v.to_vec()),
                None => self.state.values.remove(&k),
            };
        }
        for op in timer_ops(&r.timer_ops) {
            let op = op.map_err(bad)?;
            let entry = (op.timestamp, op.kind.domain().into(), key(op.key_index)?);
            if op.kind.is_delete() {
                self.timers.remove(&entry);
            } else {
                self.timers.insert(entry);
            }
        }
        for rec in output_records(&r.output) {
            let rec = rec.map_err(bad)?;
            self.output.push((
                format!("edge-{}", rec.edge),
                rec.timestamp,
                rec.value.to_vec(),
            ));
        }
        Ok(())
    }

    fn check(r: std::result::Result<CallResult, crate::runtime::Failure>) -> Result<CallResult> {
        r.map_err(|f| Error::msg(format!("operator '{}' failed: {}", f.operator, f.message)))
    }

    /// Processes one record with an optional event timestamp.
    pub fn process(&mut self, value: I, timestamp: Option<i64>) -> Result<()> {
        // Encode the record as the upstream operator would (key included).
        let mut none = NativeState::default();
        let mut cx = RunCx::new(&mut none);
        cx.ts = timestamp;
        self.input
            .element(value, &mut cx)
            .map_err(|f| Error::msg(f.message))?;
        let out = std::mem::take(&mut cx.out);
        drop(cx);
        let rec = output_records(&out)
            .next()
            .ok_or_else(|| Error::msg("the input writer wrote no record"))?
            .map_err(|e| Error::msg(e.to_string()))?;
        let keys: Vec<Vec<u8>> = rec.key.map(<[u8]>::to_vec).into_iter().collect();
        let mut body = Vec::new();
        ProcessRecord {
            edge: rec.edge,
            timestamp: rec.timestamp,
            key_index: rec.key.map(|_| 0),
            value: rec.value,
        }
        .write(&mut body);
        let frame = self.keyed_frame(&keys, 1, &body);
        let r = Self::check(self.chain.process(
            &frame,
            self.watermark,
            self.processing_time,
            &mut self.state,
            Some(&mut self.output),
        ))?;
        self.apply(&keys, r)
    }

    fn fire(&mut self, domain: TimeDomain, upto: i64) -> Result<()> {
        // One timestamp at a time, as the host does: a callback may delete a later timer.
        loop {
            let next = self
                .timers
                .iter()
                .filter(|(ts, d, _)| *d == domain && *ts <= upto)
                .map(|(ts, _, _)| *ts)
                .min();
            let due: Vec<_> = self
                .timers
                .iter()
                .filter(|(ts, d, _)| *d == domain && Some(*ts) == next)
                .cloned()
                .collect();
            if due.is_empty() {
                return Ok(());
            }
            for t in &due {
                self.timers.remove(t);
            }
            let (keys, frame) = self.timers_frame(&due);
            let r = Self::check(self.chain.on_timers(
                &frame,
                self.watermark,
                self.processing_time,
                &mut self.state,
                Some(&mut self.output),
            ))?;
            self.apply(&keys, r)?;
        }
    }

    /// Advances event time: fires every event-time timer at or below `watermark`.
    pub fn advance_watermark(&mut self, watermark: i64) -> Result<()> {
        if watermark > self.watermark {
            self.watermark = watermark;
            self.fire(TimeDomain::EventTime, watermark)?;
        }
        Ok(())
    }

    /// Advances processing time: fires every processing-time timer at or below `now`.
    pub fn advance_processing_time(&mut self, now: i64) -> Result<()> {
        if now > self.processing_time {
            self.processing_time = now;
            self.fire(TimeDomain::ProcessingTime, now)?;
        }
        Ok(())
    }

    /// Ends the input: final watermark, then every operator's `finish`.
    pub fn finish(&mut self) -> Result<()> {
        self.advance_watermark(i64::MAX)?;
        let r = Self::check(self.chain.finish(
            self.watermark,
            self.processing_time,
            &mut self.state,
            Some(&mut self.output),
        ))?;
        self.apply(&[], r)
    }

    /// Takes the main output so far.
    pub fn take_output<O: Data>(&mut self) -> Result<Vec<O>> {
        Ok(self
            .take_output_with_timestamps::<O>()?
            .into_iter()
            .map(|(v, _)| v)
            .collect())
    }

    /// Takes the main output so far, with each record's timestamp.
    pub fn take_output_with_timestamps<O: Data>(&mut self) -> Result<Vec<(O, Option<i64>)>> {
        self.take_named("")
    }

    /// Takes what was sent to side output `tag` so far.
    pub fn take_side_output<S: Data>(&mut self, tag: &OutputTag<S>) -> Result<Vec<S>> {
        Ok(self
            .take_named::<S>(tag.name())?
            .into_iter()
            .map(|(v, _)| v)
            .collect())
    }

    fn take_named<O: Data>(&mut self, name: &str) -> Result<Vec<(O, Option<i64>)>> {
        let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.output)
            .into_iter()
            .partition(|(n, _, _)| n == name);
        self.output = rest;
        mine.into_iter()
            .map(|(_, ts, b)| Ok((decode_postcard(&b)?, ts)))
            .collect()
    }

    /// The value state `state` holds for `key`.
    pub fn value_state<K: Data, T: Data>(
        &self,
        key: &K,
        state: &ValueState<T>,
    ) -> Result<Option<T>> {
        let i = self
            .states
            .iter()
            .position(|s| s.name == state.name() && s.kind == StateKind::Value)
            .ok_or_else(|| Error::msg(format!("no value state '{}'", state.name())))?;
        let mut k = Vec::new();
        encode_postcard(key, &mut k);
        self.state
            .values
            .get(&(i as u32, k))
            .map(|b| decode_postcard(b))
            .transpose()
    }

    /// Number of pending timers (event and processing time).
    pub fn pending_timers(&self) -> usize {
        self.timers.len()
    }
}

impl StreamEnv {
    /// An input stream fed by the test harness.
    fn harness_input<I: Data>(&self) -> DataStream<I> {
        self.connector_source("harness-input", "harness", vec![], decode_postcard::<I>)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prelude::*;

    #[derive(Clone)]
    struct Alarm;

    impl KeyedProcessFunction for Alarm {
        type Key = u8;
        type In = u8;
        type Out = i64;

        fn process_element(&mut self, _v: u8, ctx: &mut Context<'_, '_, u8, i64>) -> Result<()> {
            ctx.register_event_time_timer(10)
        }

        fn on_timer(
            &mut self,
            ts: i64,
            _domain: TimeDomain,
            ctx: &mut Context<'_, '_, u8, i64>,
        ) -> Result<()> {
            ctx.emit(ts)
        }
    }

    #[test]
    fn a_timer_frame_with_an_unknown_domain_is_refused() {
        let mut h = Harness::new(|s: DataStream<u8>| s.key_by(|k: &u8| *k).process(Alarm)).unwrap();
        h.process(1, Some(5)).unwrap();
        let due: Vec<_> = h.timers.iter().cloned().collect();
        let (_, mut frame) = h.timers_frame(&due);
        // As a broken host would send it: a domain byte that is neither 0 nor 1 (the last
        // timer ends with `u8 domain, i64 timestamp`).
        let at = frame.len() - 9;
        assert_eq!(frame[at], weir_frame::DOMAIN_EVENT_TIME);
        frame[at] = 2;
        let f = h
            .chain
            .on_timers(&frame, 10, 0, &mut h.state, None)
            .err()
            .unwrap();
        assert_eq!(
            f.message,
            format!("malformed on-timers frame: unknown timer domain at byte {at} (from the host)")
        );
    }
}
