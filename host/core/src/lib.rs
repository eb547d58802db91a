//! Core types of weir, shared by every host crate: the job graph a component describes
//! ([`JobGraph`]), key groups ([`KeyGroupRange`]), event time ([`Watermark`]) and the
//! byte frames that carry records across the Wasm boundary ([`frame`]).
//!
//! This crate has no heavy dependencies, so changing it rebuilds little.
//!
//! ```
//! use weir_core::{key_group_for, KeyGroupRange};
//! let kg = key_group_for(b"account-7", 128);
//! let range = KeyGroupRange::for_subtask(128, 4, 1);
//! assert!(kg < 128);
//! assert_eq!(range, KeyGroupRange::new(32, 64));
//! ```
#![deny(missing_docs)]

pub mod frame;
mod keygroup;
pub mod logs;
mod plan;
mod time;

pub use keygroup::{key_group_for, subtask_for_key_group, KeyGroupRange, DEFAULT_MAX_PARALLELISM};
pub use plan::{
    Connector, Edge, JobGraph, Node, NodeKind, Partitioning, PlanError, StateDescriptor, StateKind,
    StateTtl, WatermarkStrategy,
};
pub use time::{now_ms, Timestamp, Watermark};

/// A SHA-256 digest (of a component, a token) as lowercase hex.
pub fn digest_to_hex(digest: &[u8; 32]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A SHA-256 digest from 64 hex digits (either case).
pub fn digest_from_hex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn digests_round_trip_through_hex() {
        let d: [u8; 32] = std::array::from_fn(|i| (i * 7) as u8);
        let h = super::digest_to_hex(&d);
        assert_eq!(super::digest_from_hex(&h), Some(d));
        assert_eq!(super::digest_from_hex(&h.to_uppercase()), Some(d));
        assert_eq!(super::digest_from_hex(&h[1..]), None);
        assert_eq!(super::digest_from_hex(&"zz".repeat(32)), None);
    }
}
