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
mod plan;
mod time;

pub use keygroup::{key_group_for, subtask_for_key_group, KeyGroupRange, DEFAULT_MAX_PARALLELISM};
pub use plan::{
    Connector, Edge, JobGraph, Node, NodeKind, Partitioning, PlanError, StateDescriptor, StateKind,
    StateTtl, WatermarkStrategy,
};
pub use time::{Timestamp, Watermark};
