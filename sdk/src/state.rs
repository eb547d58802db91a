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
//!
//! State can expire (Flink's state TTL): a value not written for the given time is gone, and
//! the host removes it.
//!
//! ```
//! use weir::state::{StateTtl, ValueState};
//! const LAST_SEEN: ValueState<i64> =
//!     ValueState::new("last-seen", 1).with_ttl(StateTtl::after_write_ms(60_000));
//! assert_eq!(LAST_SEEN.descriptor().ttl.unwrap().ttl_ms, 60_000);
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
    /// How long the state lives (`None`: until cleared).
    pub ttl: Option<StateTtl>,
}

/// Time to live of keyed state, in processing time. Expired state is never returned; the
/// host removes it on access and in the background (RocksDB compaction).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StateTtl {
    /// Milliseconds.
    pub ttl_ms: u64,
    /// Reads restart the clock too.
    pub refresh_on_read: bool,
}

impl StateTtl {
    /// Expires `ms` after the last write (Flink's `OnCreateAndWrite`).
    pub const fn after_write_ms(ms: u64) -> Self {
        StateTtl {
            ttl_ms: ms,
            refresh_on_read: false,
        }
    }

    /// Expires `ms` after the last read or write (Flink's `OnReadAndWrite`).
    pub const fn after_access_ms(ms: u64) -> Self {
        StateTtl {
            ttl_ms: ms,
            refresh_on_read: true,
        }
    }
}

macro_rules! handle {
    ($(#[$doc:meta])* $name:ident<$($t:ident),+>, $kind:expr) => {
        $(#[$doc])*
        pub struct $name<$($t),+> {
            name: &'static str,
            version: u32,
            ttl: Option<StateTtl>,
            _type: PhantomData<fn() -> ($($t,)+)>,
        }

        impl<$($t),+> $name<$($t),+> {
            /// A handle for the state called `name`, at schema `version`.
            pub const fn new(name: &'static str, version: u32) -> Self {
                $name { name, version, ttl: None, _type: PhantomData }
            }

            /// The same state, expiring as `ttl` says.
            pub const fn with_ttl(self, ttl: StateTtl) -> Self {
                $name { ttl: Some(ttl), ..self }
            }

            /// The descriptor to list in the operator's `STATE`.
            pub const fn descriptor(&self) -> StateDescriptor {
                StateDescriptor {
                    name: self.name,
                    kind: $kind,
                    version: self.version,
                    ttl: self.ttl,
                }
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
