//! Limits on how much state tasks may hold: a job's, a tenant's and the whole server's,
//! enforced as state grows rather than when a checkpoint measures it.
//!
//! Each limit is a [`StateAccount`] shared by the tasks it covers. A task's [`StateMeter`]
//! charges its accounts with what its backend holds (the change since it last did), and gives
//! it all back when the task ends.
//!
//! ```
//! use weir_state::{Measure, StateAccount, StateMeter, StateSize};
//!
//! let job = StateAccount::new("the job's max_state_bytes", 1_000, Measure::Total);
//! let mut a = StateMeter::new(vec![job.clone()], 100);
//! let mut b = StateMeter::new(vec![job.clone()], 100);
//! a.update(StateSize { total: 600, memory: 600 }).unwrap();
//! let e = b.update(StateSize { total: 600, memory: 600 }).unwrap_err();
//! assert!(e.to_string().contains("max_state_bytes"));
//! drop((a, b));
//! assert_eq!(job.used(), 0);
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::StateSize;

/// Which part of a backend's size an account limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    /// All state, wherever it lives (a job's or a tenant's quota).
    Total,
    /// State on the heap (the server's memory budget).
    Memory,
}

/// One limit, shared by the tasks it covers.
#[derive(Debug)]
pub struct StateAccount {
    what: String,
    limit: u64,
    measure: Measure,
    used: AtomicU64,
}

impl StateAccount {
    /// A limit of `limit` bytes, described as `what` in errors (e.g. "tenant 'acme''s
    /// max_total_state_bytes").
    pub fn new(what: impl Into<String>, limit: u64, measure: Measure) -> Arc<Self> {
        Arc::new(StateAccount {
            what: what.into(),
            limit,
            measure,
            used: AtomicU64::new(0),
        })
    }

    /// Bytes charged now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// The limit.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    fn measure(&self, size: StateSize) -> u64 {
        match self.measure {
            Measure::Total => size.total,
            Measure::Memory => size.memory,
        }
    }
}

/// State over a limit: the job fails with this.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateLimitExceeded {
    /// Too much state altogether.
    #[error("keyed state exceeds {what} of {limit} bytes (it would hold {would} bytes)")]
    Account {
        /// The limit's description.
        what: String,
        /// The limit.
        limit: u64,
        /// What the state would have held.
        would: u64,
    },
    /// One value or map entry too large.
    #[error(
        "a state entry of {size} bytes (key and value) exceeds max_state_value_bytes ({limit} bytes)"
    )]
    Value {
        /// Its size (a map entry's: user key and value).
        size: u64,
        /// The limit.
        limit: u64,
    },
}

/// What one task's state has charged to its accounts.
#[derive(Debug)]
pub struct StateMeter {
    accounts: Vec<Arc<StateAccount>>,
    charged: StateSize,
    max_value: u64,
}

impl StateMeter {
    /// A meter charging `accounts`, refusing single values over `max_value` bytes.
    pub fn new(accounts: Vec<Arc<StateAccount>>, max_value: u64) -> Self {
        StateMeter {
            accounts,
            charged: StateSize::default(),
            max_value,
        }
    }

    /// A meter with no limits.
    pub fn unlimited() -> Self {
        Self::new(Vec::new(), u64::MAX)
    }

    /// Refuses an entry (its key, a map entry's user key, and its value) over the limit.
    pub fn check_value(&self, size: usize) -> Result<(), StateLimitExceeded> {
        match size as u64 {
            size if size > self.max_value => Err(StateLimitExceeded::Value {
                size,
                limit: self.max_value,
            }),
            _ => Ok(()),
        }
    }

    /// The largest value (or map entry) allowed.
    pub fn max_value(&self) -> u64 {
        self.max_value
    }

    /// What was last charged.
    pub fn charged(&self) -> StateSize {
        self.charged
    }

    /// Charges the accounts with the change to `now`; over a limit, says which. The
    /// change is charged either way, and given back when the meter is dropped.
    pub fn update(&mut self, now: StateSize) -> Result<(), StateLimitExceeded> {
        let before = self.charged;
        self.charged = now;
        let mut exceeded = None;
        for account in &self.accounts {
            let (old, new) = (account.measure(before), account.measure(now));
            if new >= old {
                let used = account.used.fetch_add(new - old, Ordering::Relaxed) + (new - old);
                if new > old && used > account.limit && exceeded.is_none() {
                    exceeded = Some(StateLimitExceeded::Account {
                        what: account.what.clone(),
                        limit: account.limit,
                        would: used,
                    });
                }
            } else {
                account.used.fetch_sub(old - new, Ordering::Relaxed);
            }
        }
        exceeded.map_or(Ok(()), Err)
    }
}

impl Drop for StateMeter {
    fn drop(&mut self) {
        let _ = self.update(StateSize::default());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(total: u64, memory: u64) -> StateSize {
        StateSize { total, memory }
    }

    #[test]
    fn accounts_see_the_sum_of_their_tasks_and_get_it_back() {
        let tenant = StateAccount::new("tenant", 1_000, Measure::Total);
        let server = StateAccount::new("server budget", 500, Measure::Memory);
        let mut a = StateMeter::new(vec![tenant.clone(), server.clone()], 10);
        let mut b = StateMeter::new(vec![tenant.clone(), server.clone()], 10);
        a.update(size(400, 100)).unwrap();
        b.update(size(400, 300)).unwrap();
        assert_eq!((tenant.used(), server.used()), (800, 400));
        // Memory over the server's budget, total within the tenant's.
        let e = a.update(size(450, 250)).unwrap_err();
        assert_eq!(
            e,
            StateLimitExceeded::Account {
                what: "server budget".into(),
                limit: 500,
                would: 550
            }
        );
        // Shrinking is always allowed.
        a.update(size(0, 0)).unwrap();
        assert_eq!((tenant.used(), server.used()), (400, 300));
        drop(b);
        assert_eq!((tenant.used(), server.used()), (0, 0));
        assert!(a.check_value(10).is_ok());
        assert!(matches!(
            a.check_value(11),
            Err(StateLimitExceeded::Value {
                size: 11,
                limit: 10
            })
        ));
    }
}
