//! Keyed state: typed handles declared once, read and written through an operator's context.
//!
//! State lives in the host, scoped by operator, key group and key; the guest sees only the
//! current key's values. Declare each handle as a constant and list it in the operator's
//! `STATE`, so the host can check it against a savepoint when the job is upgraded:
//!
//! ```
//! use weir::state::{StateDescriptor, ValueState, MapState};
//! const COUNT: ValueState<u64> = ValueState::new("count", 1);
//! const SEEN: MapState<String, u32> = MapState::new("seen", 1);
//! const STATE: &[StateDescriptor] = &[COUNT.descriptor(), SEEN.descriptor()];
//! assert_eq!(STATE[0].name, "count");
//! ```

use std::marker::PhantomData;

/// What one piece of state holds per key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StateKind {
    /// One value, prefetched by the host with each batch (cheapest).
    Value,
    /// A list of values (one host call per access).
    List,
    /// A map from user keys to values (one host call per access).
    Map,
}

/// Name, kind and schema version of a piece of keyed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StateDescriptor {
    /// Unique within the operator.
    pub name: &'static str,
    /// Value, list or map.
    pub kind: StateKind,
    /// Version of the stored type; bump it when the type changes incompatibly.
    pub version: u32,
}

macro_rules! handle {
    ($(#[$doc:meta])* $name:ident<$($t:ident),+>, $kind:expr) => {
        $(#[$doc])*
        pub struct $name<$($t),+> {
            name: &'static str,
            version: u32,
            _type: PhantomData<fn() -> ($($t,)+)>,
        }

        impl<$($t),+> $name<$($t),+> {
            /// A handle for the state called `name`, at schema `version`.
            pub const fn new(name: &'static str, version: u32) -> Self {
                $name { name, version, _type: PhantomData }
            }

            /// The descriptor to list in the operator's `STATE`.
            pub const fn descriptor(&self) -> StateDescriptor {
                StateDescriptor { name: self.name, kind: $kind, version: self.version }
            }

            /// The state's name.
            pub const fn name(&self) -> &'static str {
                self.name
            }
        }
    };
}

handle!(
    /// One value of type `T` per key.
    ValueState<T>,
    StateKind::Value
);
handle!(
    /// A list of `T` per key.
    ListState<T>,
    StateKind::List
);
handle!(
    /// A map from `K` to `V` per key.
    MapState<K, V>,
    StateKind::Map
);
