//! One task's instance of a component, and the calls that move batches through it.

use std::time::Duration;

use wasmtime::component::ResourceAny;
use wasmtime::{Store, Trap};
use weir_state::KeyedStateBackend;

use crate::bindings::exports::weir::stream::job::GuestChain as ChainExports;
use crate::bindings::{self, wit};
use crate::error::GuestError;
use crate::host::TaskData;

/// Time as the host sees it when it calls the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallContext {
    /// The chain's current input watermark.
    pub watermark: i64,
    /// Processing time, epoch milliseconds.
    pub processing_time: i64,
}

/// What a call produced (frames as in `weir_core::frame`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchResult {
    /// Output records in the output layout.
    pub output: Vec<u8>,
    /// Value-state writes.
    pub state_writes: Vec<u8>,
    /// Timer registrations and deletions.
    pub timer_ops: Vec<u8>,
    /// Highest timestamp a timestamp assigner saw.
    pub max_timestamp: Option<i64>,
}

/// What a poll of a guest source produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PollResult {
    /// The records and their effects.
    pub batch: BatchResult,
    /// The source has ended.
    pub finished: bool,
}

/// An opened operator chain inside its own wasmtime store.
pub struct GuestChain {
    store: Store<TaskData>,
    instance: bindings::JobComponent,
    chain: ResourceAny,
    label: String,
    timeout: Duration,
    max_output: usize,
    /// Time spent running guest code (pauses of throttled calls not counted).
    busy: Duration,
}

/// What a guest instance has used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GuestUsage {
    /// Time spent running its code.
    pub busy: Duration,
    /// Linear memory it holds, in bytes.
    pub memory_bytes: u64,
}

/// Says what a trap means — the guest's panic message (and the operator that panicked), or
/// the limit it hit — as `(operator, message)`.
pub(crate) fn describe_trap(
    store: &mut Store<TaskData>,
    e: &wasmtime::Error,
    timeout: Duration,
    chain: &str,
) -> (String, String) {
    let data = store.data_mut();
    if let Some((op, p)) = data.panic.take() {
        let op = if op.is_empty() { chain.to_string() } else { op };
        return (op, format!("panicked: {p}"));
    }
    (chain.to_string(), describe_limit(data, e, timeout))
}

fn describe_limit(data: &mut TaskData, e: &wasmtime::Error, timeout: Duration) -> String {
    if let Some(bytes) = data.limits.denied.take() {
        return format!(
            "exceeded the memory limit of {} bytes (tried to grow memory to {bytes} bytes)",
            data.limits.max
        );
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => {
            format!("exceeded the call deadline of {timeout:?} (is it looping?)")
        }
        Some(Trap::StackOverflow) => "overflowed its stack".to_string(),
        Some(Trap::MemoryOutOfBounds) => format!(
            "{} (a Rust guest whose stack overflows fails this way: its stack lives in linear memory)",
            Trap::MemoryOutOfBounds
        ),
        Some(t) => t.to_string(),
        None => format!("{e:#}"),
    }
}

impl GuestChain {
    pub(crate) fn new(
        store: Store<TaskData>,
        instance: bindings::JobComponent,
        chain: ResourceAny,
        label: String,
        timeout: Duration,
        max_output: usize,
    ) -> Self {
        GuestChain {
            store,
            instance,
            chain,
            label,
            timeout,
            max_output,
            busy: Duration::ZERO,
        }
    }

    /// Time in guest code and memory held so far.
    pub fn usage(&self) -> GuestUsage {
        GuestUsage {
            busy: self.busy,
            memory_bytes: self.store.data().limits.total as u64,
        }
    }

    /// Keyed state of the chain's head.
    pub fn backend(&self) -> Option<&dyn KeyedStateBackend> {
        self.store.data().backend.as_deref()
    }

    /// Keyed state of the chain's head, to prefetch and apply writes.
    pub fn backend_mut(&mut self) -> Option<&mut (dyn KeyedStateBackend + 'static)> {
        self.store.data_mut().backend.as_deref_mut()
    }

    /// Charges the keyed state to `meter`'s limits from now on (what it holds already at
    /// once: a restored state over a limit fails here).
    pub fn set_state_meter(&mut self, meter: weir_state::StateMeter) -> Result<(), GuestError> {
        self.store.data_mut().meter = meter;
        self.charge_state()
    }

    /// Charges what the keyed state holds now (after the host applied a batch's writes).
    pub fn charge_state(&mut self) -> Result<(), GuestError> {
        let data = self.store.data_mut();
        match data.charge_state() {
            Ok(()) => Ok(()),
            Err(_) => Err(GuestError::StateLimit {
                operator: self.label.clone(),
                error: data.state_limit.take().expect("a refusal names its limit"),
            }),
        }
    }

    /// The largest state value (or map entry) the chain may write.
    pub fn max_state_value(&self) -> u64 {
        self.store.data().meter.max_value()
    }

    /// The task label used in errors and logs.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Converts what the guest reported into our types, refusing more output than one call
    /// may produce.
    fn batch(
        &self,
        r: Result<wit::BatchResult, wit::OperatorError>,
    ) -> Result<BatchResult, GuestError> {
        match r {
            Ok(b)
                if b.output.len() + b.state_writes.len() + b.timer_ops.len() > self.max_output =>
            {
                Err(GuestError::Trap {
                    operator: self.label.clone(),
                    message: format!(
                        "produced {} bytes in one call, over the limit of {} bytes per call",
                        b.output.len() + b.state_writes.len() + b.timer_ops.len(),
                        self.max_output
                    ),
                })
            }
            Ok(b) => Ok(BatchResult {
                output: b.output,
                state_writes: b.state_writes,
                timer_ops: b.timer_ops,
                max_timestamp: b.max_timestamp,
            }),
            Err(e) => Err(GuestError::Operator {
                operator: e.operator,
                message: e.message,
            }),
        }
    }

    /// Calls into the guest with a fresh deadline; a trap becomes a [`GuestError::Trap`].
    fn call<R>(
        &mut self,
        f: impl FnOnce(&ChainExports<'_>, &mut Store<TaskData>, ResourceAny) -> wasmtime::Result<R>,
    ) -> Result<R, GuestError> {
        let started = std::time::Instant::now();
        let paused_before = self.store.data().throttled;
        self.store.data_mut().call_started = started;
        self.store.set_epoch_deadline(1);
        let exports = self.instance.weir_stream_job().chain();
        let r = f(&exports, &mut self.store, self.chain);
        let paused = self.store.data().throttled.saturating_sub(paused_before);
        self.busy += started.elapsed().saturating_sub(paused);
        r.map_err(|e| self.trap(e))
    }

    fn trap(&mut self, e: wasmtime::Error) -> GuestError {
        if std::mem::take(&mut self.store.data_mut().interrupted) {
            return GuestError::Interrupted;
        }
        if let Some(error) = self.store.data_mut().state_limit.take() {
            return GuestError::StateLimit {
                operator: self.label.clone(),
                error,
            };
        }
        if let Some(error) = self.store.data_mut().state_failure.take() {
            return GuestError::State {
                operator: self.label.clone(),
                error,
            };
        }
        let (operator, message) = describe_trap(&mut self.store, &e, self.timeout, &self.label);
        GuestError::Trap { operator, message }
    }

    fn ctx(c: CallContext) -> wit::CallContext {
        wit::CallContext {
            watermark: c.watermark,
            processing_time: c.processing_time,
        }
    }

    /// Processes a `process` frame.
    pub fn process(&mut self, frame: &[u8], ctx: CallContext) -> Result<BatchResult, GuestError> {
        let ctx = Self::ctx(ctx);
        let r = self.call(|c, store, chain| c.call_process(store, chain, frame, ctx))?;
        self.batch(r)
    }

    /// Runs an `on-timers` frame.
    pub fn on_timers(&mut self, frame: &[u8], ctx: CallContext) -> Result<BatchResult, GuestError> {
        let ctx = Self::ctx(ctx);
        let r = self.call(|c, store, chain| c.call_on_timers(store, chain, frame, ctx))?;
        self.batch(r)
    }

    /// Tells the chain its input has ended.
    pub fn finish(&mut self, ctx: CallContext) -> Result<BatchResult, GuestError> {
        let ctx = Self::ctx(ctx);
        let r = self.call(|c, store, chain| c.call_finish(store, chain, ctx))?;
        self.batch(r)
    }

    /// Records each chained node has taken in (a source: produced), in chain order.
    pub fn metrics(&mut self) -> Result<Vec<u64>, GuestError> {
        self.call(|c, store, chain| c.call_metrics(store, chain))
    }

    /// Polls a chain headed by a guest source.
    pub fn poll(&mut self, max: u32, ctx: CallContext) -> Result<PollResult, GuestError> {
        let ctx = Self::ctx(ctx);
        let polled = self.call(|c, store, chain| c.call_poll(store, chain, max, ctx))?;
        let finished = matches!(&polled, Ok(p) if p.finished);
        let batch = self.batch(polled.map(|p| p.batch))?;
        Ok(PollResult { batch, finished })
    }
}
