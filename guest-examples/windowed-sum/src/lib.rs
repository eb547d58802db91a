//! Windowed sum: per-key 10 s tumbling event-time windows over out-of-order JSON events.
//!
//! Input: JSON lines `{"key": str, "value": int, "ts": epoch-ms}`. Watermarks: bounded
//! out-of-orderness of 2 s. Output: `{"key", "window_start", "window_end", "count", "sum"}`
//! under `DIR/windows/`; events too late for their window, unchanged, under `DIR/late/`.
//! `--arg allowed-lateness-ms=N` keeps windows open N ms longer (late events then re-fire
//! their window with the updated result).

use serde::{Deserialize, Serialize};
use weir::prelude::*;

weir::job!(build);

/// An input event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub key: String,
    pub value: i64,
    pub ts: i64,
}

/// One window's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowSum {
    pub key: String,
    pub window_start: i64,
    pub window_end: i64,
    pub count: u64,
    pub sum: i64,
}

/// Late events.
pub const LATE: OutputTag<Event> = OutputTag::new("late");

/// Counts and sums a window's values.
#[derive(Clone)]
pub struct CountAndSum;

impl AggregateFunction for CountAndSum {
    type In = Event;
    type Acc = (u64, i64);
    type Out = (u64, i64);

    fn create_accumulator(&self) -> (u64, i64) {
        (0, 0)
    }

    fn add(&self, e: &Event, acc: &mut (u64, i64)) {
        acc.0 += 1;
        acc.1 += e.value;
    }

    fn get_result(&self, acc: &(u64, i64)) -> (u64, i64) {
        *acc
    }

    fn merge(&self, a: (u64, i64), b: (u64, i64)) -> (u64, i64) {
        (a.0 + b.0, a.1 + b.1)
    }
}

/// The pipeline from events to window results (shared with the unit tests).
pub fn windows(events: DataStream<Event>, allowed_lateness_ms: i64) -> DataStream<WindowSum> {
    events
        .key_by(|e: &Event| e.key.clone())
        .window(WindowAssigner::tumbling_event_time(10_000))
        .allowed_lateness(allowed_lateness_ms)
        .side_output_late_data(&LATE)
        .aggregate(CountAndSum, |key: &String, w: &TimeWindow, (count, sum)| {
            WindowSum {
                key: key.clone(),
                window_start: w.start,
                window_end: w.end,
                count,
                sum,
            }
        })
}

pub fn build(env: &mut StreamEnv) -> Result<()> {
    env.set_job_name("windowed-sum");
    let output = env.arg("output")?.trim_end_matches('/').to_string();
    let lateness = env.arg_parse("allowed-lateness-ms", 0i64)?;
    let events = env
        .file_json_lines::<Event>(env.arg("input")?)
        .uid("events")
        .assign_timestamps_and_watermarks(WatermarkStrategy::bounded_out_of_orderness(2_000), |e| {
            e.ts
        })
        .uid("timestamps");
    let sums = windows(events, lateness).uid("window");
    sums.sink(Sink::file(format!("{output}/windows")))
        .uid("windows-sink");
    sums.side_output(&LATE)
        .sink(Sink::file(format!("{output}/late")))
        .uid("late-sink");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir::testing::Harness;

    fn ev(key: &str, value: i64, ts: i64) -> Event {
        Event {
            key: key.into(),
            value,
            ts,
        }
    }

    #[test]
    fn windows_fire_at_the_watermark_and_late_events_go_aside() {
        let mut h = Harness::new(|e: DataStream<Event>| windows(e, 0)).unwrap();
        h.process(ev("a", 1, 1_000), Some(1_000)).unwrap();
        h.process(ev("a", 2, 9_999), Some(9_999)).unwrap();
        h.process(ev("a", 4, 10_000), Some(10_000)).unwrap();
        h.advance_watermark(9_998).unwrap();
        assert!(h.take_output::<WindowSum>().unwrap().is_empty());
        h.advance_watermark(9_999).unwrap();
        let out: Vec<WindowSum> = h.take_output().unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].window_start, out[0].count, out[0].sum), (0, 2, 3));
        h.process(ev("a", 8, 5_000), Some(5_000)).unwrap();
        assert_eq!(h.take_side_output(&LATE).unwrap(), vec![ev("a", 8, 5_000)]);
        h.finish().unwrap();
        let out: Vec<WindowSum> = h.take_output().unwrap();
        assert_eq!(
            (out[0].window_start, out[0].count, out[0].sum),
            (10_000, 1, 4)
        );
        assert_eq!(h.pending_timers(), 0);
    }

    #[test]
    fn allowed_lateness_refires_the_window() {
        let mut h = Harness::new(|e: DataStream<Event>| windows(e, 5_000)).unwrap();
        h.process(ev("a", 1, 1_000), Some(1_000)).unwrap();
        h.advance_watermark(10_000).unwrap();
        assert_eq!(h.take_output::<WindowSum>().unwrap()[0].sum, 1);
        h.process(ev("a", 2, 2_000), Some(2_000)).unwrap();
        assert_eq!(h.take_output::<WindowSum>().unwrap()[0].sum, 3);
        h.advance_watermark(14_999).unwrap();
        h.process(ev("a", 4, 3_000), Some(3_000)).unwrap();
        assert_eq!(h.take_side_output(&LATE).unwrap().len(), 1);
    }
}
