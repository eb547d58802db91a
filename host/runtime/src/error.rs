//! Errors of loading and calling components.

use weir_core::frame::FrameError;
use weir_core::PlanError;

/// Why a component cannot be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// The bytes are not WebAssembly at all.
    #[error("not a WebAssembly file (it does not start with the \\0asm magic number)")]
    NotWasm,
    /// A core module was given where a component is needed.
    #[error(
        "this is a core WebAssembly module, not a component; build the job with \
         `cargo build --target wasm32-wasip2` to get a component"
    )]
    CoreModule,
    /// wasmtime refused the component.
    #[error("invalid component: {0}")]
    Invalid(String),
    /// The component exports no weir job.
    #[error(
        "the component does not export a weir job (no `weir:stream/job` export; it exports: \
         {0}); is it built with the weir SDK and `weir::job!`?"
    )]
    NotAJob(String),
    /// The component targets a contract version this host does not speak.
    #[error(
        "the component targets weir:stream@{found}, but this host supports weir:stream@{supported}; \
         rebuild the job with a matching weir SDK"
    )]
    UnsupportedVersion {
        /// What the component exports.
        found: String,
        /// What this host supports.
        supported: &'static str,
    },
    /// The component needs imports the host does not give.
    #[error("the component cannot be linked: {0}")]
    Link(String),
}

/// A failure while calling guest code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuestError {
    /// The guest trapped (panic, deadline, memory limit, ...). The instance is unusable.
    #[error("operator '{operator}' trapped: {message}")]
    Trap {
        /// uid of the operator chain's head (the trap does not say which chained operator).
        operator: String,
        /// What happened, with the guest's panic message if it reported one.
        message: String,
    },
    /// Guest code returned an error.
    #[error("operator '{operator}' failed: {message}")]
    Operator {
        /// uid of the failing operator.
        operator: String,
        /// Its message.
        message: String,
    },
    /// The component's `plan` returned an error.
    #[error("the job's plan failed: {0}")]
    Plan(String),
    /// The plan is not runnable.
    #[error("invalid plan: {0}")]
    InvalidPlan(#[from] PlanError),
    /// The call was interrupted because the job is stopping (cancelled, or another task
    /// failed).
    #[error("interrupted: the job is stopping")]
    Interrupted,
    /// The job's keyed state went over a limit (the job's, its tenant's, the server's, or
    /// one value's). Restarting would not help.
    #[error("operator '{operator}': {error}")]
    StateLimit {
        /// uid of the chain's head.
        operator: String,
        /// Which limit.
        error: weir_state::StateLimitExceeded,
    },
    /// A state call of the guest failed in the backend (I/O): the task fails, and a restart
    /// from the last checkpoint may help.
    #[error("operator '{operator}': {error}")]
    State {
        /// uid of the chain's head.
        operator: String,
        /// What failed.
        error: weir_state::StateError,
    },
    /// The guest returned a malformed frame.
    #[error("operator '{operator}': {error}")]
    Frame {
        /// uid of the chain's head.
        operator: String,
        /// What was malformed.
        error: FrameError,
    },
}
