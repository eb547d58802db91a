//! How a job checkpoints, and how it restarts after a failure.

use std::time::Duration;

use weir_checkpoint::Storage;

/// How barriers are handled by tasks with several inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CheckpointMode {
    /// Barriers are aligned: exactly-once state.
    ExactlyOnce,
    /// Barriers are only counted: records may be replayed after a restore.
    AtLeastOnce,
}

/// Checkpointing of one job.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CheckpointConfig {
    /// Root directory; the job's checkpoints go under `<root>/<job-id>/`.
    pub storage: Option<Storage>,
    /// Time between checkpoints; `None`: no periodic checkpoints.
    pub interval: Option<Duration>,
    /// A checkpoint not complete after this long is given up.
    pub timeout: Duration,
    /// Least time between the end of one checkpoint and the start of the next.
    pub min_pause: Duration,
    /// Completed checkpoints kept.
    pub retained: usize,
    /// Aligned or not.
    pub mode: CheckpointMode,
    /// Checkpoints that may fail in a row before the job fails.
    pub tolerable_failures: u32,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            storage: None,
            interval: None,
            timeout: Duration::from_secs(600),
            min_pause: Duration::ZERO,
            retained: 1,
            mode: CheckpointMode::ExactlyOnce,
            tolerable_failures: 0,
        }
    }
}

/// What to do when a task fails.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum RestartStrategy {
    /// Fail the job.
    None,
    /// Restart up to `attempts` times, waiting `delay` each time.
    FixedDelay {
        /// Restarts allowed.
        attempts: u32,
        /// Wait before each.
        delay: Duration,
    },
    /// Restart up to `attempts` times, waiting `initial`, then twice as long each time, at
    /// most `max`.
    ExponentialBackoff {
        /// Restarts allowed.
        attempts: u32,
        /// First wait.
        initial: Duration,
        /// Longest wait.
        max: Duration,
    },
}

impl RestartStrategy {
    /// Restarts allowed by default.
    pub const DEFAULT_ATTEMPTS: u32 = 10;
    /// The first wait by default.
    pub const DEFAULT_INITIAL: Duration = Duration::from_millis(100);
    /// The longest wait of a backoff (unless its first wait is longer).
    pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

    /// Up to `attempts` restarts, waiting `initial`, then twice as long each time, at most
    /// [`RestartStrategy::MAX_BACKOFF`].
    pub fn backoff(attempts: u32, initial: Duration) -> Self {
        RestartStrategy::ExponentialBackoff {
            attempts,
            initial,
            max: Self::MAX_BACKOFF.max(initial),
        }
    }

    /// What a job does without a strategy of its own: back off and restart from its
    /// latest checkpoint when it checkpoints; fail otherwise (it would start over).
    pub fn default_for(checkpointing: bool) -> Self {
        if checkpointing {
            Self::backoff(Self::DEFAULT_ATTEMPTS, Self::DEFAULT_INITIAL)
        } else {
            RestartStrategy::None
        }
    }

    /// The wait before restart number `n` (1-based), or `None` once attempts are used up.
    pub fn delay(&self, n: u32) -> Option<Duration> {
        match *self {
            RestartStrategy::None => None,
            RestartStrategy::FixedDelay { attempts, delay } => (n <= attempts).then_some(delay),
            RestartStrategy::ExponentialBackoff {
                attempts,
                initial,
                max,
            } => (n <= attempts).then(|| initial.saturating_mul(1 << (n - 1).min(20)).min(max)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_strategies_wait_and_give_up_as_configured() {
        let ms = Duration::from_millis;
        assert_eq!(RestartStrategy::None.delay(1), None);
        let fixed = RestartStrategy::FixedDelay {
            attempts: 2,
            delay: ms(30),
        };
        assert_eq!(
            (fixed.delay(1), fixed.delay(2), fixed.delay(3)),
            (Some(ms(30)), Some(ms(30)), None)
        );
        let backoff = RestartStrategy::default_for(true);
        let waits: Vec<_> = (1..=11).map(|n| backoff.delay(n)).collect();
        assert_eq!(
            &waits[..4],
            [Some(ms(100)), Some(ms(200)), Some(ms(400)), Some(ms(800))]
        );
        assert_eq!(waits[9], Some(RestartStrategy::MAX_BACKOFF));
        assert_eq!(waits[10], None, "ten attempts by default");
        assert_eq!(RestartStrategy::default_for(false), RestartStrategy::None);
        // A first wait longer than the cap is kept; huge attempt numbers do not overflow.
        let slow = RestartStrategy::backoff(u32::MAX, Duration::from_secs(60));
        assert_eq!(slow.delay(1_000_000), Some(Duration::from_secs(60)));
    }
}
