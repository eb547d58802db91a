//! The JobManager of a weir session cluster (design note 0004).
//!
//! [`JobManager`] is the dispatcher (components, submissions), keeps a job master's record of
//! every job (its lifecycle as a [`JobState`] machine, restarts, exceptions, checkpoints and
//! savepoint triggers) and is the resource manager (slots, tenants' quotas). It runs jobs on
//! a [`taskmanager::TaskManager`], to which it speaks only in messages. Tenants, their tokens
//! and quotas come from a [`ClusterConfig`].
//!
//! ```no_run
//! use weir_jobmanager::{ClusterConfig, JobManager};
//!
//! let (config, _token, _) = ClusterConfig::load(None, |k| std::env::var(k).ok(), &[])?;
//! let jm = JobManager::start(config)?;
//! let admin = weir_jobmanager::Principal::Admin;
//! println!("{} slots free", jm.overview(&admin).slots_free);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

pub mod auth;
mod cluster;
pub mod components;
pub mod config;
pub mod disk;
mod error;
pub mod job;
pub mod metrics;
pub mod taskmanager;
pub mod upgrade;

pub use auth::Principal;
pub use cluster::{ClusterOverview, JobManager, TaskManagerInfo};
pub use components::ComponentInfo;
pub use config::{ClusterConfig, GeneratedToken, TenantConfig};
pub use error::{ClusterError, ErrorCode, ErrorKind};
pub use job::{JobDetails, JobOverview, JobState, SubmitJob};
