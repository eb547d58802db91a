//! A job whose source is written in the guest: the numbers `0..count` (split over the
//! subtasks, each number its own event time in ms) → key_by(n % 7) → 100 ms tumbling
//! event-time windows summing n → `{"key", "start", "sum"}` lines under `--arg output=DIR`.

use serde::{Deserialize, Serialize};
use weir::prelude::*;
use weir::source::{SourceContext, SourceFunction, SourceOutput};

weir::job!(build);

#[derive(Clone)]
struct Counter {
    end: u64,
    next: u64,
    step: u64,
}

impl SourceFunction for Counter {
    type Out = u64;

    fn open(&mut self, ctx: &SourceContext) -> Result<()> {
        self.next = u64::from(ctx.subtask);
        self.step = u64::from(ctx.parallelism);
        Ok(())
    }

    fn poll(&mut self, out: &mut SourceOutput<'_, '_, u64>, max: usize) -> Result<bool> {
        for _ in 0..max {
            if self.next >= self.end {
                return Ok(false);
            }
            out.collect_with_timestamp(self.next, self.next as i64)?;
            self.next += self.step;
        }
        Ok(self.next < self.end)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Sum {
    key: u64,
    start: i64,
    sum: u64,
}

fn build(env: &mut StreamEnv) -> Result<()> {
    let count = env.arg_parse("count", 100_000u64)?;
    env.source(Counter {
        end: count,
        next: 0,
        step: 1,
    })
    .uid("counter")
    .with_watermarks(WatermarkStrategy::monotonous_timestamps())
    .key_by(|n: &u64| n % 7)
    .window(WindowAssigner::tumbling_event_time(100))
    .reduce(
        |a: u64, b: u64| a + b,
        |key: &u64, w: &TimeWindow, sum: u64| Sum {
            key: *key,
            start: w.start,
            sum,
        },
    )
    .uid("sums")
    .sink(Sink::file(env.arg("output")?))
    .uid("sink");
    Ok(())
}
