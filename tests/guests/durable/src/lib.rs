//! The job of the checkpoint tests: running counts per key (value state) and one-second
//! tumbling event-time window counts (window state and timers), into exactly-once file
//! sinks, from a rate-limited source so that checkpoints and faults land mid-stream.
//!
//! - `source=datagen` (default): `count` records over `keys` keys at `rate` records/s per
//!   subtask; `source=file`: lines `<key> <anything>` of the files under `input`, at `rate`.
//! - `output=DIR`: `DIR/counts` gets `{"key", "count"}` per record, `DIR/windows` gets
//!   `{"key", "start", "count"}` per window (datagen only).
//! - `ttl=true`: the running count's state expires 300 ms after its last write, so a key
//!   seen again later starts from 1.
//! - `fail-at=N`: the counting operator panics on the record with sequence number N
//!   (datagen: `seq`; file: the line's second word) — on the first attempt only
//!   (`weir.attempt` is 0), so a restarted job gets past it.

use serde::{Deserialize, Serialize};
use weir::prelude::*;

weir::job!(build);

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Count {
    key: String,
    count: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct WindowCount {
    key: String,
    start: i64,
    count: u64,
}

const COUNT: ValueState<u64> = ValueState::new("count", 1);
const COUNT_TTL: ValueState<u64> =
    ValueState::new("count", 1).with_ttl(StateTtl::after_write_ms(300));
const SEEN: ValueState<u64> = ValueState::new("seen", 1);

/// Running count per key; panics once, at the chosen record, on the first attempt.
#[derive(Clone)]
struct RunningCount {
    fail_at: Option<u64>,
}

impl KeyedProcessFunction for RunningCount {
    type Key = String;
    type In = (String, u64);
    type Out = Count;
    const STATE: &'static [StateDescriptor] = &[COUNT.descriptor(), SEEN.descriptor()];

    fn process_element(
        &mut self,
        (key, seq): (String, u64),
        ctx: &mut Context<'_, '_, String, Count>,
    ) -> Result<()> {
        if self.fail_at == Some(seq) {
            panic!("injected fault at record {seq}");
        }
        let count = ctx.value(&COUNT).get()?.unwrap_or(0) + 1;
        ctx.value(&COUNT).set(&count)?;
        ctx.emit(Count { key, count })
    }
}

/// The running count, with state that expires.
#[derive(Clone)]
struct ExpiringCount;

impl KeyedProcessFunction for ExpiringCount {
    type Key = String;
    type In = (String, u64);
    type Out = Count;
    const STATE: &'static [StateDescriptor] = &[COUNT_TTL.descriptor()];

    fn process_element(
        &mut self,
        (key, _): (String, u64),
        ctx: &mut Context<'_, '_, String, Count>,
    ) -> Result<()> {
        let count = ctx.value(&COUNT_TTL).get()?.unwrap_or(0) + 1;
        ctx.value(&COUNT_TTL).set(&count)?;
        ctx.emit(Count { key, count })
    }
}

#[derive(Clone)]
struct CountAgg;

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

fn build(env: &mut StreamEnv) -> Result<()> {
    env.set_job_name("durable");
    let output = env.arg("output")?.trim_end_matches('/').to_string();
    let first_attempt = env.arg_or("weir.attempt", "0") == "0";
    let fail_at = match env.arg_parse("fail-at", -1i64)? {
        n if n >= 0 && first_attempt => Some(n as u64),
        _ => None,
    };
    let rate: u64 = env.arg_parse("rate", 0)?;
    let keyed = match env.arg_or("source", "datagen") {
        "file" => {
            let mut source = FileSource::lines(env.arg("input")?);
            if rate > 0 {
                source = source.rate(rate);
            }
            env.file(source)
                .uid("lines")
                .map(|line: String| {
                    let mut parts = line.split_whitespace();
                    let key = parts.next().unwrap_or_default().to_string();
                    let seq = parts
                        .next()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(u64::MAX);
                    (key, seq)
                })
                .uid("parse")
        }
        _ => {
            let mut gen = Datagen::bounded(env.arg_parse("count", 20_000)?)
                .keys(env.arg_parse("keys", 50)?)
                .timestamps(0, 1);
            if rate > 0 {
                gen = gen.rate(rate);
            }
            let records = env
                .datagen(gen)
                .uid("datagen")
                .assign_timestamps_and_watermarks(
                    WatermarkStrategy::bounded_out_of_orderness(0),
                    |r: &DatagenRecord| r.timestamp,
                )
                .uid("timestamps");
            records
                .key_by(|r: &DatagenRecord| r.key)
                .window(WindowAssigner::tumbling_event_time(1_000))
                .aggregate(CountAgg, |key: &u64, w: &TimeWindow, count| WindowCount {
                    key: key.to_string(),
                    start: w.start,
                    count,
                })
                .uid("windows")
                .sink(Sink::file(format!("{output}/windows")))
                .uid("windows-sink");
            records
                .map(|r: DatagenRecord| (r.key.to_string(), r.seq))
                .uid("pairs")
        }
    };
    let keyed = keyed.key_by(|p: &(String, u64)| p.0.clone());
    let counts = if env.arg_or("ttl", "false") == "true" {
        keyed.process(ExpiringCount)
    } else {
        keyed.process(RunningCount { fail_at })
    };
    counts
        .uid("count")
        .sink(Sink::file(format!("{output}/counts")))
        .uid("counts-sink");
    Ok(())
}
