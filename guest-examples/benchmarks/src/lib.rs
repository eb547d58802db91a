//! The jobs of the benchmarks (`cargo bench -p weir-server --bench throughput` and
//! `--bench durable`), chosen with `--arg pipeline=...`, over `--arg count=N` datagen
//! records:
//!
//! - `map-filter`: datagen → map → filter → blackhole
//! - `keyed-count`: datagen over `keys` (default 100,000) keys → running count per key in
//!   value state → blackhole
//! - `window-count`: datagen (1 record per ms, `keys` default 100) → 1 s tumbling
//!   event-time window count per key → blackhole
//! - `hot-count`: like `keyed-count`, but the first `keys` (default 1,000,000) records touch
//!   every key once and the rest only the first `hot` (default 10,000) keys; `rate` limits
//!   records per second

use weir::prelude::*;

weir::job!(build);

const COUNT: ValueState<u64> = ValueState::new("count", 1);

/// Running count per key.
#[derive(Clone)]
pub struct RunningCount;

impl KeyedProcessFunction for RunningCount {
    type Key = u64;
    type In = DatagenRecord;
    type Out = (u64, u64);
    const STATE: &'static [StateDescriptor] = &[COUNT.descriptor()];

    fn process_element(
        &mut self,
        r: DatagenRecord,
        ctx: &mut Context<'_, '_, u64, (u64, u64)>,
    ) -> Result<()> {
        let n = ctx.value(&COUNT).get()?.unwrap_or(0) + 1;
        ctx.value(&COUNT).set(&n)?;
        ctx.emit((r.key, n))
    }
}

/// Counts a window's records.
#[derive(Clone)]
pub struct CountAgg;

impl AggregateFunction for CountAgg {
    type In = DatagenRecord;
    type Acc = u64;
    type Out = u64;

    fn create_accumulator(&self) -> u64 {
        0
    }

    fn add(&self, _: &DatagenRecord, acc: &mut u64) {
        *acc += 1;
    }

    fn get_result(&self, acc: &u64) -> u64 {
        *acc
    }

    fn merge(&self, a: u64, b: u64) -> u64 {
        a + b
    }
}

pub fn build(env: &mut StreamEnv) -> Result<()> {
    let count: u64 = env.arg_parse("count", 10_000_000)?;
    let pipeline = env.arg("pipeline")?.to_string();
    env.set_job_name(format!("bench-{pipeline}"));
    match pipeline.as_str() {
        "map-filter" => {
            env.datagen(Datagen::bounded(count).keys(1_000))
                .map(|r: DatagenRecord| r.value * 2 + r.key as i64)
                .uid("map")
                .filter(|v: &i64| v % 3 != 0)
                .uid("filter")
                .sink(Sink::blackhole());
        }
        "keyed-count" => {
            let keys = env.arg_parse("keys", 100_000u64)?;
            env.datagen(Datagen::bounded(count).keys(keys))
                .key_by(|r: &DatagenRecord| r.key)
                .process(RunningCount)
                .uid("count")
                .sink(Sink::blackhole());
        }
        "hot-count" => {
            // The first `keys` records touch every key once; the rest only the first
            // `hot` keys (for incremental checkpoints after touching a few keys).
            let keys = env.arg_parse("keys", 1_000_000u64)?;
            let hot = env.arg_parse("hot", 10_000u64)?.max(1);
            let rate = env.arg_parse("rate", 0u64)?;
            let mut gen = Datagen::bounded(count).keys(keys);
            if rate > 0 {
                gen = gen.rate(rate);
            }
            env.datagen(gen)
                .map(move |r: DatagenRecord| {
                    let key = if r.seq < keys { r.seq } else { r.seq % hot };
                    DatagenRecord { key, ..r }
                })
                .uid("keys")
                .key_by(|r: &DatagenRecord| r.key)
                .process(RunningCount)
                .uid("count")
                .sink(Sink::blackhole());
        }
        "window-count" => {
            let keys = env.arg_parse("keys", 100u64)?;
            env.datagen(Datagen::bounded(count).keys(keys).timestamps(0, 1))
                .with_watermarks(WatermarkStrategy::monotonous_timestamps())
                .key_by(|r: &DatagenRecord| r.key)
                .window(WindowAssigner::tumbling_event_time(1_000))
                .aggregate(CountAgg, |k: &u64, w: &TimeWindow, n: u64| (*k, w.start, n))
                .uid("window")
                .sink(Sink::blackhole());
        }
        other => return Err(Error::msg(format!("unknown pipeline '{other}'"))),
    }
    Ok(())
}
