//! Sources written in the guest: the host polls them for batches of records.
//!
//! ```
//! use weir::prelude::*;
//! use weir::source::{SourceContext, SourceFunction, SourceOutput};
//!
//! /// Counts from 0 to `end` (exclusive), split over the subtasks.
//! #[derive(Clone)]
//! struct Counter { end: u64, next: u64, step: u64 }
//!
//! impl SourceFunction for Counter {
//!     type Out = u64;
//!
//!     fn open(&mut self, ctx: &SourceContext) -> Result<()> {
//!         self.next = u64::from(ctx.subtask);
//!         self.step = u64::from(ctx.parallelism);
//!         Ok(())
//!     }
//!
//!     fn poll(&mut self, out: &mut SourceOutput<'_, '_, u64>, max: usize) -> Result<bool> {
//!         for _ in 0..max {
//!             if self.next >= self.end {
//!                 return Ok(false);
//!             }
//!             out.collect_with_timestamp(self.next, self.next as i64)?;
//!             self.next += self.step;
//!         }
//!         Ok(true)
//!     }
//! }
//!
//! fn build(env: &mut StreamEnv) -> Result<()> {
//!     env.source(Counter { end: 1_000, next: 0, step: 1 })
//!         .uid("counter")
//!         .with_watermarks(WatermarkStrategy::monotonous_timestamps())
//!         .map(|n: u64| n * 2)
//!         .sink(Sink::print());
//!     Ok(())
//! }
//! # weir::testing::plan_of(build, &[]).unwrap();
//! ```

use crate::codec::Data;
use crate::process::{error_to_failure, failure_to_error};
use crate::runtime::{BoxOp, Failure, Head, OpResult, RunCx, TimeDomain};
use crate::Result;

/// Where a source subtask runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceContext {
    /// This subtask's index.
    pub subtask: u32,
    /// Number of subtasks of the source.
    pub parallelism: u32,
}

/// A source implemented in the guest. One instance runs in each subtask (`Clone` makes them).
pub trait SourceFunction: Clone + 'static {
    /// The records it produces.
    type Out: Data;

    /// Called once before the first poll.
    fn open(&mut self, _ctx: &SourceContext) -> Result<()> {
        Ok(())
    }

    /// Emits at most `max` records; returns `false` once the source has ended (a bounded
    /// source), `true` to be polled again. An unbounded source with nothing to emit returns
    /// `true` having emitted nothing; the host then polls again a little later.
    fn poll(&mut self, out: &mut SourceOutput<'_, '_, Self::Out>, max: usize) -> Result<bool>;
}

/// Sends a source's records into the rest of the chain.
pub struct SourceOutput<'c, 'a, T> {
    cx: &'c mut RunCx<'a>,
    down: &'c mut BoxOp<T>,
    /// The source declares a watermark strategy: its timestamps drive event time.
    assigns: bool,
    emitted: &'c std::cell::Cell<u64>,
}

impl<T: Data> SourceOutput<'_, '_, T> {
    /// Emits a record without a timestamp.
    pub fn collect(&mut self, value: T) -> Result<()> {
        self.emitted.set(self.emitted.get() + 1);
        self.cx.ts = None;
        self.down.element(value, self.cx).map_err(failure_to_error)
    }

    /// Emits a record with an event timestamp.
    pub fn collect_with_timestamp(&mut self, value: T, ts: i64) -> Result<()> {
        self.emitted.set(self.emitted.get() + 1);
        self.cx.ts = Some(ts);
        if self.assigns {
            self.cx.max_ts = Some(self.cx.max_ts.map_or(ts, |m| m.max(ts)));
        }
        self.down.element(value, self.cx).map_err(failure_to_error)
    }
}

/// The head of a chain that starts with a guest source.
pub(crate) struct SourceHead<S: SourceFunction> {
    pub uid: String,
    pub source: S,
    pub down: BoxOp<S::Out>,
    pub assigns: bool,
    pub emitted: std::rc::Rc<std::cell::Cell<u64>>,
}

impl<S: SourceFunction> Head for SourceHead<S> {
    fn record(&mut self, edge: u32, _bytes: &[u8], _cx: &mut RunCx<'_>) -> OpResult {
        Err(Failure::new(
            &self.uid,
            format!("a source has no inputs, but a record arrived on edge {edge}"),
        ))
    }

    fn timer(&mut self, _domain: TimeDomain, _ts: i64, _cx: &mut RunCx<'_>) -> OpResult {
        Ok(())
    }

    fn finish(&mut self, cx: &mut RunCx<'_>) -> OpResult {
        self.down.finish(cx)
    }

    fn end_of_call(&mut self, cx: &mut RunCx<'_>) -> OpResult {
        self.down.end_of_call(cx)
    }

    fn poll(&mut self, max: usize, cx: &mut RunCx<'_>) -> Result<bool, Failure> {
        crate::runtime::enter_operator(0);
        let mut out = SourceOutput {
            cx,
            down: &mut self.down,
            assigns: self.assigns,
            emitted: &self.emitted,
        };
        self.source
            .poll(&mut out, max)
            .map_err(|e| error_to_failure(&self.uid, e))
    }
}
