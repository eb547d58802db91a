//! The one place where wasmtime generates code from `wit/`. The rest of the host uses the
//! types of `weir-core` and this crate's own.

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "job-component",
    imports: { default: trappable },
});

pub(crate) use weir::stream::types as wit;
