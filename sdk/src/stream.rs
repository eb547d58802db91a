//! Declaring a job's dataflow graph: [`StreamEnv`], [`DataStream`], [`KeyedStream`].
//!
//! A job is a function that receives the environment and wires sources, operators and sinks.
//! The host calls it to learn the graph, and again in every task to build that task's
//! operators, so it must be deterministic for the same arguments.
//!
//! ```
//! use weir::prelude::*;
//!
//! fn build(env: &mut StreamEnv) -> Result<()> {
//!     env.datagen(Datagen::bounded(1_000))
//!         .map(|r: DatagenRecord| r.value)
//!         .filter(|v: &i64| v % 2 == 0)
//!         .uid("evens")
//!         .sink(Sink::blackhole());
//!     Ok(())
//! }
//! # let plan = weir::testing::plan_of(build, &[]).unwrap();
//! # assert_eq!(plan.nodes.len(), 4);
//! ```

use std::any::Any;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::rc::Rc;

use crate::codec::{decode_datagen, decode_json, decode_line, decode_postcard, Data, Decode};
use crate::codec::{encode_postcard, SinkFormat};
use crate::connectors::{Datagen, DatagenRecord, FileSource, Sink};
use crate::process::{KeyedProcessFunction, KeyedProcessOp, StateTable};
use crate::runtime::{
    make_head, tee_erased, BoxOp, EdgeWriter, Failure, Head, KeyWriter, Op, OpResult, RunCx,
    SideOutputs, Tracked,
};
use crate::source::{SourceContext, SourceFunction, SourceHead};
use crate::state::StateDescriptor;
use crate::{Error, Result};

/// How records are spread over the next operator's subtasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Partitioning {
    /// Subtask i to subtask i (the default between operators of equal parallelism).
    Forward,
    /// By key (set by `key_by`).
    Hash,
    /// Round robin.
    Rebalance,
    /// To every subtask.
    Broadcast,
}

/// How event time advances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WatermarkStrategy {
    /// How far out of order records may arrive, in milliseconds.
    pub max_out_of_orderness_ms: i64,
    /// An input silent this long (processing time) stops holding the watermark back.
    pub idle_timeout_ms: Option<i64>,
}

impl WatermarkStrategy {
    /// Watermark = highest timestamp seen − `ms` − 1 (Flink's bounded out-of-orderness).
    pub fn bounded_out_of_orderness(ms: i64) -> Self {
        WatermarkStrategy {
            max_out_of_orderness_ms: ms,
            idle_timeout_ms: None,
        }
    }

    /// Timestamps only ever increase.
    pub fn monotonous_timestamps() -> Self {
        Self::bounded_out_of_orderness(0)
    }

    /// Marks the input idle after `ms` without records.
    pub fn with_idleness(mut self, ms: i64) -> Self {
        self.idle_timeout_ms = Some(ms);
        self
    }
}

/// Names a side output of type `T`.
pub struct OutputTag<T> {
    name: &'static str,
    _type: PhantomData<fn() -> T>,
}

impl<T> OutputTag<T> {
    /// A tag called `name`.
    pub const fn new(name: &'static str) -> Self {
        OutputTag {
            name,
            _type: PhantomData,
        }
    }

    /// The tag's name.
    pub const fn name(&self) -> &'static str {
        self.name
    }
}

pub(crate) enum NodeKindDef {
    Source {
        connector: &'static str,
        config: Vec<(String, String)>,
    },
    Sink {
        connector: &'static str,
        config: Vec<(String, String)>,
    },
    Operator,
    GuestSource,
}

/// What a task gives a node when it opens it.
pub(crate) struct NodeOpen {
    /// Position in the chain, for naming the operator that panics.
    pub position: u32,
    /// Subtask index and parallelism of the chain.
    pub subtask: u32,
    pub parallelism: u32,
    /// Counts the records the node takes in (a source: emits).
    pub records_in: Rc<std::cell::Cell<u64>>,
    pub uid: String,
    pub states: Vec<StateDescriptor>,
    pub downstream: Box<dyn Any>,
    pub sides: SideOutputs,
}

type Instantiate = Rc<dyn Fn(NodeOpen) -> Result<Box<dyn Any>, Failure>>;
type MakeHead = fn(&str, Box<dyn Any>, Vec<(u32, Box<dyn Any>)>) -> Box<dyn Head>;
/// Opens a guest source: the node's opening arguments and watermark strategy → chain head.
type OpenSource = Rc<dyn Fn(NodeOpen, bool) -> Result<Box<dyn Head>, Failure>>;
type TeeFn = fn(Vec<Box<dyn Any>>, &str) -> Box<dyn Any>;

pub(crate) struct NodeDef {
    pub uid: Option<String>,
    pub name: String,
    pub kind: NodeKindDef,
    pub parallelism: Option<u32>,
    pub states: Vec<StateDescriptor>,
    pub watermarks: Option<WatermarkStrategy>,
    /// Encoding of records sent into this node.
    pub input_format: SinkFormat,
    pub instantiate: Option<Instantiate>,
    pub make_head: Option<MakeHead>,
    pub open_source: Option<OpenSource>,
    pub main_tee: TeeFn,
}

impl NodeDef {
    pub(crate) fn uid(&self, index: usize) -> String {
        self.uid
            .clone()
            .unwrap_or_else(|| format!("{}-{index}", self.name))
    }
}

pub(crate) struct EdgeDef {
    pub source: usize,
    pub target: usize,
    pub side_output: Option<String>,
    pub partitioning: Partitioning,
    /// Builds the writer (an erased `BoxOp<T>`) for this edge, given its index and format.
    pub writer: Rc<dyn Fn(u32, SinkFormat) -> Box<dyn Any>>,
    /// Builds the decoder (an erased `Decode<T>`) used by the receiving node.
    pub decoder: Rc<dyn Fn() -> Box<dyn Any>>,
    pub tee: TeeFn,
}

#[derive(Default)]
pub(crate) struct GraphDef {
    pub name: String,
    pub max_parallelism: u32,
    pub nodes: Vec<NodeDef>,
    pub edges: Vec<EdgeDef>,
}

/// The environment a job's build function wires its graph in.
pub struct StreamEnv {
    pub(crate) graph: Rc<RefCell<GraphDef>>,
    args: BTreeMap<String, String>,
}

impl StreamEnv {
    pub(crate) fn new(args: &[(String, String)]) -> Self {
        StreamEnv {
            graph: Rc::new(RefCell::new(GraphDef {
                name: "weir-job".into(),
                ..GraphDef::default()
            })),
            args: args.iter().cloned().collect(),
        }
    }

    /// The value of `--arg name=value`, or an error naming the missing argument.
    pub fn arg(&self, name: &str) -> Result<&str> {
        self.args
            .get(name)
            .map(String::as_str)
            .ok_or_else(|| Error::msg(format!("missing job argument '{name}' (--arg {name}=...)")))
    }

    /// The value of `--arg name=value`, or `default`.
    pub fn arg_or<'a>(&'a self, name: &str, default: &'a str) -> &'a str {
        self.args.get(name).map(String::as_str).unwrap_or(default)
    }

    /// An argument parsed as `T`, or `default` if absent.
    pub fn arg_parse<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T>
    where
        T::Err: std::fmt::Display,
    {
        match self.args.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|e| Error::msg(format!("job argument '{name}={v}': {e}"))),
        }
    }

    /// Names the job.
    pub fn set_job_name(&mut self, name: impl Into<String>) {
        self.graph.borrow_mut().name = name.into();
    }

    /// Sets the number of key groups (default 128).
    pub fn set_max_parallelism(&mut self, n: u32) {
        self.graph.borrow_mut().max_parallelism = n;
    }

    pub(crate) fn connector_source<T: Data>(
        &self,
        name: &str,
        connector: &'static str,
        config: Vec<(String, String)>,
        decode: Decode<T>,
    ) -> DataStream<T> {
        let node = add_node(
            &self.graph,
            NodeDef {
                uid: None,
                name: name.into(),
                kind: NodeKindDef::Source { connector, config },
                parallelism: None,
                states: vec![],
                watermarks: None,
                input_format: SinkFormat::Postcard,
                instantiate: None,
                make_head: None,
                open_source: None,
                main_tee: tee_erased::<T>,
            },
        );
        DataStream::new(&self.graph, node, None, decode)
    }

    /// Lines of a text file (or of every file in a directory), as UTF-8 strings. Bounded.
    pub fn file_lines(&self, path: impl Into<String>) -> DataStream<String> {
        let config = vec![
            ("path".into(), path.into()),
            ("format".into(), "lines".into()),
        ];
        self.connector_source("file-source", "file", config, decode_line)
    }

    /// Lines of a file (or directory) as configured (see [`FileSource`]).
    pub fn file(&self, source: FileSource) -> DataStream<String> {
        self.connector_source("file-source", "file", source.config, decode_line)
    }

    /// JSON lines of a file (or directory), each decoded into `T`. Bounded.
    pub fn file_json_lines<T: Data>(&self, path: impl Into<String>) -> DataStream<T> {
        let config = vec![
            ("path".into(), path.into()),
            ("format".into(), "json".into()),
        ];
        self.connector_source("file-source", "file", config, decode_json::<T>)
    }

    /// A source written in the guest (see [`crate::source`]).
    pub fn source<S: SourceFunction>(&self, source: S) -> DataStream<S::Out> {
        let open: OpenSource = Rc::new(move |mut open: NodeOpen, assigns: bool| {
            let down = std::mem::replace(&mut open.downstream, Box::new(()));
            let down = *down
                .downcast::<BoxOp<S::Out>>()
                .map_err(|_| Failure::new(&open.uid, "chained operators disagree on types"))?;
            let mut source = source.clone();
            let ctx = SourceContext {
                subtask: open.subtask,
                parallelism: open.parallelism,
            };
            source
                .open(&ctx)
                .map_err(|e| crate::process::error_to_failure(&open.uid, e))?;
            Ok(Box::new(SourceHead {
                uid: open.uid,
                source,
                down,
                assigns,
                emitted: open.records_in,
            }) as Box<dyn Head>)
        });
        let node = add_node(
            &self.graph,
            NodeDef {
                uid: None,
                name: "source".into(),
                kind: NodeKindDef::GuestSource,
                parallelism: None,
                states: vec![],
                watermarks: None,
                input_format: SinkFormat::Postcard,
                instantiate: None,
                make_head: None,
                open_source: Some(open),
                main_tee: tee_erased::<S::Out>,
            },
        );
        DataStream::new(&self.graph, node, None, decode_postcard::<S::Out>)
    }

    /// Deterministic generated records (see [`Datagen`]).
    pub fn datagen(&self, config: Datagen) -> DataStream<DatagenRecord> {
        self.connector_source("datagen", "datagen", config.config, decode_datagen)
    }
}

fn add_node(graph: &Rc<RefCell<GraphDef>>, node: NodeDef) -> usize {
    let mut g = graph.borrow_mut();
    g.nodes.push(node);
    g.nodes.len() - 1
}

/// A stream of records of type `T`.
pub struct DataStream<T> {
    graph: Rc<RefCell<GraphDef>>,
    node: usize,
    side: Option<String>,
    decode: Decode<T>,
    partitioning: Partitioning,
}

impl<T> Clone for DataStream<T> {
    fn clone(&self) -> Self {
        DataStream {
            graph: self.graph.clone(),
            node: self.node,
            side: self.side.clone(),
            decode: self.decode,
            partitioning: self.partitioning,
        }
    }
}

impl<T: Data> DataStream<T> {
    fn new(
        graph: &Rc<RefCell<GraphDef>>,
        node: usize,
        side: Option<String>,
        decode: Decode<T>,
    ) -> Self {
        DataStream {
            graph: graph.clone(),
            node,
            side,
            decode,
            partitioning: Partitioning::Forward,
        }
    }

    fn with_node(self, f: impl FnOnce(&mut NodeDef)) -> Self {
        f(&mut self.graph.borrow_mut().nodes[self.node]);
        self
    }

    /// Sets the stable uid of the operator that produces this stream. State in savepoints is
    /// matched by uid: set one on every stateful operator.
    pub fn uid(self, uid: impl Into<String>) -> Self {
        let uid = uid.into();
        self.with_node(|n| n.uid = Some(uid))
    }

    /// Sets the display name of the operator that produces this stream.
    pub fn name(self, name: impl Into<String>) -> Self {
        let name = name.into();
        self.with_node(|n| n.name = name)
    }

    /// Sets the parallelism of the operator that produces this stream.
    pub fn parallelism(self, n: u32) -> Self {
        self.with_node(|node| node.parallelism = Some(n))
    }

    /// Event time from the source's own timestamps (datagen), with this strategy.
    pub fn with_watermarks(self, strategy: WatermarkStrategy) -> Self {
        self.with_node(|n| n.watermarks = Some(strategy))
    }

    /// Sends records round robin to the next operator's subtasks.
    pub fn rebalance(mut self) -> Self {
        self.partitioning = Partitioning::Rebalance;
        self
    }

    /// Sends every record to every subtask of the next operator.
    pub fn broadcast(mut self) -> Self {
        self.partitioning = Partitioning::Broadcast;
        self
    }

    /// Sends records from subtask i to subtask i (the default).
    pub fn forward(mut self) -> Self {
        self.partitioning = Partitioning::Forward;
        self
    }

    /// Adds an edge from this stream to `target`.
    fn connect(&self, target: usize, key: Option<KeyWriter<T>>) {
        let partitioning = if key.is_some() {
            Partitioning::Hash
        } else {
            self.partitioning
        };
        let decode = self.decode;
        let edge = EdgeDef {
            source: self.node,
            target,
            side_output: self.side.clone(),
            partitioning,
            writer: Rc::new(move |edge, format| {
                let op: BoxOp<T> = Box::new(EdgeWriter {
                    edge,
                    encode: format.encoder::<T>(),
                    key: key.clone(),
                });
                Box::new(op)
            }),
            decoder: Rc::new(move || Box::new(decode)),
            tee: tee_erased::<T>,
        };
        self.graph.borrow_mut().edges.push(edge);
    }

    /// Adds a guest operator fed by `inputs` (all of type `T`).
    pub(crate) fn operator<O: Data>(
        inputs: &[(&DataStream<T>, Option<KeyWriter<T>>)],
        name: &str,
        states: Vec<StateDescriptor>,
        make: impl Fn(NodeOpen, BoxOp<O>) -> Result<BoxOp<T>, Failure> + 'static,
    ) -> DataStream<O> {
        let graph = inputs[0].0.graph.clone();
        let instantiate: Instantiate = Rc::new(move |mut open: NodeOpen| {
            let down = std::mem::replace(&mut open.downstream, Box::new(()));
            let down = *down
                .downcast::<BoxOp<O>>()
                .map_err(|_| Failure::new(&open.uid, "chained operators disagree on types"))?;
            let (position, records_in) = (open.position, open.records_in.clone());
            let op: BoxOp<T> = Box::new(Tracked {
                position,
                inner: make(open, down)?,
                records_in,
            });
            Ok(Box::new(op) as Box<dyn Any>)
        });
        let node = add_node(
            &graph,
            NodeDef {
                uid: None,
                name: name.into(),
                kind: NodeKindDef::Operator,
                parallelism: None,
                states,
                watermarks: None,
                input_format: SinkFormat::Postcard,
                instantiate: Some(instantiate),
                make_head: Some(make_head::<T>),
                open_source: None,
                main_tee: tee_erased::<O>,
            },
        );
        for (input, key) in inputs {
            input.connect(node, key.clone());
        }
        DataStream::new(&graph, node, None, decode_postcard::<O>)
    }

    /// Transforms every record.
    pub fn map<O: Data>(&self, f: impl Fn(T) -> O + Clone + 'static) -> DataStream<O> {
        Self::operator(&[(self, None)], "map", vec![], move |_, down| {
            Ok(Box::new(MapOp { f: f.clone(), down }))
        })
    }

    /// Keeps the records for which `f` is true.
    pub fn filter(&self, f: impl Fn(&T) -> bool + Clone + 'static) -> DataStream<T> {
        Self::operator(&[(self, None)], "filter", vec![], move |_, down| {
            Ok(Box::new(FilterOp { f: f.clone(), down }))
        })
    }

    /// Turns every record into zero or more records.
    pub fn flat_map<O: Data, I: IntoIterator<Item = O> + 'static>(
        &self,
        f: impl Fn(T) -> I + Clone + 'static,
    ) -> DataStream<O> {
        Self::operator(&[(self, None)], "flat-map", vec![], move |_, down| {
            Ok(Box::new(FlatMapOp {
                f: f.clone(),
                down,
                _type: PhantomData,
            }))
        })
    }

    /// Takes each record's event timestamp from `f` and generates watermarks with
    /// `strategy`, after every batch the source reads.
    pub fn assign_timestamps_and_watermarks(
        &self,
        strategy: WatermarkStrategy,
        f: impl Fn(&T) -> i64 + Clone + 'static,
    ) -> DataStream<T> {
        let s = Self::operator(&[(self, None)], "timestamps", vec![], move |_, down| {
            Ok(Box::new(AssignerOp { f: f.clone(), down }))
        });
        s.with_node(|n| n.watermarks = Some(strategy))
    }

    /// Merges this stream with others of the same type.
    pub fn union(&self, others: &[DataStream<T>]) -> DataStream<T> {
        let mut inputs = vec![(self, None)];
        inputs.extend(others.iter().map(|o| (o, None)));
        Self::operator(&inputs, "union", vec![], |_, down| {
            Ok(Box::new(MapOp { f: |v: T| v, down }))
        })
    }

    /// Partitions the stream by key: records with equal keys go to the same subtask, in
    /// order, and keyed state and timers are scoped to the key.
    pub fn key_by<K: Data>(&self, f: impl Fn(&T) -> K + 'static) -> KeyedStream<K, T> {
        KeyedStream {
            stream: self.through_guest(),
            key: Rc::new(f),
        }
    }

    /// Keys are computed and sink records encoded by guest code, so a stream straight from a
    /// host source passes through an identity operator (chained with the source) first.
    fn through_guest(&self) -> DataStream<T> {
        // The test harness feeds its input as an upstream guest operator would.
        let from_source = matches!(
            self.graph.borrow().nodes[self.node].kind,
            NodeKindDef::Source { connector, .. } if connector != "harness"
        ) && self.side.is_none();
        if from_source {
            let partitioning = self.partitioning;
            let mut s = self.clone().forward().map(|v: T| v).name("from-source");
            s.partitioning = partitioning;
            s
        } else {
            self.clone()
        }
    }

    /// The records the producing operator sent to side output `tag`.
    pub fn side_output<S: Data>(&self, tag: &OutputTag<S>) -> DataStream<S> {
        DataStream::new(
            &self.graph,
            self.node,
            Some(tag.name().to_string()),
            decode_postcard::<S>,
        )
    }

    /// Writes the stream to a host sink connector.
    pub fn sink(&self, sink: Sink) -> SinkStream {
        let this = self.through_guest();
        let node = add_node(
            &self.graph,
            NodeDef {
                uid: None,
                name: format!("{}-sink", sink.name),
                kind: NodeKindDef::Sink {
                    connector: sink.name,
                    config: sink.config,
                },
                parallelism: None,
                states: vec![],
                watermarks: None,
                input_format: sink.format,
                instantiate: None,
                make_head: None,
                open_source: None,
                main_tee: tee_erased::<T>,
            },
        );
        this.connect(node, None);
        SinkStream {
            graph: self.graph.clone(),
            node,
        }
    }
}

/// A sink, to set its uid, name or parallelism.
pub struct SinkStream {
    graph: Rc<RefCell<GraphDef>>,
    node: usize,
}

impl SinkStream {
    /// Sets the sink's stable uid.
    pub fn uid(self, uid: impl Into<String>) -> Self {
        self.graph.borrow_mut().nodes[self.node].uid = Some(uid.into());
        self
    }

    /// Sets the sink's display name.
    pub fn name(self, name: impl Into<String>) -> Self {
        self.graph.borrow_mut().nodes[self.node].name = name.into();
        self
    }

    /// Sets the sink's parallelism.
    pub fn parallelism(self, n: u32) -> Self {
        self.graph.borrow_mut().nodes[self.node].parallelism = Some(n);
        self
    }
}

/// A stream partitioned by a key of type `K`.
pub struct KeyedStream<K, T> {
    pub(crate) stream: DataStream<T>,
    pub(crate) key: Rc<dyn Fn(&T) -> K>,
}

impl<K: Data, T: Data> KeyedStream<K, T> {
    pub(crate) fn key_writer(&self) -> KeyWriter<T> {
        let key = self.key.clone();
        Rc::new(move |v: &T, out: &mut Vec<u8>| encode_postcard(&key(v), out))
    }

    /// Runs a keyed process function: per-key state and timers.
    pub fn process<F>(&self, f: F) -> DataStream<F::Out>
    where
        F: KeyedProcessFunction<Key = K, In = T>,
    {
        DataStream::operator(
            &[(&self.stream, Some(self.key_writer()))],
            "process",
            F::STATE.to_vec(),
            move |open, down| {
                Ok(Box::new(KeyedProcessOp {
                    f: f.clone(),
                    table: StateTable::new(&open.uid, &open.states),
                    down,
                    sides: open.sides,
                }))
            },
        )
    }
}

struct MapOp<F, O> {
    f: F,
    down: BoxOp<O>,
}

impl<I, O, F: Fn(I) -> O> Op<I> for MapOp<F, O> {
    fn element(&mut self, value: I, cx: &mut RunCx<'_>) -> OpResult {
        self.down.element((self.f)(value), cx)
    }

    fn finish(&mut self, cx: &mut RunCx<'_>) -> OpResult {
        self.down.finish(cx)
    }
}

struct FilterOp<F, T> {
    f: F,
    down: BoxOp<T>,
}

impl<T, F: Fn(&T) -> bool> Op<T> for FilterOp<F, T> {
    fn element(&mut self, value: T, cx: &mut RunCx<'_>) -> OpResult {
        if (self.f)(&value) {
            self.down.element(value, cx)?;
        }
        Ok(())
    }

    fn finish(&mut self, cx: &mut RunCx<'_>) -> OpResult {
        self.down.finish(cx)
    }
}

struct FlatMapOp<F, O, It> {
    f: F,
    down: BoxOp<O>,
    _type: PhantomData<fn() -> It>,
}

impl<I, O, It: IntoIterator<Item = O>, F: Fn(I) -> It> Op<I> for FlatMapOp<F, O, It> {
    fn element(&mut self, value: I, cx: &mut RunCx<'_>) -> OpResult {
        for o in (self.f)(value) {
            self.down.element(o, cx)?;
        }
        Ok(())
    }

    fn finish(&mut self, cx: &mut RunCx<'_>) -> OpResult {
        self.down.finish(cx)
    }
}

struct AssignerOp<F, T> {
    f: F,
    down: BoxOp<T>,
}

impl<T, F: Fn(&T) -> i64> Op<T> for AssignerOp<F, T> {
    fn element(&mut self, value: T, cx: &mut RunCx<'_>) -> OpResult {
        let ts = (self.f)(&value);
        let upstream = cx.ts.replace(ts);
        cx.max_ts = Some(cx.max_ts.map_or(ts, |m| m.max(ts)));
        let r = self.down.element(value, cx);
        // The operator before this one may emit more records: they keep its timestamp.
        cx.ts = upstream;
        r
    }

    fn finish(&mut self, cx: &mut RunCx<'_>) -> OpResult {
        self.down.finish(cx)
    }
}
