//! Fraud detection, Flink's classic rule in event time: a transaction under 1.00 immediately
//! followed (next transaction of the same account) by one over 500.00 within 60 s raises an
//! alert with the large transaction.
//!
//! Input: JSON lines `{"account": str, "amount": float, "ts": epoch-ms}`, each account's
//! transactions in time order. Output: `{"account", "ts", "amount"}`.
//! `--arg max-delay-ms=N` sets how far out of order accounts may be (default 5000).

use serde::{Deserialize, Serialize};
use weir::prelude::*;

weir::job!(build);

/// A card transaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transaction {
    pub account: String,
    pub amount: f64,
    pub ts: i64,
}

/// An alert: the large transaction that followed a small one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub account: String,
    pub ts: i64,
    pub amount: f64,
}

const SMALL: f64 = 1.00;
const LARGE: f64 = 500.00;
const ONE_MINUTE: i64 = 60_000;

/// Timestamp of the account's last transaction, if it was small (the flag).
const FLAG: ValueState<i64> = ValueState::new("small-transaction-ts", 1);
/// The pending cleanup timer.
const TIMER: ValueState<i64> = ValueState::new("cleanup-timer", 1);

/// Flags small transactions and alerts on a large one right after.
#[derive(Clone)]
pub struct FraudDetector;

impl KeyedProcessFunction for FraudDetector {
    type Key = String;
    type In = Transaction;
    type Out = Alert;
    const STATE: &'static [StateDescriptor] = &[FLAG.descriptor(), TIMER.descriptor()];

    fn process_element(
        &mut self,
        t: Transaction,
        ctx: &mut Context<'_, '_, String, Alert>,
    ) -> Result<()> {
        if let Some(small_ts) = ctx.value(&FLAG).get()? {
            if t.amount > LARGE && t.ts - small_ts <= ONE_MINUTE {
                ctx.emit(Alert {
                    account: t.account.clone(),
                    ts: t.ts,
                    amount: t.amount,
                })?;
            }
            // Only the very next transaction counts.
            if let Some(timer) = ctx.value(&TIMER).get()? {
                ctx.delete_event_time_timer(timer)?;
            }
            ctx.value(&FLAG).clear()?;
            ctx.value(&TIMER).clear()?;
        }
        if t.amount < SMALL {
            let timer = t.ts + ONE_MINUTE;
            ctx.value(&FLAG).set(&t.ts)?;
            ctx.value(&TIMER).set(&timer)?;
            ctx.register_event_time_timer(timer)?;
        }
        Ok(())
    }

    fn on_timer(
        &mut self,
        _ts: i64,
        _domain: TimeDomain,
        ctx: &mut Context<'_, '_, String, Alert>,
    ) -> Result<()> {
        ctx.value(&FLAG).clear()?;
        ctx.value(&TIMER).clear()
    }
}

pub fn build(env: &mut StreamEnv) -> Result<()> {
    env.set_job_name("fraud-detection");
    let delay = env.arg_parse("max-delay-ms", 5_000i64)?;
    env.file_json_lines::<Transaction>(env.arg("input")?)
        .uid("transactions")
        .assign_timestamps_and_watermarks(WatermarkStrategy::bounded_out_of_orderness(delay), |t| {
            t.ts
        })
        .uid("timestamps")
        .key_by(|t: &Transaction| t.account.clone())
        .process(FraudDetector)
        .uid("fraud-detector")
        .sink(Sink::file(env.arg("output")?))
        .uid("alerts");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir::testing::Harness;

    fn t(amount: f64, ts: i64) -> Transaction {
        Transaction {
            account: "acc".into(),
            amount,
            ts,
        }
    }

    fn harness() -> Harness<Transaction> {
        Harness::new(|s: DataStream<Transaction>| {
            s.key_by(|t: &Transaction| t.account.clone())
                .process(FraudDetector)
        })
        .unwrap()
    }

    #[test]
    fn small_then_large_within_a_minute_alerts() {
        let mut h = harness();
        h.process(t(0.5, 0), Some(0)).unwrap();
        h.process(t(600.0, 60_000), Some(60_000)).unwrap();
        let alerts: Vec<Alert> = h.take_output().unwrap();
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].amount, 600.0);
        assert_eq!(h.pending_timers(), 0, "the cleanup timer was deleted");
    }

    #[test]
    fn the_flag_expires_with_the_timer() {
        let mut h = harness();
        h.process(t(0.5, 0), Some(0)).unwrap();
        h.advance_watermark(60_000).unwrap();
        assert_eq!(h.value_state(&"acc".to_string(), &FLAG).unwrap(), None);
        h.process(t(600.0, 60_001), Some(60_001)).unwrap();
        assert!(h.take_output::<Alert>().unwrap().is_empty());
    }

    #[test]
    fn only_the_next_transaction_counts() {
        let mut h = harness();
        h.process(t(0.5, 0), Some(0)).unwrap();
        h.process(t(20.0, 10), Some(10)).unwrap();
        h.process(t(600.0, 20), Some(20)).unwrap();
        assert!(h.take_output::<Alert>().unwrap().is_empty());
    }
}
