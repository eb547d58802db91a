//! The host side of the WIT imports, and the data every task's store carries.

use wasmtime::component::ResourceTable;
use wasmtime::ResourceLimiter;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use weir_core::key_group_for;
use weir_state::KeyedStateBackend;

use crate::bindings::weir::stream::host::Host;
use crate::bindings::wit::{self, LogLevel};

/// What a task's wasmtime store holds.
pub(crate) struct TaskData {
    pub wasi: WasiCtx,
    pub table: ResourceTable,
    pub limits: MemoryCap,
    /// Keyed state of the chain's head operator (none for unkeyed chains).
    pub backend: Option<Box<dyn KeyedStateBackend>>,
    pub max_parallelism: u32,
    /// What the guest's panic hook reported, if it panicked.
    pub panic: Option<(String, String)>,
    /// For log lines: `job/operator#subtask`.
    pub label: String,
    /// When the current call into the guest began (for its deadline and throttling).
    pub call_started: std::time::Instant,
    /// Time the guest spent in calls that ran past the busy threshold, paused.
    pub throttled: std::time::Duration,
    /// Set when the job stops: a call in progress is interrupted at the next epoch tick.
    pub interrupt: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
    /// The last trap was such an interruption.
    pub interrupted: bool,
    /// Charges the keyed state's growth to the job's, tenant's and server's limits.
    pub meter: weir_state::StateMeter,
    /// The last trap was a state limit.
    pub state_limit: Option<weir_state::StateLimitExceeded>,
    /// Set when a host state call failed in the backend.
    pub state_failure: Option<weir_state::StateError>,
    /// The job's allowance of log lines.
    pub logs: std::sync::Arc<weir_core::logs::LogBudget>,
}

impl TaskData {
    pub(crate) fn new(label: String, max_memory: usize, seed: u64) -> Self {
        use rand::SeedableRng;
        let mut wasi = WasiCtx::builder();
        // Nothing but what the WIT grants: no files, sockets, environment or real clocks,
        // and randomness that is deterministic per task.
        wasi.allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .wall_clock(FrozenClock)
            .monotonic_clock(FrozenClock)
            .secure_random(rand::rngs::StdRng::seed_from_u64(seed))
            .insecure_random(rand::rngs::StdRng::seed_from_u64(seed ^ 0x5eed))
            .insecure_random_seed(u128::from(seed));
        TaskData {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            limits: MemoryCap {
                max: max_memory,
                denied: None,
                total: 0,
            },
            backend: None,
            max_parallelism: weir_core::DEFAULT_MAX_PARALLELISM,
            panic: None,
            label,
            call_started: std::time::Instant::now(),
            throttled: std::time::Duration::ZERO,
            interrupt: None,
            interrupted: false,
            meter: weir_state::StateMeter::unlimited(),
            state_limit: None,
            state_failure: None,
            logs: Default::default(),
        }
    }

    /// Charges what the keyed state holds now; over a limit, the call traps (and the job
    /// fails naming the limit).
    pub(crate) fn charge_state(&mut self) -> wasmtime::Result<()> {
        let Some(backend) = self.backend.as_deref() else {
            return Ok(());
        };
        let size = backend.size();
        self.meter.update(size).map_err(|e| self.refuse(e))
    }

    /// Refuses a value (a map entry: its user key and value) over the value limit.
    fn check_value(&mut self, size: usize) -> wasmtime::Result<()> {
        self.meter.check_value(size).map_err(|e| self.refuse(e))
    }

    /// A host state call failed in the backend: the guest traps with the error, and the
    /// task fails with it (not as a guest bug).
    fn state_failed(&mut self, e: weir_state::StateError) -> wasmtime::Error {
        let error = wasmtime::format_err!("{e}");
        self.state_failure = Some(e);
        error
    }

    fn refuse(&mut self, e: weir_state::StateLimitExceeded) -> wasmtime::Error {
        let error = wasmtime::format_err!("{e}");
        self.state_limit = Some(e);
        error
    }

    fn backend(&mut self, key: &[u8]) -> wasmtime::Result<(&mut dyn KeyedStateBackend, u32)> {
        let max = self.max_parallelism;
        let backend = self
            .backend
            .as_deref_mut()
            .ok_or_else(|| wasmtime::format_err!("this operator has no keyed state"))?;
        let kg = key_group_for(key, max);
        if !backend.key_groups().contains(kg) {
            return Err(wasmtime::format_err!(
                "state access for a key that belongs to another subtask"
            ));
        }
        Ok((backend, kg))
    }

    fn check_state(&mut self, state: u32, kind: weir_core::StateKind) -> wasmtime::Result<()> {
        let backend = self
            .backend
            .as_deref()
            .ok_or_else(|| wasmtime::format_err!("this operator has no keyed state"))?;
        match backend.descriptors().get(state as usize) {
            Some(d) if d.kind == kind => Ok(()),
            Some(d) => Err(wasmtime::format_err!(
                "state '{}' is a {:?} state, used as {kind:?}",
                d.name,
                d.kind
            )),
            None => Err(wasmtime::format_err!("state index {state} is not declared")),
        }
    }
}

/// Caps a guest's linear memory, remembering a refused growth so the trap can name it.
pub(crate) struct MemoryCap {
    pub max: usize,
    pub denied: Option<usize>,
    /// Linear memory the instance holds now (all its memories).
    pub total: usize,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max {
            self.denied = Some(desired);
            return Ok(false);
        }
        self.total += desired.saturating_sub(current);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1 << 20)
    }
}

struct FrozenClock;

impl wasmtime_wasi::HostWallClock for FrozenClock {
    fn resolution(&self) -> std::time::Duration {
        std::time::Duration::from_millis(1)
    }
    fn now(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
}

impl wasmtime_wasi::HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

impl WasiView for TaskData {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl wit::Host for TaskData {}

use weir_core::StateKind::{List, Map};

impl Host for TaskData {
    fn log(&mut self, level: LogLevel, message: String) -> wasmtime::Result<()> {
        let task = self.label.as_str();
        let dropped = match self.logs.admit() {
            weir_core::logs::Admit::Write { dropped } => dropped,
            weir_core::logs::Admit::Drop { first } => {
                if first {
                    tracing::warn!(target: "weir::guest", task, "guest log lines dropped: over the job's rate of log lines");
                }
                return Ok(());
            }
        };
        if dropped > 0 {
            tracing::warn!(target: "weir::guest", task, dropped, "guest log lines dropped before this one");
        }
        let message = weir_core::logs::one_line(&message);
        match level {
            LogLevel::Trace => tracing::trace!(target: "weir::guest", task, "{message}"),
            LogLevel::Debug => tracing::debug!(target: "weir::guest", task, "{message}"),
            LogLevel::Info => tracing::info!(target: "weir::guest", task, "{message}"),
            LogLevel::Warn => tracing::warn!(target: "weir::guest", task, "{message}"),
            LogLevel::Error => tracing::error!(target: "weir::guest", task, "{message}"),
        }
        Ok(())
    }

    fn report_panic(&mut self, operator: String, message: String) -> wasmtime::Result<()> {
        self.panic = Some((operator, message));
        Ok(())
    }

    fn list_get(&mut self, state: u32, key: Vec<u8>) -> wasmtime::Result<Vec<Vec<u8>>> {
        self.check_state(state, List)?;
        let (b, kg) = self.backend(&key)?;
        let items = b.list_get(state, kg, &key);
        items.map_err(|e| self.state_failed(e))
    }

    fn list_add(&mut self, state: u32, key: Vec<u8>, value: Vec<u8>) -> wasmtime::Result<()> {
        self.check_state(state, List)?;
        self.check_value(key.len() + value.len())?;
        let (b, kg) = self.backend(&key)?;
        let added = b.list_add(state, kg, &key, &value);
        added.map_err(|e| self.state_failed(e))?;
        self.charge_state()
    }

    fn list_clear(&mut self, state: u32, key: Vec<u8>) -> wasmtime::Result<()> {
        self.check_state(state, List)?;
        let (b, kg) = self.backend(&key)?;
        let cleared = b.list_clear(state, kg, &key);
        cleared.map_err(|e| self.state_failed(e))
    }

    fn map_get(
        &mut self,
        state: u32,
        key: Vec<u8>,
        user_key: Vec<u8>,
    ) -> wasmtime::Result<Option<Vec<u8>>> {
        self.check_state(state, Map)?;
        let (b, kg) = self.backend(&key)?;
        let value = b.map_get(state, kg, &key, &user_key);
        value.map_err(|e| self.state_failed(e))
    }

    fn map_put(
        &mut self,
        state: u32,
        key: Vec<u8>,
        user_key: Vec<u8>,
        value: Vec<u8>,
    ) -> wasmtime::Result<()> {
        self.check_state(state, Map)?;
        self.check_value(key.len() + user_key.len() + value.len())?;
        let (b, kg) = self.backend(&key)?;
        let put = b.map_put(state, kg, &key, &user_key, &value);
        put.map_err(|e| self.state_failed(e))?;
        self.charge_state()
    }

    fn map_remove(&mut self, state: u32, key: Vec<u8>, user_key: Vec<u8>) -> wasmtime::Result<()> {
        self.check_state(state, Map)?;
        let (b, kg) = self.backend(&key)?;
        let removed = b.map_remove(state, kg, &key, &user_key);
        removed.map_err(|e| self.state_failed(e))
    }

    fn map_entries(
        &mut self,
        state: u32,
        key: Vec<u8>,
    ) -> wasmtime::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.check_state(state, Map)?;
        let (b, kg) = self.backend(&key)?;
        let entries = b.map_entries(state, kg, &key);
        entries.map_err(|e| self.state_failed(e))
    }

    fn map_clear(&mut self, state: u32, key: Vec<u8>) -> wasmtime::Result<()> {
        self.check_state(state, Map)?;
        let (b, kg) = self.backend(&key)?;
        let cleared = b.map_clear(state, kg, &key);
        cleared.map_err(|e| self.state_failed(e))
    }
}
