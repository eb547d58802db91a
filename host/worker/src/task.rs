//! One subtask: a source or input gate, an optional guest chain, outputs.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use weir_core::frame::{self, FrameBuilder, RecordBatch, TimerOpKind};
use weir_core::{key_group_for, StateKind, Watermark, WatermarkStrategy};
use weir_runtime::{BatchResult, CallContext, GuestChain, GuestError};
use weir_state::{KeyedStateBackend, NativeSnapshots, StateResult, TimeDomain, Timer, ValueHint};

/// Writes a key's value states into the frame's key table, remembering where each was found.
fn prefetch(
    backend: &dyn KeyedStateBackend,
    key_group: u32,
    key: &[u8],
    slots: &mut frame::ValueSlots<'_>,
    hints: &mut Vec<Option<ValueHint>>,
) -> StateResult<()> {
    for (s, d) in backend.descriptors().iter().enumerate() {
        if d.kind == StateKind::Value {
            hints.push(backend.with_value_hinted(s as u32, key_group, key, &mut |v| slots.put(v))?);
        }
    }
    Ok(())
}

use crate::checkpoint::{BarrierInfo, Control, Part, Report};
use crate::connectors::SourceReader;
use crate::exchange::{Input, InputGate, Message, Outputs};
use crate::plan::Vertex;
use crate::TaskError;
use std::collections::HashMap;
use weir_checkpoint::{put_file, FileRef, GeneratorState, NativeState, Storage, SubtaskState};

/// Writes a RocksDB backend's files for a checkpoint into `dir`: SST files it has not
/// uploaded before go to the job's `shared/` directory (incremental), the rest and the
/// timers into the checkpoint's own directory.
fn upload_native(
    rocks: &dyn NativeSnapshots,
    uploaded: &mut HashMap<String, FileRef>,
    uid: &str,
    subtask: u32,
    dir: &Storage,
) -> Result<NativeState, String> {
    let native = rocks.native_checkpoint().map_err(|e| e.to_string())?;
    let shared = weir_checkpoint::shared_dir(dir);
    let read = |f: &str| std::fs::read(native.path.join(f)).map_err(|e| format!("{f}: {e}"));
    let mut still = HashMap::new();
    let mut state = NativeState {
        shared: Vec::new(),
        private: Vec::new(),
        timers: put_file(
            dir,
            &format!("{uid}/{subtask}.timers"),
            native.timers.clone(),
        )
        .map_err(|e| e.to_string())?,
    };
    for f in &native.files {
        if f.ends_with(".sst") {
            let r = match uploaded.get(f) {
                Some(r) => r.clone(),
                None => put_file(
                    &shared,
                    &format!("{uid}/{}/{f}", rocks.instance()),
                    read(f)?,
                )
                .map_err(|e| e.to_string())?,
            };
            still.insert(f.clone(), r.clone());
            state.shared.push(r);
        } else {
            let r = put_file(dir, &format!("{uid}/{subtask}.rocksdb/{f}"), read(f)?)
                .map_err(|e| e.to_string())?;
            state.private.push(r);
        }
    }
    // Files compacted away are not referenced again.
    *uploaded = still;
    Ok(state)
}

/// A task's side of checkpointing: who it is in snapshots and how it talks to the
/// coordinator.
pub(crate) struct TaskLinks {
    /// Index of the task in the attempt.
    pub index: usize,
    pub subtask: u32,
    pub reports: crossbeam_channel::Sender<Report>,
    /// Barrier triggers (sources; `never()` otherwise).
    pub triggers: crossbeam_channel::Receiver<Arc<BarrierInfo>>,
    /// Ids of completed checkpoints.
    pub notices: crossbeam_channel::Receiver<u64>,
    pub control: Arc<Control>,
    /// Uid of the vertex's head node: task-level progress is stored under it.
    pub head_uid: String,
    /// Uid of the node owning the keyed state.
    pub keyed_uid: Option<String>,
    pub source_uid: Option<String>,
    pub sink_uid: Option<String>,
    /// What the task restored: it starts finished, or from a watermark.
    pub restored: Option<SubtaskState>,
    /// RocksDB: SST files already in the job's shared storage, by local name.
    pub uploaded: HashMap<String, FileRef>,
}

/// Where a subtask's records come from.
pub enum TaskInput {
    /// A host source connector; records go out on `edge`.
    Source {
        /// The reader.
        reader: Box<dyn SourceReader>,
        /// The source's output edge (into the chain, or to an exchange).
        edges: Vec<u32>,
    },
    /// Exchanges from upstream tasks.
    Gate(InputGate),
    /// The chain's head is a source written in the guest: poll it.
    GuestSource,
}

/// Counters of the whole job, shared by its tasks and read for the summary.
#[derive(Debug)]
pub struct JobCounters {
    /// Records each node took in (a source: produced), by node index.
    pub node_in: Vec<AtomicU64>,
    /// Records sent on each edge that leaves a vertex, by edge index.
    pub edges: Vec<AtomicU64>,
    /// Each task's input watermark (`i64::MIN` before the first), by task index.
    pub watermarks: Vec<AtomicI64>,
    /// Each task's time blocked on full downstream channels, ns, by task index.
    pub blocked_nanos: Vec<AtomicU64>,
    /// Each task's time in guest code, ns, by task index.
    pub guest_nanos: Vec<AtomicU64>,
    /// Each task's guest linear memory, bytes, by task index.
    pub guest_memory: Vec<AtomicU64>,
}

impl JobCounters {
    /// Zeroed counters for `nodes` nodes, `edges` edges and `tasks` tasks.
    pub fn new(nodes: usize, edges: usize, tasks: usize) -> Self {
        JobCounters {
            node_in: (0..nodes).map(|_| AtomicU64::new(0)).collect(),
            edges: (0..edges).map(|_| AtomicU64::new(0)).collect(),
            watermarks: (0..tasks).map(|_| AtomicI64::new(i64::MIN)).collect(),
            blocked_nanos: (0..tasks).map(|_| AtomicU64::new(0)).collect(),
            guest_nanos: (0..tasks).map(|_| AtomicU64::new(0)).collect(),
            guest_memory: (0..tasks).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

/// Generates watermarks from observed timestamps (bounded out-of-orderness).
pub(crate) struct WatermarkGenerator {
    strategy: WatermarkStrategy,
    max_ts: Option<i64>,
    emitted: Watermark,
    last_record: Instant,
    idle: bool,
}

impl WatermarkGenerator {
    fn observe(&mut self, ts: i64) {
        self.max_ts = Some(self.max_ts.map_or(ts, |m| m.max(ts)));
    }

    /// The watermark to emit now, if it advanced.
    fn advance(&mut self) -> Option<Watermark> {
        let m = self.max_ts?;
        let wm = Watermark(
            m.saturating_sub(self.strategy.max_out_of_orderness_ms)
                .saturating_sub(1),
        );
        (wm > self.emitted).then(|| {
            self.emitted = wm;
            wm
        })
    }
}

/// A running subtask.
pub struct Task {
    /// `vertex-name#subtask`, for errors and logs.
    pub label: String,
    pub(crate) input: TaskInput,
    pub(crate) guest: Option<GuestChain>,
    pub(crate) outputs: Outputs,
    pub(crate) generator: Option<WatermarkGenerator>,
    /// Whether the chain's head holds keyed state (its input is keyed).
    pub(crate) keyed: bool,
    pub(crate) max_parallelism: u32,
    pub(crate) counters: Arc<JobCounters>,
    pub(crate) vertex: Vertex,
    /// The watermark strategy is the host source's own: watermarks follow the timestamps
    /// the connector gives (otherwise a chained assigner's, reported by the guest).
    source_timestamps: bool,
    pub(crate) cancel: Arc<AtomicBool>,
    pub(crate) batch_size: usize,
    builder: FrameBuilder,
    key_groups: Vec<u32>,
    /// Per key of the current frame and value state: where the prefetch found the value.
    hints: Vec<Option<ValueHint>>,
    /// Slot of each state (value states only), in the prefetch order.
    value_slot: Vec<Option<usize>>,
    frame: Vec<u8>,
    due: Vec<Timer>,
    input_watermark: Watermark,
    /// The input watermark before the end of input made it +inf (a drained savepoint keeps
    /// this one, so a job started from it goes on in event time).
    finite_watermark: Watermark,
    links: TaskLinks,
    /// A source's position after the records processed so far.
    position: Option<serde_json::Value>,
    /// Counts already added to the job's counters (guest nodes in chain order, the sink).
    published: (Vec<u64>, u64),
    last_publish: Instant,
}

/// How often a running task adds its counts to the job's, for live metrics.
const PUBLISH_INTERVAL: Duration = Duration::from_secs(1);

use weir_core::now_ms;

impl Task {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        label: String,
        input: TaskInput,
        guest: Option<GuestChain>,
        outputs: Outputs,
        strategy: Option<WatermarkStrategy>,
        source_timestamps: bool,
        max_parallelism: u32,
        counters: Arc<JobCounters>,
        vertex: Vertex,
        cancel: Arc<AtomicBool>,
        links: TaskLinks,
    ) -> Self {
        let keyed = guest.as_ref().is_some_and(|g| g.backend().is_some());
        let mut next = 0;
        let value_slot = guest
            .as_ref()
            .and_then(|g| g.backend())
            .map(|b| {
                b.descriptors()
                    .iter()
                    .map(|d| {
                        (d.kind == StateKind::Value).then(|| {
                            next += 1;
                            next - 1
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        let restored = links.restored.as_ref();
        let generated = restored.and_then(|r| r.generator);
        let input_watermark = restored
            .and_then(|r| r.watermark)
            .map_or(Watermark::MIN, Watermark);
        Task {
            label,
            input,
            guest,
            outputs,
            generator: strategy.map(|strategy| WatermarkGenerator {
                strategy,
                max_ts: generated.and_then(|g| g.max_timestamp),
                emitted: generated.map_or(Watermark::MIN, |g| Watermark(g.emitted)),
                last_record: Instant::now(),
                idle: false,
            }),
            keyed,
            max_parallelism,
            counters,
            vertex,
            source_timestamps,
            cancel,
            batch_size: 1024,
            builder: FrameBuilder::new(),
            key_groups: Vec::new(),
            hints: Vec::new(),
            value_slot,
            frame: Vec::new(),
            due: Vec::new(),
            input_watermark,
            finite_watermark: input_watermark,
            links,
            position: None,
            published: (Vec::new(), 0),
            last_publish: Instant::now(),
        }
    }

    fn ctx(&self) -> CallContext {
        CallContext {
            watermark: self.input_watermark.0,
            processing_time: now_ms(),
        }
    }

    /// Runs until the input ends, the job is cancelled, or something fails. However it
    /// ends, what it did is counted: a finished task publishes its counts in `finish`, a
    /// cancelled one (or one stopped after a savepoint) here, and one that failed at least
    /// its guest time and backpressure.
    pub fn run(mut self) -> Result<(), TaskError> {
        let r = self.run_to_end();
        match &r {
            Ok(()) => {}
            Err(TaskError::Cancelled) => {
                let _ = self.publish_counters();
            }
            Err(_) => self.publish_usage(),
        }
        r
    }

    fn run_to_end(&mut self) -> Result<(), TaskError> {
        if self.links.restored.as_ref().is_some_and(|r| r.finished) {
            // It had finished before the snapshot: everything it sent is downstream's.
            // Downstream tasks that had finished too are gone already: nothing to tell them.
            self.report_finished(vec![self.progress_part(true)]);
            let _ = self
                .outputs
                .broadcast(|| Message::Watermark(Watermark::MAX));
            let _ = self.outputs.broadcast(|| Message::End);
            return Ok(());
        }
        if let Some(g) = self
            .generator
            .as_ref()
            .filter(|g| g.emitted > Watermark::MIN)
        {
            // Restored: downstream learns the watermark again before any record.
            let w = g.emitted;
            self.outputs.broadcast(|| Message::Watermark(w))?;
        }
        match std::mem::replace(
            &mut self.input,
            TaskInput::Gate(InputGate::new(vec![], vec![])),
        ) {
            TaskInput::Source { mut reader, edges } => {
                let r = self.run_source(reader.as_mut(), &edges);
                self.input = TaskInput::Source { reader, edges };
                r?;
            }
            TaskInput::Gate(mut gate) => {
                let r = self.run_gate(&mut gate);
                self.input = TaskInput::Gate(gate);
                r?;
            }
            TaskInput::GuestSource => {
                self.input = TaskInput::GuestSource;
                self.run_guest_source()?;
            }
        }
        // Input that ended because the job was cancelled is not the end of the input: no
        // final watermark, no sink commit.
        if self.cancelled() {
            return Err(TaskError::Cancelled);
        }
        self.finish()
    }

    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// Reads the source on a fetcher thread (as Flink's split fetchers do), so reading and
    /// processing overlap; batches travel over a small bounded queue and are recycled.
    fn run_source(
        &mut self,
        reader: &mut dyn SourceReader,
        edges: &[u32],
    ) -> Result<(), TaskError> {
        let edge = edges.first().copied().unwrap_or(u32::MAX);
        let batch_size = self.batch_size;
        let cancel = self.cancel.clone();
        self.position = Some(reader.position());
        type Fetched =
            Result<(RecordBatch, bool, serde_json::Value), crate::connectors::ConnectorError>;
        let (full_tx, full_rx) = crossbeam_channel::bounded::<Fetched>(2);
        let (empty_tx, empty_rx) = crossbeam_channel::bounded::<RecordBatch>(4);
        let triggers = self.links.triggers.clone();
        std::thread::scope(|scope| {
            scope.spawn(move || loop {
                if cancel.load(Ordering::Relaxed) {
                    return;
                }
                let mut batch = empty_rx
                    .try_recv()
                    .unwrap_or_else(|_| RecordBatch::with_capacity(64 << 10));
                batch.clear();
                let fetched = reader.read_batch(&mut batch, edge, batch_size);
                let done = !matches!(fetched, Ok(true));
                let fetched = fetched.map(|more| (batch, more, reader.position()));
                if full_tx.send(fetched).is_err() || done {
                    return;
                }
            });
            // Dropping the receiver (on return, error or not) stops the fetcher.
            let full_rx = full_rx;
            loop {
                if self.cancelled() {
                    return Err(TaskError::Cancelled);
                }
                if self.links.control.drain.load(Ordering::Relaxed) {
                    return Ok(());
                }
                self.poll_notices();
                crossbeam_channel::select! {
                    recv(full_rx) -> fetched => {
                        let Ok(fetched) = fetched else {
                            // The fetcher stops early only when the job is cancelled.
                            return Err(TaskError::Cancelled);
                        };
                        let (batch, more, position) = fetched?;
                        self.source_batch(&batch, edges)?;
                        self.maybe_publish()?;
                        self.position = Some(position);
                        let _ = empty_tx.try_send(batch);
                        if !more {
                            return Ok(());
                        }
                    }
                    recv(triggers) -> barrier => {
                        if let Ok(b) = barrier {
                            self.on_barrier(&b)?;
                        }
                    }
                    default(Duration::from_millis(50)) => {}
                }
            }
        })
    }

    /// Completed checkpoints: their sink transactions are committed.
    fn poll_notices(&mut self) {
        while let Ok(id) = self.links.notices.try_recv() {
            if let Some(sink) = self.outputs.sink.as_mut() {
                sink.committed(id);
            }
        }
    }

    /// Passes the barrier on, then snapshots and acknowledges (or declines).
    fn on_barrier(&mut self, b: &Arc<BarrierInfo>) -> Result<(), TaskError> {
        self.outputs.broadcast(|| Message::Barrier(b.clone()))?;
        let report = match self.snapshot(b.id, Some(&b.dir), b.savepoint) {
            Ok(parts) => Report::Ack {
                id: b.id,
                task: self.links.index,
                parts,
            },
            Err(reason) => Report::Decline {
                id: b.id,
                reason: format!("task {}: {reason}", self.label),
            },
        };
        let _ = self.links.reports.send(report);
        Ok(())
    }

    /// Task-level progress: finished or not, watermarks.
    fn progress_part(&self, finished: bool) -> Part {
        let state = SubtaskState {
            finished,
            watermark: (self.input_watermark > Watermark::MIN).then_some(self.input_watermark.0),
            generator: self.generator.as_ref().map(|g| GeneratorState {
                max_timestamp: g.max_ts,
                emitted: g.emitted.0,
            }),
            ..SubtaskState::default()
        };
        (self.links.head_uid.clone(), self.links.subtask, state)
    }

    /// Everything this task holds for snapshot `id`, with state files written into `dir`;
    /// without a directory the task has finished, and only what a finished task needs
    /// (its last sink transaction) is kept.
    fn snapshot(
        &mut self,
        id: u64,
        dir: Option<&weir_checkpoint::Storage>,
        savepoint: bool,
    ) -> Result<Vec<Part>, String> {
        let finished = dir.is_none();
        let subtask = self.links.subtask;
        let mut parts = vec![self.progress_part(finished)];
        if let (Some(uid), Some(dir)) = (&self.links.keyed_uid, dir) {
            let backend = self
                .guest
                .as_ref()
                .and_then(|g| g.backend())
                .ok_or("keyed task without a backend")?;
            let range = backend.key_groups();
            let state = match backend.native_snapshots().filter(|_| !savepoint) {
                Some(rocks) => SubtaskState {
                    key_groups: Some([range.start, range.end]),
                    native: Some(upload_native(
                        rocks,
                        &mut self.links.uploaded,
                        uid,
                        subtask,
                        dir,
                    )?),
                    ..SubtaskState::default()
                },
                None => {
                    let data = weir_state::take_snapshot(backend).map_err(|e| e.to_string())?;
                    let file = put_file(dir, &format!("{uid}/{subtask}.state"), data)
                        .map_err(|e| e.to_string())?;
                    SubtaskState {
                        key_groups: Some([range.start, range.end]),
                        file: Some(file),
                        ..SubtaskState::default()
                    }
                }
            };
            parts.push((uid.clone(), subtask, state));
        }
        // A finished source keeps its (final) position too: restored at another
        // parallelism, its splits are known to be done.
        if let (Some(uid), Some(position)) = (&self.links.source_uid, &self.position) {
            parts.push((
                uid.clone(),
                subtask,
                SubtaskState {
                    position: Some(position.clone()),
                    ..SubtaskState::default()
                },
            ));
        }
        if let (Some(uid), Some(sink)) = (&self.links.sink_uid, self.outputs.sink.as_mut()) {
            let pending = sink.pre_commit(id).map_err(|e| e.to_string())?;
            parts.push((
                uid.clone(),
                subtask,
                SubtaskState {
                    pending,
                    ..SubtaskState::default()
                },
            ));
        }
        Ok(parts)
    }

    fn report_finished(&self, parts: Vec<Part>) {
        let _ = self.links.reports.send(Report::Finished {
            task: self.links.index,
            parts,
        });
    }

    fn source_batch(&mut self, batch: &RecordBatch, edges: &[u32]) -> Result<(), TaskError> {
        if let (Some(g), true) = (self.generator.as_mut(), self.source_timestamps) {
            for r in batch.iter() {
                if let Some(ts) = r.map_err(TaskError::frame)?.timestamp {
                    g.observe(ts);
                }
            }
        }
        if let Some(s) = self.vertex.source {
            self.counters.node_in[s].fetch_add(batch.len() as u64, Ordering::Relaxed);
        }
        self.note_activity(!batch.is_empty())?;
        if !batch.is_empty() {
            self.records(batch, edges)?;
        }
        self.outputs.flush()?;
        self.emit_generated_watermark()?;
        self.fire_processing_timers()
    }

    /// A source that has produced nothing for its strategy's idle timeout is idle: its
    /// downstream stops waiting for its watermark until it produces again.
    fn note_activity(&mut self, produced: bool) -> Result<(), TaskError> {
        let Some(g) = self.generator.as_mut() else {
            return Ok(());
        };
        if produced {
            g.last_record = Instant::now();
            if g.idle {
                g.idle = false;
                self.outputs.broadcast(|| Message::Idle(false))?;
            }
        } else if let Some(ms) = g.strategy.idle_timeout_ms {
            if !g.idle && g.last_record.elapsed() >= Duration::from_millis(ms.max(0) as u64) {
                g.idle = true;
                self.outputs.broadcast(|| Message::Idle(true))?;
            }
        }
        Ok(())
    }

    /// Polls a source written in the guest until it ends (or the job is cancelled).
    fn run_guest_source(&mut self) -> Result<(), TaskError> {
        loop {
            if self.cancelled() {
                return Err(TaskError::Cancelled);
            }
            let ctx = self.ctx();
            let guest = self
                .guest
                .as_mut()
                .expect("a guest source has a guest chain");
            let polled = guest.poll(self.batch_size as u32, ctx)?;
            let produced = !polled.batch.output.is_empty();
            self.apply(polled.batch)?;
            self.maybe_publish()?;
            self.note_activity(produced)?;
            self.outputs.flush()?;
            self.emit_generated_watermark()?;
            if polled.finished {
                return Ok(());
            }
            if !produced {
                // Nothing available: poll again a little later instead of spinning.
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    fn run_gate(&mut self, gate: &mut InputGate) -> Result<(), TaskError> {
        loop {
            if self.cancelled() {
                return Err(TaskError::Cancelled);
            }
            match gate.next(Duration::from_millis(50))? {
                Input::Batch(b) => {
                    self.records(&b, &[])?;
                    self.outputs.flush()?;
                    self.emit_generated_watermark()?;
                    self.maybe_publish()?;
                }
                Input::Watermark(w) => self.advance_watermark(w)?,
                Input::Idle => self.outputs.broadcast(|| Message::Idle(true))?,
                Input::Barrier(b) => self.on_barrier(&b)?,
                Input::End => return Ok(()),
                Input::Timeout => {}
            }
            self.poll_notices();
            self.fire_processing_timers()?;
        }
    }

    /// Processes records: through the guest chain, or straight to the outputs.
    fn records(&mut self, batch: &RecordBatch, source_edges: &[u32]) -> Result<(), TaskError> {
        let Some(guest) = self.guest.as_mut() else {
            if let (true, Some(sink)) = (source_edges.is_empty(), self.outputs.sink.as_mut()) {
                // A sink of its own: records arrive encoded for it.
                for r in batch.iter() {
                    sink.write(r.map_err(TaskError::frame)?.value)?;
                }
                return Ok(());
            }
            // No guest code: a source feeding exchanges (every output edge gets a copy).
            for r in batch.iter() {
                let r = r.map_err(TaskError::frame)?;
                for &edge in source_edges {
                    self.outputs.route(frame::RecordRef { edge, ..r })?;
                }
            }
            return Ok(());
        };
        self.builder.clear();
        self.key_groups.clear();
        self.hints.clear();
        if !self.keyed {
            FrameBuilder::unkeyed_frame(batch, &mut self.frame);
            let ctx = CallContext {
                watermark: self.input_watermark.0,
                processing_time: now_ms(),
            };
            let result = guest.process(&self.frame, ctx)?;
            return self.apply(result);
        }
        for r in batch.iter() {
            let r = r.map_err(TaskError::frame)?;
            let key_index = match r.key {
                Some(key) => {
                    let backend = guest.backend().expect("keyed tasks have a backend");
                    let n = self.builder.key_count();
                    let kg = key_group_for(key, self.max_parallelism);
                    let hints = &mut self.hints;
                    let mut failed = None;
                    let i = self.builder.key(key, |slots| {
                        failed = prefetch(backend, kg, key, slots, hints).err();
                    });
                    if let Some(e) = failed {
                        return Err(e.into());
                    }
                    if i == n {
                        self.key_groups.push(kg);
                    }
                    i
                }
                None => {
                    return Err(TaskError::Protocol(
                        "a record arrived at a keyed operator without a key".into(),
                    ))
                }
            };
            self.builder
                .record(r.edge, Some(key_index), r.timestamp, r.value);
        }
        self.builder.finish_into(&mut self.frame);
        let ctx = CallContext {
            watermark: self.input_watermark.0,
            processing_time: now_ms(),
        };
        let result = guest.process(&self.frame, ctx)?;
        self.apply(result)
    }

    /// Applies a guest call's result: state writes, timers, watermark observations, outputs.
    fn apply(&mut self, result: BatchResult) -> Result<(), TaskError> {
        let guest = self.guest.as_mut().expect("results come from the guest");
        let label = guest.label().to_string();
        let bad = |what: String| {
            TaskError::Guest(GuestError::Trap {
                operator: label.clone(),
                message: what,
            })
        };
        if !result.state_writes.is_empty() || !result.timer_ops.is_empty() {
            let keys = &self.builder;
            let max_value = guest.max_state_value();
            let backend = guest
                .backend_mut()
                .ok_or_else(|| bad("wrote keyed state on an unkeyed stream".into()))?;
            for w in frame::state_writes(&result.state_writes) {
                let w = w.map_err(TaskError::frame)?;
                let (Some(key), Some(&kg)) = (
                    keys.key_at(w.key_index),
                    self.key_groups.get(w.key_index as usize),
                ) else {
                    return Err(bad(format!(
                        "state write for unknown key index {}",
                        w.key_index
                    )));
                };
                let Some(Some(slot)) = self.value_slot.get(w.state_index as usize) else {
                    return Err(bad(format!(
                        "state write to state {} which is not a value state",
                        w.state_index
                    )));
                };
                let per_key = self.value_slot.iter().flatten().count();
                let hint = self
                    .hints
                    .get(w.key_index as usize * per_key + slot)
                    .copied()
                    .flatten();
                match w.value {
                    Some(v) if v.len() as u64 > max_value => {
                        return Err(TaskError::Guest(GuestError::StateLimit {
                            operator: label.clone(),
                            error: weir_state::StateLimitExceeded::Value {
                                size: v.len() as u64,
                                limit: max_value,
                            },
                        }))
                    }
                    Some(v) => backend.put_value_hinted(hint, w.state_index, kg, key, v)?,
                    None => backend.clear_value(w.state_index, kg, key)?,
                }
            }
            for op in frame::timer_ops(&result.timer_ops) {
                let op = op.map_err(TaskError::frame)?;
                let (Some(key), Some(&kg)) = (
                    keys.key_at(op.key_index),
                    self.key_groups.get(op.key_index as usize),
                ) else {
                    return Err(bad(format!("timer for unknown key index {}", op.key_index)));
                };
                match op.kind {
                    TimerOpKind::RegisterEventTime => {
                        backend.register_timer(TimeDomain::EventTime, kg, key, op.timestamp)
                    }
                    TimerOpKind::DeleteEventTime => {
                        backend.delete_timer(TimeDomain::EventTime, kg, key, op.timestamp)
                    }
                    TimerOpKind::RegisterProcessingTime => {
                        backend.register_timer(TimeDomain::ProcessingTime, kg, key, op.timestamp)
                    }
                    TimerOpKind::DeleteProcessingTime => {
                        backend.delete_timer(TimeDomain::ProcessingTime, kg, key, op.timestamp)
                    }
                }
            }
        }
        if let Some(b) = guest.backend_mut() {
            b.end_batch()?;
            // Over a limit, the job fails here, a batch's writes at most past it.
            guest.charge_state()?;
        }
        if let (Some(ts), Some(g)) = (result.max_timestamp, self.generator.as_mut()) {
            g.observe(ts);
        }
        for r in frame::OutputIter::new(&result.output) {
            self.outputs.route(r.map_err(TaskError::frame)?)?;
        }
        Ok(())
    }

    fn emit_generated_watermark(&mut self) -> Result<(), TaskError> {
        if let Some(wm) = self
            .generator
            .as_mut()
            .and_then(WatermarkGenerator::advance)
        {
            self.outputs.broadcast(|| Message::Watermark(wm))?;
        }
        Ok(())
    }

    /// The input watermark advanced: fire event-time timers, then pass it on (unless this
    /// vertex generates its own watermarks).
    fn advance_watermark(&mut self, w: Watermark) -> Result<(), TaskError> {
        if w <= self.input_watermark {
            return Ok(());
        }
        self.input_watermark = w;
        if w < Watermark::MAX {
            self.finite_watermark = w;
            if let Some(m) = self.counters.watermarks.get(self.links.index) {
                m.store(w.0, Ordering::Relaxed);
            }
        }
        self.fire_timers(TimeDomain::EventTime, w.0)?;
        if self.generator.is_none() || w == Watermark::MAX {
            self.outputs.broadcast(|| Message::Watermark(w))?;
        }
        Ok(())
    }

    fn fire_processing_timers(&mut self) -> Result<(), TaskError> {
        let due = self
            .guest
            .as_ref()
            .and_then(|g| g.backend())
            .and_then(|b| b.next_timer(TimeDomain::ProcessingTime));
        match due {
            Some(t) if t <= now_ms() => self.fire_timers(TimeDomain::ProcessingTime, now_ms()),
            _ => Ok(()),
        }
    }

    fn fire_timers(&mut self, domain: TimeDomain, upto: i64) -> Result<(), TaskError> {
        if !self.keyed {
            return Ok(());
        }
        // One timestamp at a time, applying each round's timer registrations and deletions
        // before the next: a callback can delete (or add) a later timer before it is due.
        loop {
            if self.cancelled() {
                return Err(TaskError::Cancelled);
            }
            let mut due = std::mem::take(&mut self.due);
            due.clear();
            {
                let guest = self.guest.as_mut().expect("keyed");
                let backend = guest.backend_mut().expect("keyed");
                match backend.next_timer(domain) {
                    Some(next) if next <= upto => backend.pop_due_timers(domain, next, &mut due),
                    _ => {}
                }
            }
            if due.is_empty() {
                self.due = due;
                return Ok(());
            }
            for chunk in due.chunks(self.batch_size) {
                self.builder.clear();
                self.key_groups.clear();
                self.hints.clear();
                let guest = self.guest.as_mut().expect("keyed");
                let backend = guest.backend().expect("keyed");
                for t in chunk {
                    let n = self.builder.key_count();
                    let hints = &mut self.hints;
                    let mut failed = None;
                    let i = self.builder.key(&t.key, |slots| {
                        failed = prefetch(backend, t.key_group, &t.key, slots, hints).err();
                    });
                    if let Some(e) = failed {
                        return Err(e.into());
                    }
                    if i == n {
                        self.key_groups.push(t.key_group);
                    }
                    self.builder
                        .timer(i, domain == TimeDomain::ProcessingTime, t.timestamp);
                }
                self.builder.finish_into(&mut self.frame);
                let ctx = self.ctx();
                let guest = self.guest.as_mut().expect("keyed");
                let result = guest.on_timers(&self.frame, ctx)?;
                self.apply(result)?;
            }
            self.outputs.flush()?;
            self.due = due;
        }
    }

    fn finish(&mut self) -> Result<(), TaskError> {
        self.advance_watermark(Watermark::MAX)?;
        if self.generator.is_some() {
            self.outputs
                .broadcast(|| Message::Watermark(Watermark::MAX))?;
        }
        if let Some(guest) = self.guest.as_mut() {
            let ctx = CallContext {
                watermark: Watermark::MAX.0,
                processing_time: now_ms(),
            };
            let result = guest.finish(ctx)?;
            self.builder.clear();
            self.key_groups.clear();
            self.hints.clear();
            self.apply(result)?;
        }
        if let Some(sink) = self.outputs.sink.as_mut() {
            sink.finish()?;
        }
        // Stopping with a drained savepoint: a full snapshot, and the task is not finished
        // for the savepoint (a job started from it goes on reading). Otherwise only what a
        // finished task needs (its last sink transaction).
        let drained = self
            .links
            .control
            .drain_target
            .lock()
            .expect("not poisoned")
            .clone();
        let parts = match &drained {
            Some(b) => {
                // A job started from it goes on in event time from where the input ended,
                // not from +inf.
                self.input_watermark = self.finite_watermark;
                let parts = self.snapshot(b.id, Some(&b.dir), true);
                self.input_watermark = Watermark::MAX;
                parts
            }
            None => self.snapshot(u64::MAX, None, false),
        }
        .map_err(TaskError::Protocol)?;
        self.report_finished(parts);
        self.outputs.broadcast(|| Message::End)?;
        self.publish_counters()
    }

    /// Stores this task's cumulative guest time, guest memory and time blocked (no guest
    /// call needed).
    fn publish_usage(&mut self) {
        let t = self.links.index;
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        if let Some(c) = self.counters.blocked_nanos.get(t) {
            c.store(nanos(self.outputs.blocked()), Ordering::Relaxed);
        }
        if let Some(usage) = self.guest.as_ref().map(|g| g.usage()) {
            if let Some(c) = self.counters.guest_nanos.get(t) {
                c.store(nanos(usage.busy), Ordering::Relaxed);
            }
            if let Some(c) = self.counters.guest_memory.get(t) {
                c.store(usage.memory_bytes, Ordering::Relaxed);
            }
        }
    }

    /// Publishes the counts about once a second, so that they can be watched live.
    fn maybe_publish(&mut self) -> Result<(), TaskError> {
        if self.last_publish.elapsed() >= PUBLISH_INTERVAL {
            self.publish_counters()?;
        }
        Ok(())
    }

    /// Adds this subtask's counts since the last call to the job's.
    fn publish_counters(&mut self) -> Result<(), TaskError> {
        self.last_publish = Instant::now();
        self.publish_usage();
        if let Some(guest) = self.guest.as_mut() {
            let counts = guest.metrics()?;
            for (i, (&node, &n)) in self.vertex.guest.iter().zip(&counts).enumerate() {
                let before = self.published.0.get(i).copied().unwrap_or(0);
                self.counters.node_in[node].fetch_add(n.saturating_sub(before), Ordering::Relaxed);
            }
            self.published.0 = counts;
        }
        if let (Some(node), Some(sink)) = (self.vertex.sink, self.outputs.sink.as_ref()) {
            let n = sink.count();
            let delta = n.saturating_sub(self.published.1);
            self.counters.node_in[node].fetch_add(delta, Ordering::Relaxed);
            self.published.1 = n;
        }
        for (e, n) in self.outputs.take_edge_counts().into_iter().enumerate() {
            if n > 0 {
                self.counters.edges[e].fetch_add(n, Ordering::Relaxed);
            }
        }
        Ok(())
    }
}
