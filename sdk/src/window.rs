//! Windows over keyed streams: tumbling, sliding and session windows, in event or
//! processing time, with aggregate or reduce functions, allowed lateness, and late records
//! sent to a side output.
//!
//! ```
//! use weir::prelude::*;
//!
//! #[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
//! struct Event { key: String, value: i64, ts: i64 }
//!
//! const LATE: OutputTag<Event> = OutputTag::new("late");
//!
//! fn build(env: &mut StreamEnv) -> Result<()> {
//!     let sums = env
//!         .file_json_lines::<Event>(env.arg("input")?)
//!         .assign_timestamps_and_watermarks(WatermarkStrategy::bounded_out_of_orderness(2_000), |e| e.ts)
//!         .key_by(|e: &Event| e.key.clone())
//!         .window(WindowAssigner::tumbling_event_time(10_000))
//!         .side_output_late_data(&LATE)
//!         .reduce(|a: Event, b: Event| Event { value: a.value + b.value, ..a },
//!                 |key: &String, w: &TimeWindow, e: Event| (key.clone(), w.start, e.value));
//!     sums.sink(Sink::print());
//!     sums.side_output(&LATE).sink(Sink::print());
//!     Ok(())
//! }
//! # weir::testing::plan_of(build, &[("input".into(), "x".into())]).unwrap();
//! ```

use serde::{Deserialize, Serialize};
use weir_frame::TimerOpKind;

use crate::codec::{decode_postcard, encode_postcard, Data};
use crate::process::{error_to_failure, StateTable};
use crate::runtime::{BoxOp, Failure, Op, OpResult, RunCx, SideOutputs, TimeDomain};
use crate::state::{StateDescriptor, StateKind};
use crate::stream::{DataStream, KeyedStream, OutputTag};
use crate::{Error, Result};

/// A half-open interval of time `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TimeWindow {
    /// First millisecond in the window.
    pub start: i64,
    /// First millisecond after the window.
    pub end: i64,
}

impl TimeWindow {
    /// The last timestamp that belongs to the window (`end - 1`).
    pub fn max_timestamp(&self) -> i64 {
        self.end - 1
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Tumbling { size: i64, offset: i64 },
    Sliding { size: i64, slide: i64, offset: i64 },
    Session { gap: i64 },
}

/// Assigns records to windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowAssigner {
    shape: Shape,
    domain: TimeDomain,
}

fn window_start(ts: i64, offset: i64, size: i64) -> i64 {
    ts - (ts - offset).rem_euclid(size)
}

impl WindowAssigner {
    /// Back-to-back windows of `size_ms`, aligned to the epoch, in event time.
    pub fn tumbling_event_time(size_ms: i64) -> Self {
        Self::new(
            Shape::Tumbling {
                size: size_ms,
                offset: 0,
            },
            TimeDomain::EventTime,
        )
    }

    /// Back-to-back windows of `size_ms` in processing time.
    pub fn tumbling_processing_time(size_ms: i64) -> Self {
        Self::new(
            Shape::Tumbling {
                size: size_ms,
                offset: 0,
            },
            TimeDomain::ProcessingTime,
        )
    }

    /// Windows of `size_ms` starting every `slide_ms`, in event time.
    pub fn sliding_event_time(size_ms: i64, slide_ms: i64) -> Self {
        Self::new(
            Shape::Sliding {
                size: size_ms,
                slide: slide_ms,
                offset: 0,
            },
            TimeDomain::EventTime,
        )
    }

    /// Windows of `size_ms` starting every `slide_ms`, in processing time.
    pub fn sliding_processing_time(size_ms: i64, slide_ms: i64) -> Self {
        Self::new(
            Shape::Sliding {
                size: size_ms,
                slide: slide_ms,
                offset: 0,
            },
            TimeDomain::ProcessingTime,
        )
    }

    /// Per-key sessions that close after `gap_ms` without records, in event time.
    pub fn event_time_session(gap_ms: i64) -> Self {
        Self::new(Shape::Session { gap: gap_ms }, TimeDomain::EventTime)
    }

    /// Per-key sessions that close after `gap_ms` without records, in processing time.
    pub fn processing_time_session(gap_ms: i64) -> Self {
        Self::new(Shape::Session { gap: gap_ms }, TimeDomain::ProcessingTime)
    }

    fn new(shape: Shape, domain: TimeDomain) -> Self {
        WindowAssigner { shape, domain }
    }

    /// Shifts tumbling or sliding windows by `offset_ms` from the epoch.
    pub fn with_offset(mut self, offset_ms: i64) -> Self {
        match &mut self.shape {
            Shape::Tumbling { offset, .. } | Shape::Sliding { offset, .. } => *offset = offset_ms,
            Shape::Session { .. } => {}
        }
        self
    }

    /// The windows a record at `ts` belongs to.
    pub fn assign(&self, ts: i64) -> Vec<TimeWindow> {
        let mut out = Vec::new();
        self.assign_into(ts, &mut out);
        out
    }

    /// The windows a record at `ts` belongs to, into `out` (cleared first).
    pub fn assign_into(&self, ts: i64, out: &mut Vec<TimeWindow>) {
        out.clear();
        match self.shape {
            Shape::Tumbling { size, offset } => {
                let start = window_start(ts, offset, size);
                out.push(TimeWindow {
                    start,
                    end: start + size,
                });
            }
            Shape::Sliding {
                size,
                slide,
                offset,
            } => {
                let mut start = window_start(ts, offset, slide);
                while start > ts - size {
                    out.push(TimeWindow {
                        start,
                        end: start + size,
                    });
                    start -= slide;
                }
            }
            Shape::Session { gap } => out.push(TimeWindow {
                start: ts,
                end: ts + gap,
            }),
        }
    }

    fn validate(&self) -> std::result::Result<(), String> {
        match self.shape {
            Shape::Tumbling { size, .. } if size <= 0 => Err("window size must be positive".into()),
            Shape::Sliding { size, slide, .. } if size <= 0 || slide <= 0 => {
                Err("window size and slide must be positive".into())
            }
            Shape::Session { gap } if gap <= 0 => Err("session gap must be positive".into()),
            _ => Ok(()),
        }
    }
}

/// Incremental aggregation of a window's records (Flink's `AggregateFunction`).
pub trait AggregateFunction: Clone + 'static {
    /// Input records.
    type In: Data;
    /// The running state of one window.
    type Acc: Data;
    /// The window's result.
    type Out: Data;
    /// An empty accumulator.
    fn create_accumulator(&self) -> Self::Acc;
    /// Adds a record.
    fn add(&self, value: &Self::In, acc: &mut Self::Acc);
    /// The result of a window.
    fn get_result(&self, acc: &Self::Acc) -> Self::Out;
    /// Combines two accumulators (session windows merge).
    fn merge(&self, a: Self::Acc, b: Self::Acc) -> Self::Acc;
}

/// A keyed stream cut into windows.
pub struct WindowedStream<K, T> {
    keyed: KeyedStream<K, T>,
    assigner: WindowAssigner,
    allowed_lateness: i64,
    late_tag: Option<&'static str>,
}

impl<K: Data, T: Data> KeyedStream<K, T> {
    /// Groups each key's records into windows.
    pub fn window(&self, assigner: WindowAssigner) -> WindowedStream<K, T> {
        WindowedStream {
            keyed: KeyedStream {
                stream: self.stream.clone(),
                key: self.key.clone(),
            },
            assigner,
            allowed_lateness: 0,
            late_tag: None,
        }
    }
}

const CONTENTS: StateDescriptor = StateDescriptor {
    name: "window-contents",
    kind: StateKind::Value,
    version: 1,
    ttl: None,
};

impl<K: Data, T: Data> WindowedStream<K, T> {
    /// Keeps windows open `ms` past their end for late records, which re-fire the window.
    pub fn allowed_lateness(mut self, ms: i64) -> Self {
        self.allowed_lateness = ms.max(0);
        self
    }

    /// Sends records too late for any window to the side output `tag` (otherwise dropped).
    pub fn side_output_late_data(mut self, tag: &OutputTag<T>) -> Self {
        self.late_tag = Some(tag.name());
        self
    }

    /// Aggregates each window with `agg`, then turns (key, window, result) into output.
    pub fn aggregate<A, O, F>(&self, agg: A, result: F) -> DataStream<O>
    where
        A: AggregateFunction<In = T>,
        O: Data,
        F: Fn(&K, &TimeWindow, A::Out) -> O + Clone + 'static,
    {
        let (assigner, lateness, late_tag) = (self.assigner, self.allowed_lateness, self.late_tag);
        DataStream::operator(
            &[(&self.keyed.stream, Some(self.keyed.key_writer()))],
            "window",
            vec![CONTENTS],
            move |open, down| {
                assigner
                    .validate()
                    .map_err(|e| Failure::new(&open.uid, e))?;
                Ok(Box::new(WindowOp::<K, A, O, F> {
                    assigner,
                    lateness: if assigner.domain == TimeDomain::EventTime {
                        lateness
                    } else {
                        0
                    },
                    late_tag,
                    agg: agg.clone(),
                    result: result.clone(),
                    table: StateTable::new(&open.uid, &open.states),
                    down,
                    sides: open.sides,
                    cache: Vec::new(),
                    touched: Vec::new(),
                    seen: Vec::new(),
                    scratch: Vec::new(),
                    _key: std::marker::PhantomData,
                }))
            },
        )
    }

    /// Reduces each window's records pairwise with `reduce`, then turns
    /// (key, window, reduced record) into output.
    pub fn reduce<O, R, F>(&self, reduce: R, result: F) -> DataStream<O>
    where
        O: Data,
        R: Fn(T, T) -> T + Clone + 'static,
        F: Fn(&K, &TimeWindow, T) -> O + Clone + 'static,
    {
        self.aggregate(
            ReduceAgg(reduce, std::marker::PhantomData),
            move |k, w, v| result(k, w, v.expect("a fired window holds at least one record")),
        )
    }
}

#[derive(Clone)]
struct ReduceAgg<R, T>(R, std::marker::PhantomData<fn() -> T>);

impl<T: Data, R: Fn(T, T) -> T + Clone + 'static> AggregateFunction for ReduceAgg<R, T> {
    type In = T;
    type Acc = Option<T>;
    type Out = Option<T>;

    fn create_accumulator(&self) -> Option<T> {
        None
    }

    fn add(&self, value: &T, acc: &mut Option<T>) {
        *acc = Some(match acc.take() {
            Some(a) => (self.0)(a, value.clone()),
            None => value.clone(),
        });
    }

    fn get_result(&self, acc: &Option<T>) -> Option<T> {
        acc.clone()
    }

    fn merge(&self, a: Option<T>, b: Option<T>) -> Option<T> {
        match (a, b) {
            (Some(a), Some(b)) => Some((self.0)(a, b)),
            (a, b) => a.or(b),
        }
    }
}

struct WindowOp<K, A: AggregateFunction, O, F> {
    assigner: WindowAssigner,
    lateness: i64,
    late_tag: Option<&'static str>,
    agg: A,
    result: F,
    table: StateTable,
    down: BoxOp<O>,
    sides: SideOutputs,
    /// Decoded contents of the keys touched in the current call, by key index; encoded
    /// and written back once per key at the end of the call.
    cache: Vec<Option<Contents<A::Acc>>>,
    touched: Vec<u32>,
    seen: Vec<bool>,
    scratch: Vec<TimeWindow>,
    _key: std::marker::PhantomData<fn() -> K>,
}

type Contents<Acc> = Vec<(TimeWindow, Acc)>;

impl<K, A, O, F> WindowOp<K, A, O, F>
where
    K: Data,
    A: AggregateFunction,
    O: Data,
    F: Fn(&K, &TimeWindow, A::Out) -> O,
{
    fn fail(&self, e: impl std::fmt::Display) -> Failure {
        Failure::new(&self.table.uid, e)
    }

    fn load(&mut self, cx: &RunCx<'_>) -> std::result::Result<Contents<A::Acc>, Failure> {
        let key = cx
            .key
            .ok_or_else(|| self.fail("windows need a keyed stream"))? as usize;
        if let Some(c) = self.cache.get_mut(key).and_then(Option::take) {
            return Ok(c);
        }
        match cx.value_slot(0) {
            Some(b) => decode_postcard(b).map_err(|e| self.fail(e)),
            None => Ok(Vec::new()),
        }
    }

    fn store(&mut self, cx: &mut RunCx<'_>, contents: Contents<A::Acc>) {
        let Some(key) = cx.key else { return };
        let i = key as usize;
        if self.cache.len() <= i {
            self.cache.resize_with(i + 1, || None);
            self.seen.resize(i + 1, false);
        }
        if !self.seen[i] {
            self.seen[i] = true;
            self.touched.push(key);
        }
        self.cache[i] = Some(contents);
    }

    fn write_back(&mut self, cx: &mut RunCx<'_>) {
        let saved = cx.key;
        for key in std::mem::take(&mut self.touched) {
            if let Some(contents) = self.cache.get_mut(key as usize).and_then(Option::take) {
                cx.key = Some(key);
                if contents.is_empty() {
                    cx.clear_value_slot(0);
                } else {
                    cx.write_value_slot(0, |out| encode_postcard(&contents, out));
                }
            }
        }
        self.cache.clear();
        self.seen.clear();
        cx.key = saved;
    }

    fn cleanup_time(&self, w: &TimeWindow) -> i64 {
        w.max_timestamp().saturating_add(self.lateness)
    }

    /// Registers (or deletes) a window's timers: one to fire it at its end, unless the
    /// watermark is already past that (the window then fires per record, as in Flink), and
    /// one to purge it when the allowed lateness has passed.
    fn register(&self, cx: &mut RunCx<'_>, w: &TimeWindow, delete: bool) -> OpResult {
        let op = TimerOpKind::new(self.assigner.domain.into(), delete);
        let past =
            self.assigner.domain == TimeDomain::EventTime && w.max_timestamp() <= cx.watermark;
        if delete || !past {
            cx.timer_op(op, w.max_timestamp())
                .map_err(|e| self.fail(e))?;
        }
        if self.lateness > 0 {
            cx.timer_op(op, self.cleanup_time(w))
                .map_err(|e| self.fail(e))?;
        }
        Ok(())
    }

    fn fire(&mut self, cx: &mut RunCx<'_>, w: &TimeWindow, acc: &A::Acc) -> OpResult {
        let key: K = decode_postcard(cx.key_bytes().ok_or_else(|| self.fail("no key"))?)
            .map_err(|e| self.fail(e))?;
        let out = (self.result)(&key, w, self.agg.get_result(acc));
        let ts = cx.ts;
        cx.ts = Some(w.max_timestamp());
        let r = self.down.element(out, cx);
        cx.ts = ts;
        r
    }

    fn now(&self, cx: &RunCx<'_>) -> Result<i64> {
        match self.assigner.domain {
            TimeDomain::EventTime => cx.ts.ok_or_else(|| {
                Error::msg(
                    "record has no timestamp: assign timestamps and watermarks before an \
                     event-time window",
                )
            }),
            TimeDomain::ProcessingTime => Ok(cx.processing_time),
        }
    }

    /// Adds a record to its live windows (or sends it to the late output if none is).
    fn add(&mut self, value: A::In, live: &[TimeWindow], cx: &mut RunCx<'_>) -> OpResult {
        let event_time = self.assigner.domain == TimeDomain::EventTime;
        let wm = cx.watermark;
        if live.is_empty() {
            if let Some(tag) = self.late_tag {
                return self.sides.emit(&self.table.uid, tag, value, cx);
            }
            return Ok(());
        }
        let mut contents = self.load(cx)?;
        if self.is_session() && event_time {
            let late = live.iter().all(|w| {
                self.cleanup_time(w) <= wm && !contents.iter().any(|(cw, _)| overlaps(cw, w))
            });
            if late {
                self.store(cx, contents);
                if let Some(tag) = self.late_tag {
                    return self.sides.emit(&self.table.uid, tag, value, cx);
                }
                return Ok(());
            }
        }
        let mut fire_now = Vec::new();
        for &w in live {
            let i = if let Shape::Session { .. } = self.assigner.shape {
                self.merge_session(cx, &mut contents, w)?
            } else if let Some(i) = contents.iter().position(|(cw, _)| *cw == w) {
                i
            } else {
                self.register(cx, &w, false)?;
                contents.push((w, self.agg.create_accumulator()));
                contents.len() - 1
            };
            self.agg.add(&value, &mut contents[i].1);
            if event_time && contents[i].0.max_timestamp() <= wm {
                fire_now.push(i);
            }
        }
        for i in fire_now {
            let (w, acc) = contents[i].clone();
            self.fire(cx, &w, &acc)?;
        }
        self.store(cx, contents);
        Ok(())
    }

    fn is_session(&self) -> bool {
        matches!(self.assigner.shape, Shape::Session { .. })
    }

    /// Merges `w` with every session it overlaps or touches; returns the merged session's
    /// index. Timers of absorbed sessions are left to fire: a timer fires only the windows
    /// that end exactly then and purges only those past their lateness, so a stale one does
    /// nothing — while deleting it could remove a timer another session shares.
    fn merge_session(
        &self,
        cx: &mut RunCx<'_>,
        contents: &mut Contents<A::Acc>,
        w: TimeWindow,
    ) -> std::result::Result<usize, Failure> {
        let mut merged = w;
        let mut acc = self.agg.create_accumulator();
        let mut kept = Vec::with_capacity(contents.len() + 1);
        for (cw, cacc) in contents.drain(..) {
            if overlaps(&cw, &merged) {
                merged = TimeWindow {
                    start: merged.start.min(cw.start),
                    end: merged.end.max(cw.end),
                };
                acc = self.agg.merge(acc, cacc);
            } else {
                kept.push((cw, cacc));
            }
        }
        self.register(cx, &merged, false)?;
        kept.push((merged, acc));
        *contents = kept;
        Ok(contents.len() - 1)
    }
}

impl<K, A, O, F> Op<A::In> for WindowOp<K, A, O, F>
where
    K: Data,
    A: AggregateFunction,
    O: Data,
    F: Fn(&K, &TimeWindow, A::Out) -> O,
{
    fn element(&mut self, value: A::In, cx: &mut RunCx<'_>) -> OpResult {
        let ts = self
            .now(cx)
            .map_err(|e| error_to_failure(&self.table.uid, e))?;
        let event_time = self.assigner.domain == TimeDomain::EventTime;
        let wm = cx.watermark;
        let mut live = std::mem::take(&mut self.scratch);
        self.assigner.assign_into(ts, &mut live);
        // A session is late only if, once merged, it still is (see `add`).
        if !self.is_session() {
            live.retain(|w| !(event_time && self.cleanup_time(w) <= wm));
        }
        let r = self.add(value, live.as_slice(), cx);
        self.scratch = live;
        r
    }

    fn timer(&mut self, domain: TimeDomain, ts: i64, cx: &mut RunCx<'_>) -> OpResult {
        if domain != self.assigner.domain {
            return Ok(());
        }
        let mut contents = self.load(cx)?;
        let mut i = 0;
        while i < contents.len() {
            if contents[i].0.max_timestamp() == ts {
                let (w, acc) = contents[i].clone();
                self.fire(cx, &w, &acc)?;
            }
            i += 1;
        }
        contents.retain(|(w, _)| self.cleanup_time(w) > ts);
        self.store(cx, contents);
        Ok(())
    }

    fn finish(&mut self, cx: &mut RunCx<'_>) -> OpResult {
        self.sides.finish(cx)?;
        self.down.finish(cx)
    }

    fn end_of_call(&mut self, cx: &mut RunCx<'_>) -> OpResult {
        self.write_back(cx);
        Ok(())
    }
}

/// Whether two windows overlap or touch (sessions `[0,10)` and `[10,20)` merge, as in Flink).
fn overlaps(a: &TimeWindow, b: &TimeWindow) -> bool {
    a.start <= b.end && b.start <= a.end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tumbling_windows_align_to_the_epoch() {
        let a = WindowAssigner::tumbling_event_time(10_000);
        assert_eq!(
            a.assign(12_345),
            vec![TimeWindow {
                start: 10_000,
                end: 20_000
            }]
        );
        assert_eq!(a.assign(-1)[0].start, -10_000);
    }

    use crate::stream::DataStream;
    use crate::testing::Harness;

    type Rec = (u32, i64);

    fn sessions(gap: i64, lateness: i64) -> Harness<Rec> {
        Harness::new(move |s: DataStream<Rec>| {
            s.key_by(|r: &Rec| r.0)
                .window(WindowAssigner::event_time_session(gap))
                .allowed_lateness(lateness)
                .reduce(
                    |a: Rec, b: Rec| (a.0, a.1 + b.1),
                    |_k: &u32, w: &TimeWindow, r: Rec| (w.start, w.end, r.1),
                )
        })
        .unwrap()
    }

    #[test]
    fn sessions_merge_when_they_overlap_or_touch() {
        let mut h = sessions(10, 0);
        h.process((1, 1), Some(0)).unwrap();
        h.process((1, 2), Some(10)).unwrap();
        h.process((1, 4), Some(40)).unwrap();
        h.process((1, 8), Some(45)).unwrap();
        h.finish().unwrap();
        let mut out: Vec<(i64, i64, i64)> = h.take_output().unwrap();
        out.sort();
        assert_eq!(out, vec![(0, 20, 3), (40, 55, 12)]);
    }

    #[test]
    fn merging_sessions_does_not_lose_a_window_sharing_a_timer() {
        // Session [20,30) fires at 29; [0,10)'s cleanup timer is also 29 (lateness 20).
        // Merging [0,10) with [5,15) must not cancel the timer [20,30) needs.
        let mut h = sessions(10, 20);
        h.process((1, 1), Some(20)).unwrap();
        h.process((1, 2), Some(0)).unwrap();
        h.process((1, 4), Some(5)).unwrap();
        h.advance_watermark(100).unwrap();
        let mut out: Vec<(i64, i64, i64)> = h.take_output().unwrap();
        out.sort();
        assert_eq!(out, vec![(0, 15, 6), (20, 30, 1)]);
        assert_eq!(h.pending_timers(), 0);
    }

    #[test]
    fn a_late_record_that_extends_a_live_session_is_not_late() {
        let mut h = sessions(10, 0);
        h.process((1, 1), Some(50)).unwrap();
        h.advance_watermark(45).unwrap();
        // [40,50) is behind the watermark on its own, but touches the live [50,60).
        h.process((1, 2), Some(40)).unwrap();
        // [10,20) is behind the watermark and touches nothing: late.
        h.process((1, 4), Some(10)).unwrap();
        h.finish().unwrap();
        let out: Vec<(i64, i64, i64)> = h.take_output().unwrap();
        assert_eq!(out, vec![(40, 60, 3)]);
    }

    #[test]
    fn processing_time_windows_fire_on_the_clock() {
        let mut h = Harness::new(|s: DataStream<Rec>| {
            s.key_by(|r: &Rec| r.0)
                .window(WindowAssigner::tumbling_processing_time(1_000))
                .reduce(
                    |a: Rec, b: Rec| (a.0, a.1 + b.1),
                    |_k: &u32, w: &TimeWindow, r: Rec| (w.start, r.1),
                )
        })
        .unwrap();
        h.advance_processing_time(10_100).unwrap();
        h.process((1, 1), None).unwrap();
        h.process((1, 2), None).unwrap();
        h.advance_processing_time(10_998).unwrap();
        assert!(h.take_output::<(i64, i64)>().unwrap().is_empty());
        h.advance_processing_time(11_000).unwrap();
        h.process((1, 4), None).unwrap();
        h.advance_processing_time(12_000).unwrap();
        let out: Vec<(i64, i64)> = h.take_output().unwrap();
        assert_eq!(out, vec![(10_000, 3), (11_000, 4)]);
    }

    #[test]
    fn sliding_windows_count_a_record_in_every_window_it_falls_in() {
        let mut h = Harness::new(|s: DataStream<Rec>| {
            s.key_by(|r: &Rec| r.0)
                .window(WindowAssigner::sliding_event_time(10, 5))
                .reduce(
                    |a: Rec, b: Rec| (a.0, a.1 + b.1),
                    |_k: &u32, w: &TimeWindow, r: Rec| (w.start, r.1),
                )
        })
        .unwrap();
        h.process((1, 1), Some(7)).unwrap();
        h.process((1, 2), Some(12)).unwrap();
        h.finish().unwrap();
        let mut out: Vec<(i64, i64)> = h.take_output().unwrap();
        out.sort();
        assert_eq!(out, vec![(0, 1), (5, 3), (10, 2)]);
    }

    #[test]
    fn sliding_windows_cover_the_timestamp() {
        let a = WindowAssigner::sliding_event_time(10, 5);
        let ws = a.assign(12);
        assert_eq!(
            ws,
            vec![
                TimeWindow { start: 10, end: 20 },
                TimeWindow { start: 5, end: 15 }
            ]
        );
    }
}
