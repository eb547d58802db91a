//! The component's exports: the WIT glue around [`crate::stream`] and [`crate::runtime`].

use std::any::Any;
use std::cell::RefCell;
use std::marker::PhantomData;

use crate::runtime::{CallResult, Chain, Failure, StateAccess};
use crate::stream::{GraphDef, NodeKindDef, NodeOpen, Partitioning, StreamEnv};
use crate::wit::exports::weir::stream::job;
use crate::wit::weir::stream::{host, types as w};
use crate::{LogLevel, Result};

/// A job's build function, as `weir::job!` registers it.
pub trait JobDefinition: 'static {
    /// Wires the job's graph.
    fn build(env: &mut StreamEnv) -> Result<()>;
}

/// The exported component for job `J`.
pub struct Component<J>(PhantomData<J>);

pub(crate) fn build_graph(
    build: impl FnOnce(&mut StreamEnv) -> Result<()>,
    args: &[(String, String)],
) -> Result<StreamEnv> {
    let mut env = StreamEnv::new(args);
    build(&mut env)?;
    Ok(env)
}

fn install_panic_hook() {
    #[cfg(target_arch = "wasm32")]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            std::panic::set_hook(Box::new(|info| {
                host::report_panic(&crate::runtime::current_operator(), &info.to_string())
            }));
        });
    }
}

pub(crate) fn log(level: LogLevel, message: &str) {
    #[cfg(target_arch = "wasm32")]
    {
        let level = match level {
            LogLevel::Trace => w::LogLevel::Trace,
            LogLevel::Debug => w::LogLevel::Debug,
            LogLevel::Info => w::LogLevel::Info,
            LogLevel::Warn => w::LogLevel::Warn,
            LogLevel::Error => w::LogLevel::Error,
        };
        host::log(level, message);
    }
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[{level:?}] {message}");
}

pub(crate) fn to_wit_plan(g: &GraphDef) -> w::JobPlan {
    let nodes = g
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| w::Node {
            uid: n.uid(i),
            name: n.name.clone(),
            kind: match &n.kind {
                NodeKindDef::Source { connector, config } => w::NodeKind::Source(w::Connector {
                    name: connector.to_string(),
                    config: config.clone(),
                }),
                NodeKindDef::Sink { connector, config } => w::NodeKind::Sink(w::Connector {
                    name: connector.to_string(),
                    config: config.clone(),
                }),
                NodeKindDef::Operator => w::NodeKind::Operator,
                NodeKindDef::GuestSource => w::NodeKind::GuestSource,
            },
            parallelism: n.parallelism,
            states: n
                .states
                .iter()
                .map(|s| w::StateDescriptor {
                    name: s.name.to_string(),
                    kind: match s.kind {
                        crate::state::StateKind::Value => w::StateKind::Value,
                        crate::state::StateKind::List => w::StateKind::List,
                        crate::state::StateKind::Map => w::StateKind::Map,
                    },
                    version: s.version,
                    ttl: s.ttl.map(|t| w::StateTtl {
                        ttl_ms: t.ttl_ms,
                        refresh_on_read: t.refresh_on_read,
                    }),
                })
                .collect(),
            watermarks: n.watermarks.map(|s| w::WatermarkStrategy {
                max_out_of_orderness_ms: s.max_out_of_orderness_ms,
                idle_timeout_ms: s.idle_timeout_ms,
            }),
        })
        .collect();
    let edges = g
        .edges
        .iter()
        .map(|e| w::Edge {
            source: e.source as u32,
            target: e.target as u32,
            side_output: e.side_output.clone(),
            partitioning: match e.partitioning {
                Partitioning::Forward => w::Partitioning::Forward,
                Partitioning::Hash => w::Partitioning::Hash,
                Partitioning::Rebalance => w::Partitioning::Rebalance,
                Partitioning::Broadcast => w::Partitioning::Broadcast,
            },
        })
        .collect();
    w::JobPlan {
        name: g.name.clone(),
        nodes,
        edges,
        max_parallelism: g.max_parallelism,
    }
}

/// Builds the operator instances of `nodes` (indices into `g.nodes`, upstream first).
pub(crate) fn open_chain(
    g: &GraphDef,
    nodes: &[u32],
    subtask: u32,
    parallelism: u32,
) -> std::result::Result<Chain, Failure> {
    let idx: Vec<usize> = nodes.iter().map(|&n| n as usize).collect();
    let head_index = *idx
        .first()
        .ok_or_else(|| Failure::new("", "a chain needs at least one operator"))?;
    for &n in &idx {
        if n >= g.nodes.len() {
            return Err(Failure::new(
                "",
                format!("node {n} does not exist (the plan has {})", g.nodes.len()),
            ));
        }
    }
    let uid = |n: usize| g.nodes[n].uid(n);
    let main_outputs = |n: usize| {
        g.edges
            .iter()
            .enumerate()
            .filter(move |(_, e)| e.source == n && e.side_output.is_none())
    };
    let last = *idx.last().expect("not empty");
    let writers: Vec<Box<dyn Any>> = main_outputs(last)
        .map(|(i, e)| (e.writer)(i as u32, g.nodes[e.target].input_format))
        .collect();
    let mut downstream = (g.nodes[last].main_tee)(writers, "");
    let counters: Vec<std::rc::Rc<std::cell::Cell<u64>>> =
        idx.iter().map(|_| Default::default()).collect();
    for (pos, &n) in idx.iter().enumerate().rev() {
        let node = &g.nodes[n];
        if let Some(&next) = idx.get(pos + 1) {
            let outs: Vec<_> = main_outputs(n).collect();
            if outs.len() != 1
                || outs[0].1.target != next
                || outs[0].1.partitioning != Partitioning::Forward
            {
                return Err(Failure::new(
                    &uid(n),
                    format!("cannot chain '{}' after it", uid(next)),
                ));
            }
        }
        // Writers of each side output, grouped by name (several edges may read one).
        struct SideGroup {
            name: String,
            writers: Vec<Box<dyn Any>>,
            first_edge: usize,
        }
        let mut groups: Vec<SideGroup> = Vec::new();
        for (i, e) in g.edges.iter().enumerate() {
            if let (true, Some(tag)) = (e.source == n, &e.side_output) {
                let writer = (e.writer)(i as u32, g.nodes[e.target].input_format);
                match groups.iter_mut().find(|s| s.name == *tag) {
                    Some(s) => s.writers.push(writer),
                    None => groups.push(SideGroup {
                        name: tag.clone(),
                        writers: vec![writer],
                        first_edge: i,
                    }),
                }
            }
        }
        let sides = groups
            .into_iter()
            .map(|s| {
                let out = (g.edges[s.first_edge].tee)(s.writers, &s.name);
                (s.name, out)
            })
            .collect();
        let open = NodeOpen {
            position: pos as u32,
            subtask,
            parallelism,
            records_in: counters[pos].clone(),
            uid: uid(n),
            states: node.states.clone(),
            downstream,
            sides: crate::runtime::SideOutputs::new(sides),
        };
        if let (0, Some(open_source)) = (pos, &node.open_source) {
            crate::runtime::set_chain_operators(idx.iter().map(|&n| uid(n)).collect());
            return Ok(Chain {
                head: open_source(open, node.watermarks.is_some())?,
                counters,
                value_states: Vec::new(),
                head_uid: uid(n),
            });
        }
        let instantiate = node
            .instantiate
            .as_ref()
            .ok_or_else(|| Failure::new(&uid(n), "is a host connector, not a guest operator"))?;
        downstream = instantiate(open)?;
    }
    crate::runtime::set_chain_operators(idx.iter().map(|&n| uid(n)).collect());
    let head_node = &g.nodes[head_index];
    let decoders = g
        .edges
        .iter()
        .enumerate()
        .filter(|(_, e)| e.target == head_index)
        .map(|(i, e)| (i as u32, (e.decoder)()))
        .collect();
    let make_head = head_node
        .make_head
        .ok_or_else(|| Failure::new(&uid(head_index), "cannot head a chain"))?;
    Ok(Chain {
        head: make_head(&uid(head_index), downstream, decoders),
        counters,
        value_states: Chain::value_slots(&head_node.states),
        head_uid: uid(head_index),
    })
}

/// List and map state through the host's imports.
struct HostState;

impl StateAccess for HostState {
    fn list_get(&mut self, state: u32, key: &[u8]) -> Vec<Vec<u8>> {
        host::list_get(state, key)
    }
    fn list_add(&mut self, state: u32, key: &[u8], value: &[u8]) {
        host::list_add(state, key, value)
    }
    fn list_clear(&mut self, state: u32, key: &[u8]) {
        host::list_clear(state, key)
    }
    fn map_get(&mut self, state: u32, key: &[u8], user_key: &[u8]) -> Option<Vec<u8>> {
        host::map_get(state, key, user_key)
    }
    fn map_put(&mut self, state: u32, key: &[u8], user_key: &[u8], value: &[u8]) {
        host::map_put(state, key, user_key, value)
    }
    fn map_remove(&mut self, state: u32, key: &[u8], user_key: &[u8]) {
        host::map_remove(state, key, user_key)
    }
    fn map_entries(&mut self, state: u32, key: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        host::map_entries(state, key)
    }
    fn map_clear(&mut self, state: u32, key: &[u8]) {
        host::map_clear(state, key)
    }
}

fn to_wit_result(
    r: std::result::Result<CallResult, Failure>,
) -> std::result::Result<w::BatchResult, w::OperatorError> {
    r.map(|c| w::BatchResult {
        output: c.output,
        state_writes: c.state_writes,
        timer_ops: c.timer_ops,
        max_timestamp: c.max_timestamp,
    })
    .map_err(|f| w::OperatorError {
        operator: f.operator,
        message: f.message,
    })
}

impl<J: JobDefinition> job::Guest for Component<J> {
    type Chain = ChainResource<J>;

    fn plan(args: Vec<(String, String)>) -> std::result::Result<w::JobPlan, String> {
        install_panic_hook();
        let env = build_graph(J::build, &args).map_err(|e| e.to_string())?;
        let plan = to_wit_plan(&env.graph.borrow());
        Ok(plan)
    }
}

/// One opened chain, owned by the host through a resource handle.
pub struct ChainResource<J> {
    chain: RefCell<Chain>,
    _job: PhantomData<J>,
}

impl<J: JobDefinition> job::GuestChain for ChainResource<J> {
    fn open(info: w::TaskInfo) -> std::result::Result<job::Chain, w::OperatorError> {
        install_panic_hook();
        let env = build_graph(J::build, &info.args).map_err(|e| w::OperatorError {
            operator: String::new(),
            message: e.to_string(),
        })?;
        let graph = env.graph.borrow();
        let chain =
            open_chain(&graph, &info.nodes, info.subtask, info.parallelism).map_err(|f| {
                w::OperatorError {
                    operator: f.operator,
                    message: f.message,
                }
            })?;
        Ok(job::Chain::new(ChainResource::<J> {
            chain: RefCell::new(chain),
            _job: PhantomData,
        }))
    }

    fn poll(
        &self,
        max: u32,
        ctx: w::CallContext,
    ) -> std::result::Result<w::PollResult, w::OperatorError> {
        let mut chain = self.chain.borrow_mut();
        let polled = chain.poll(
            max as usize,
            ctx.watermark,
            ctx.processing_time,
            &mut HostState,
            None,
        );
        match polled {
            Ok((result, finished)) => Ok(w::PollResult {
                batch: to_wit_result(Ok(result))?,
                finished,
            }),
            Err(f) => Err(w::OperatorError {
                operator: f.operator,
                message: f.message,
            }),
        }
    }

    fn process(
        &self,
        frame: Vec<u8>,
        ctx: w::CallContext,
    ) -> std::result::Result<w::BatchResult, w::OperatorError> {
        let mut chain = self.chain.borrow_mut();
        to_wit_result(chain.process(
            &frame,
            ctx.watermark,
            ctx.processing_time,
            &mut HostState,
            None,
        ))
    }

    fn on_timers(
        &self,
        frame: Vec<u8>,
        ctx: w::CallContext,
    ) -> std::result::Result<w::BatchResult, w::OperatorError> {
        let mut chain = self.chain.borrow_mut();
        to_wit_result(chain.on_timers(
            &frame,
            ctx.watermark,
            ctx.processing_time,
            &mut HostState,
            None,
        ))
    }

    fn metrics(&self) -> Vec<u64> {
        self.chain
            .borrow()
            .counters
            .iter()
            .map(|c| c.get())
            .collect()
    }

    fn finish(&self, ctx: w::CallContext) -> std::result::Result<w::BatchResult, w::OperatorError> {
        let mut chain = self.chain.borrow_mut();
        to_wit_result(chain.finish(ctx.watermark, ctx.processing_time, &mut HostState, None))
    }
}
