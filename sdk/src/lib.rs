//! # weir SDK
//!
//! Write a stream-processing job in plain Rust, compile it to a WebAssembly component, and
//! run it on a weir cluster (or locally with `weir run`). The job describes its dataflow
//! graph — sources, operators, sinks — and implements the operators; the host runs them in
//! parallel, owns their keyed state and timers, and drives event time.
//!
//! ```
//! use weir::prelude::*;
//!
//! fn build(env: &mut StreamEnv) -> Result<()> {
//!     env.file_lines(env.arg("input")?)
//!         .flat_map(|line: String| {
//!             line.split_whitespace().map(str::to_lowercase).collect::<Vec<_>>()
//!         })
//!         .key_by(|w: &String| w.clone())
//!         .process(Count)
//!         .uid("count")
//!         .sink(Sink::file(env.arg("output")?));
//!     Ok(())
//! }
//!
//! const COUNT: ValueState<u64> = ValueState::new("count", 1);
//!
//! #[derive(Clone)]
//! struct Count;
//!
//! impl KeyedProcessFunction for Count {
//!     type Key = String;
//!     type In = String;
//!     type Out = (String, u64);
//!     const STATE: &'static [StateDescriptor] = &[COUNT.descriptor()];
//!
//!     fn process_element(&mut self, w: String, ctx: &mut Context<'_, '_, String, (String, u64)>) -> Result<()> {
//!         let n = ctx.value(&COUNT).get()?.unwrap_or(0) + 1;
//!         ctx.value(&COUNT).set(&n)?;
//!         ctx.emit((w, n))
//!     }
//! }
//!
//! // In the job crate (a `cdylib` built for `wasm32-wasip2`):
//! // weir::job!(build);
//! # let plan = weir::testing::plan_of(build, &[("input".into(), "in".into()), ("output".into(), "out".into())]).unwrap();
//! # assert_eq!(plan.nodes.len(), 4);
//! ```
//!
//! Modules: [`stream`] (the graph), [`process`] (keyed functions with state and timers),
//! [`window`] (windows), [`state`] (state handles), [`connectors`] (built-in sources and
//! sinks), [`source`] (sources written in the guest), [`testing`] (run operators natively in
//! unit tests).
#![deny(missing_docs)]

mod codec;
pub mod connectors;
mod error;
#[cfg(test)]
mod golden_frames;
mod guest;
pub mod process;
mod runtime;
pub mod source;
pub mod state;
pub mod stream;
pub mod testing;
pub mod window;

pub use codec::Data;
pub use error::{Error, Result};
pub use runtime::TimeDomain;
pub use stream::StreamEnv;

/// Everything a job usually needs.
pub mod prelude {
    pub use crate::connectors::{Datagen, DatagenRecord, FileSource, Sink};
    pub use crate::process::{Context, KeyedProcessFunction};
    pub use crate::state::{ListState, MapState, StateDescriptor, StateTtl, ValueState};
    pub use crate::stream::{DataStream, KeyedStream, OutputTag, StreamEnv, WatermarkStrategy};
    pub use crate::window::{AggregateFunction, TimeWindow, WindowAssigner};
    pub use crate::{Data, Error, Result, TimeDomain};
}

/// Writes a line to the host's log.
pub fn log(level: LogLevel, message: &str) {
    guest::log(level, message)
}

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// Very detailed.
    Trace,
    /// Detailed.
    Debug,
    /// Normal.
    Info,
    /// Something unexpected.
    Warn,
    /// A failure.
    Error,
}

#[doc(hidden)]
pub mod wit {
    wit_bindgen::generate!({
        path: "../wit",
        world: "job-component",
        pub_export_macro: true,
        export_macro_name: "__export_job_component",
        default_bindings_module: "weir::wit",
    });
}

#[doc(hidden)]
pub mod __private {
    pub use crate::guest::{Component, JobDefinition};
}

/// Exports a job from a component crate: `weir::job!(build)` where
/// `fn build(env: &mut StreamEnv) -> weir::Result<()>`.
#[macro_export]
macro_rules! job {
    ($build:path) => {
        #[doc(hidden)]
        pub struct __WeirJob;

        impl $crate::__private::JobDefinition for __WeirJob {
            fn build(env: &mut $crate::StreamEnv) -> $crate::Result<()> {
                $build(env)
            }
        }

        #[doc(hidden)]
        type __WeirComponent = $crate::__private::Component<__WeirJob>;

        // Exported only when built as a component: natively (unit tests with the harness)
        // the crate is a plain library.
        #[cfg(target_arch = "wasm32")]
        #[doc(hidden)]
        mod __weir_exports {
            use super::__WeirComponent;
            $crate::wit::__export_job_component!(__WeirComponent with_types_in $crate::wit);
        }
    };
}
