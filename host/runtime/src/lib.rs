//! The wasmtime side of weir: loads job components, checks them, and calls them.
//!
//! [`Runtime`] owns the wasmtime engine, a compile cache keyed by the component's SHA-256
//! digest, and the sandbox settings (memory limit per instance, a deadline per call enforced
//! with epoch interruption). [`Runtime::load`] turns bytes into a [`JobComponent`] or a
//! [`LoadError`] that says what is wrong (not Wasm, a core module, another WIT version, ...).
//! A [`JobComponent`] describes its plan ([`JobComponent::plan`]) and opens
//! [`GuestChain`]s — one instance of the component per task — whose calls move batches of
//! records across the boundary as frames (see `weir_core::frame`).
//!
//! ```no_run
//! use weir_runtime::{Runtime, RuntimeConfig};
//! let runtime = Runtime::new(RuntimeConfig::default())?;
//! let component = runtime.load(&std::fs::read("job.wasm")?)?;
//! let graph = component.plan(&[("input".into(), "in.txt".into())], 2)?;
//! println!("{} nodes", graph.nodes.len());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

mod bindings;
mod chain;
mod error;
mod host;
mod loader;

pub use chain::{BatchResult, CallContext, GuestChain, GuestUsage, PollResult};
pub use error::{GuestError, LoadError};
pub use loader::{ChainSpec, JobComponent, Runtime, RuntimeConfig, SUPPORTED_WIT};
pub use weir_core::logs::{one_line, Admit, LogBudget};
