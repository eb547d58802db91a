//! The engine, the compile cache, and turning bytes into a checked [`JobComponent`].

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, Store};
use weir_core::{
    Connector, Edge, JobGraph, Node, NodeKind, Partitioning, StateDescriptor, StateKind,
    WatermarkStrategy, DEFAULT_MAX_PARALLELISM,
};
use weir_state::KeyedStateBackend;

use crate::bindings::{self, wit};
use crate::chain::GuestChain;
use crate::error::{GuestError, LoadError};
use crate::host::TaskData;

/// The contract version this host speaks (`weir:stream@0.2.x`).
pub const SUPPORTED_WIT: &str = "0.2.0";
const JOB_EXPORT: &str = "weir:stream/job@";

/// Sandbox and engine settings.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Largest linear memory one guest instance may have.
    pub max_instance_memory: usize,
    /// Longest one call into a guest may run before it is interrupted.
    pub call_timeout: Duration,
    /// Granularity of the call deadline.
    pub epoch_tick: Duration,
    /// Most bytes one call may return (records, state writes and timers together).
    pub max_call_output: usize,
    /// A call running longer than this is busy: from then on it sleeps between epoch
    /// ticks — half of its time at first, an eighth after 20 times this — so a looping or
    /// heavy guest leaves its neighbours their share of the cores until its deadline ends
    /// it.
    pub busy_after: Duration,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            max_instance_memory: 512 << 20,
            call_timeout: Duration::from_secs(30),
            epoch_tick: Duration::from_millis(10),
            max_call_output: 64 << 20,
            busy_after: Duration::from_millis(50),
        }
    }
}

/// Increments the engine's epoch until dropped.
struct Ticker {
    stop: Arc<AtomicBool>,
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The wasmtime engine with weir's host functions and a cache of compiled components.
pub struct Runtime {
    engine: Engine,
    linker: Linker<TaskData>,
    config: RuntimeConfig,
    cache: Mutex<HashMap<[u8; 32], Arc<JobComponent>>>,
    _ticker: Ticker,
}

impl Runtime {
    /// An engine configured for weir guests.
    pub fn new(config: RuntimeConfig) -> Result<Self, LoadError> {
        let mut c = Config::new();
        c.wasm_component_model(true)
            .epoch_interruption(true)
            .cranelift_opt_level(wasmtime::OptLevel::Speed)
            .max_wasm_stack(1 << 20);
        // `WEIR_PROFILER=perfmap` writes /tmp/perf-<pid>.map so `perf report` can name guest
        // functions (needs wasmtime's `profiling` feature, off in normal builds).
        if std::env::var("WEIR_PROFILER").as_deref() == Ok("perfmap") {
            c.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&c).map_err(|e| LoadError::Invalid(format!("{e:#}")))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| LoadError::Link(format!("{e:#}")))?;
        bindings::JobComponent::add_to_linker::<_, wasmtime::component::HasSelf<_>>(
            &mut linker,
            |d: &mut TaskData| d,
        )
        .map_err(|e| LoadError::Link(format!("{e:#}")))?;
        let stop = Arc::new(AtomicBool::new(false));
        let (e, s, tick) = (engine.clone(), stop.clone(), config.epoch_tick);
        std::thread::Builder::new()
            .name("weir-epoch".into())
            .spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    e.increment_epoch();
                }
            })
            .map_err(|e| LoadError::Invalid(format!("cannot start the epoch thread: {e}")))?;
        Ok(Runtime {
            engine,
            linker,
            config,
            cache: Mutex::new(HashMap::new()),
            _ticker: Ticker { stop },
        })
    }

    /// The sandbox settings.
    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// The compiled component with this hex SHA-256, if it is in the cache.
    pub fn cached(&self, sha256_hex: &str) -> Option<Arc<JobComponent>> {
        let digest = weir_core::digest_from_hex(sha256_hex)?;
        self.cache.lock().expect("cache lock").get(&digest).cloned()
    }

    /// Forgets the compiled component with this hex SHA-256 (instances open keep theirs).
    pub fn evict(&self, sha256_hex: &str) {
        if let Some(digest) = weir_core::digest_from_hex(sha256_hex) {
            self.cache.lock().expect("cache lock").remove(&digest);
        }
    }

    /// Checks and compiles a component, or returns the cached one with the same digest.
    pub fn load(&self, bytes: &[u8]) -> Result<Arc<JobComponent>, LoadError> {
        let digest: [u8; 32] = Sha256::digest(bytes).into();
        if let Some(c) = self.cache.lock().expect("cache lock").get(&digest) {
            return Ok(c.clone());
        }
        if bytes.len() < 8 || &bytes[0..4] != b"\0asm" {
            return Err(LoadError::NotWasm);
        }
        // Version and layer: 1,0 / 0,0 is a core module; 0x0d,0 / 1,0 a component.
        if bytes[6..8] == [0, 0] {
            return Err(LoadError::CoreModule);
        }
        let component = Component::new(&self.engine, bytes)
            .map_err(|e| LoadError::Invalid(format!("{e:#}")))?;
        let ty = component.component_type();
        let exports: Vec<String> = ty
            .exports(&self.engine)
            .map(|(n, _)| n.to_string())
            .collect();
        let job = exports
            .iter()
            .find(|n| n.starts_with(JOB_EXPORT) || n.as_str() == "weir:stream/job")
            .ok_or_else(|| {
                LoadError::NotAJob(if exports.is_empty() {
                    "nothing".into()
                } else {
                    exports.join(", ")
                })
            })?;
        let found = job.strip_prefix(JOB_EXPORT).unwrap_or("(unversioned)");
        if !same_minor(found, SUPPORTED_WIT) {
            return Err(LoadError::UnsupportedVersion {
                found: found.to_string(),
                supported: SUPPORTED_WIT,
            });
        }
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::Link(format!("{e:#}")))?;
        let pre =
            bindings::JobComponentPre::new(pre).map_err(|e| LoadError::Link(format!("{e:#}")))?;
        let loaded = Arc::new(JobComponent {
            digest,
            size: bytes.len(),
            pre,
            engine: self.engine.clone(),
            config: self.config.clone(),
        });
        self.cache
            .lock()
            .expect("cache lock")
            .insert(digest, loaded.clone());
        Ok(loaded)
    }
}

fn same_minor(found: &str, supported: &str) -> bool {
    let minor = |v: &str| {
        let mut parts = v.split('.');
        (
            parts.next().map(str::to_owned),
            parts.next().map(str::to_owned),
        )
    };
    let (f, s) = (minor(found), minor(supported));
    f.0.is_some() && f.1.is_some() && f == s
}

/// A checked, compiled job component.
pub struct JobComponent {
    digest: [u8; 32],
    size: usize,
    pre: bindings::JobComponentPre<TaskData>,
    engine: Engine,
    config: RuntimeConfig,
}

/// Where a chain runs and what it holds.
pub struct ChainSpec<'a> {
    /// Plan indices of the chained nodes, upstream first.
    pub nodes: &'a [u32],
    /// Subtask index.
    pub subtask: u32,
    /// Parallelism of the chain.
    pub parallelism: u32,
    /// Job arguments.
    pub args: &'a [(String, String)],
    /// Keyed state of the head, if it is keyed.
    pub backend: Option<Box<dyn KeyedStateBackend>>,
    /// Number of key groups.
    pub max_parallelism: u32,
    /// For logs.
    pub label: String,
    /// When set, a call in progress stops at the next epoch tick with
    /// [`GuestError::Interrupted`] (the job is stopping).
    pub interrupt: Option<Arc<AtomicBool>>,
    /// The job's allowance of log lines, shared by its tasks (none: one of the chain's own).
    pub logs: Option<Arc<crate::LogBudget>>,
}

impl JobComponent {
    /// Hex SHA-256 of the component's bytes.
    pub fn digest(&self) -> String {
        weir_core::digest_to_hex(&self.digest)
    }

    /// Size of the component in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The same compiled component with other sandbox limits for the instances it opens
    /// (a tenant's memory limit, say). The epoch tick is the engine's and stays.
    pub fn with_limits(&self, config: RuntimeConfig) -> Arc<JobComponent> {
        Arc::new(JobComponent {
            digest: self.digest,
            size: self.size,
            pre: self.pre.clone(),
            engine: self.engine.clone(),
            config: RuntimeConfig {
                epoch_tick: self.config.epoch_tick,
                ..config
            },
        })
    }

    /// The sandbox limits of the instances it opens.
    pub fn limits(&self) -> &RuntimeConfig {
        &self.config
    }

    fn store(&self, label: String, seed: u64) -> Store<TaskData> {
        let mut store = Store::new(
            &self.engine,
            TaskData::new(label, self.config.max_instance_memory, seed),
        );
        store.limiter(|d| &mut d.limits);
        // Every epoch tick of a call: past its deadline it traps; once busy, it pauses.
        let (timeout, busy_after, tick) = (
            self.config.call_timeout,
            self.config.busy_after,
            self.config.epoch_tick,
        );
        store.epoch_deadline_callback(move |mut ctx| {
            let stopping = ctx
                .data()
                .interrupt
                .as_ref()
                .is_some_and(|f| f.load(std::sync::atomic::Ordering::Relaxed));
            if stopping {
                ctx.data_mut().interrupted = true;
                return Err(wasmtime::Trap::Interrupt.into());
            }
            let elapsed = ctx.data().call_started.elapsed();
            if elapsed >= timeout {
                return Err(wasmtime::Trap::Interrupt.into());
            }
            if elapsed >= busy_after {
                // Half its time at first, a quarter after 4x busy_after, an eighth after 20x:
                // a heavy call is slowed a little, a looping one mostly waits.
                let paused_ticks = match elapsed.as_nanos() / busy_after.as_nanos().max(1) {
                    0..4 => 1,
                    4..20 => 3,
                    _ => 7,
                };
                let pause = (tick * paused_ticks).min(timeout - elapsed);
                std::thread::sleep(pause);
                ctx.data_mut().throttled += pause;
            }
            Ok(wasmtime::UpdateDeadline::Continue(1))
        });
        store.set_epoch_deadline(1);
        store
    }

    /// Asks the component for its graph with these arguments, fills in defaults (job
    /// parallelism, 128 key groups) and validates it.
    pub fn plan(
        &self,
        args: &[(String, String)],
        default_parallelism: u32,
    ) -> Result<JobGraph, GuestError> {
        let mut store = self.store("plan".into(), 0);
        let trap = |store: &mut Store<TaskData>, e: wasmtime::Error| {
            let (operator, message) =
                crate::chain::describe_trap(store, &e, self.config.call_timeout, "plan");
            GuestError::Trap { operator, message }
        };
        let instance = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| trap(&mut store, e))?;
        let plan = instance
            .weir_stream_job()
            .call_plan(&mut store, args)
            .map_err(|e| trap(&mut store, e))?
            .map_err(GuestError::Plan)?;
        let graph = to_graph(plan, default_parallelism);
        graph.validate()?;
        Ok(graph)
    }

    /// Instantiates the component for one task and opens its chain.
    pub fn open_chain(&self, spec: ChainSpec<'_>) -> Result<GuestChain, GuestError> {
        let seed = u64::from(spec.subtask) << 32 | u64::from(*spec.nodes.first().unwrap_or(&0));
        let mut store = self.store(spec.label.clone(), seed);
        store.data_mut().backend = spec.backend;
        store.data_mut().interrupt = spec.interrupt;
        if let Some(logs) = spec.logs {
            store.data_mut().logs = logs;
        }
        store.data_mut().max_parallelism = spec.max_parallelism;
        let operator = spec.label.clone();
        let timeout = self.config.call_timeout;
        let trap = |store: &mut Store<TaskData>, e: wasmtime::Error| {
            let (operator, message) = crate::chain::describe_trap(store, &e, timeout, &operator);
            GuestError::Trap { operator, message }
        };
        let instance = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| trap(&mut store, e))?;
        let info = wit::TaskInfo {
            nodes: spec.nodes.to_vec(),
            subtask: spec.subtask,
            parallelism: spec.parallelism,
            args: spec.args.to_vec(),
        };
        let chain = instance
            .weir_stream_job()
            .chain()
            .call_open(&mut store, &info)
            .map_err(|e| trap(&mut store, e))?
            .map_err(|e| GuestError::Operator {
                operator: if e.operator.is_empty() {
                    operator.clone()
                } else {
                    e.operator
                },
                message: e.message,
            })?;
        Ok(GuestChain::new(
            store,
            instance,
            chain,
            spec.label,
            timeout,
            self.config.max_call_output,
        ))
    }
}

fn to_graph(p: wit::JobPlan, default_parallelism: u32) -> JobGraph {
    let connector = |c: wit::Connector| Connector {
        name: c.name,
        config: c.config.into_iter().collect::<BTreeMap<_, _>>(),
    };
    JobGraph {
        name: p.name,
        max_parallelism: if p.max_parallelism == 0 {
            DEFAULT_MAX_PARALLELISM
        } else {
            p.max_parallelism
        },
        nodes: p
            .nodes
            .into_iter()
            .map(|n| Node {
                uid: n.uid,
                name: n.name,
                kind: match n.kind {
                    wit::NodeKind::Source(c) => NodeKind::Source(connector(c)),
                    wit::NodeKind::Sink(c) => NodeKind::Sink(connector(c)),
                    wit::NodeKind::Operator => NodeKind::Operator,
                    wit::NodeKind::GuestSource => NodeKind::GuestSource,
                },
                parallelism: n.parallelism.unwrap_or(default_parallelism),
                states: n
                    .states
                    .into_iter()
                    .map(|s| StateDescriptor {
                        name: s.name,
                        kind: match s.kind {
                            wit::StateKind::Value => StateKind::Value,
                            wit::StateKind::List => StateKind::List,
                            wit::StateKind::Map => StateKind::Map,
                        },
                        version: s.version,
                        ttl: s.ttl.map(|t| weir_core::StateTtl {
                            ttl_ms: t.ttl_ms,
                            refresh_on_read: t.refresh_on_read,
                        }),
                    })
                    .collect(),
                watermarks: n.watermarks.map(|w| WatermarkStrategy {
                    max_out_of_orderness_ms: w.max_out_of_orderness_ms,
                    idle_timeout_ms: w.idle_timeout_ms,
                }),
            })
            .collect(),
        edges: p
            .edges
            .into_iter()
            .map(|e| Edge {
                source: e.source as usize,
                target: e.target as usize,
                side_output: e.side_output,
                partitioning: match e.partitioning {
                    wit::Partitioning::Forward => Partitioning::Forward,
                    wit::Partitioning::Hash => Partitioning::Hash,
                    wit::Partitioning::Rebalance => Partitioning::Rebalance,
                    wit::Partitioning::Broadcast => Partitioning::Broadcast,
                },
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_match_by_minor() {
        assert!(same_minor("0.1.0", "0.1.0"));
        assert!(same_minor("0.1.7", "0.1.0"));
        assert!(!same_minor("0.2.0", "0.1.0"));
        assert!(!same_minor("1", "0.1.0"));
    }
}
