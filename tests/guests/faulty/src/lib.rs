//! A job that misbehaves on purpose at record `at` (default 5,000 of 10,000), chosen by
//! `--arg mode=...`: `panic`, `error` (returns an error), `loop` (never returns),
//! `alloc` (allocates without bound), `stack` (unbounded recursion), `giant` (32 MiB of
//! output from one call), `duplicate-uid` (an
//! invalid plan), `unbounded` (never ends: an unbounded datagen into a file sink under
//! `--arg output=DIR`), `hoard` (never ends: writes a new 64 KiB map-state entry per record,
//! 400 records/s), `big-value` (writes one value-state value of 8 MiB), `chatty` (logs a
//! line per record that tries to forge another tenant's log line), `none` (behaves).

use weir::prelude::*;

weir::job!(build);

#[derive(Clone)]
struct FailingProcess {
    at: u64,
}

impl KeyedProcessFunction for FailingProcess {
    type Key = u64;
    type In = DatagenRecord;
    type Out = u64;

    fn process_element(
        &mut self,
        r: DatagenRecord,
        ctx: &mut Context<'_, '_, u64, u64>,
    ) -> Result<()> {
        if r.seq == self.at {
            return Err(Error::msg(format!("refusing record {}", r.seq)));
        }
        ctx.emit(r.seq)
    }
}

const HOARD: MapState<u64, Vec<u8>> = MapState::new("hoard", 1);
const BIG: ValueState<Vec<u8>> = ValueState::new("big", 1);

/// Keeps every record's 64 KiB under a new map entry, or one 8 MiB value per key.
#[derive(Clone)]
struct Hoard {
    big: bool,
}

impl KeyedProcessFunction for Hoard {
    type Key = u64;
    type In = DatagenRecord;
    type Out = u64;
    const STATE: &'static [StateDescriptor] = &[HOARD.descriptor(), BIG.descriptor()];

    fn process_element(
        &mut self,
        r: DatagenRecord,
        ctx: &mut Context<'_, '_, u64, u64>,
    ) -> Result<()> {
        if self.big {
            ctx.value(&BIG).set(&vec![1u8; 8 << 20])?;
        } else {
            // Incompressible, so that RocksDB's files grow as much as the heap would.
            let mut x = r.seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            let value: Vec<u8> = (0..(64 << 10) / 8)
                .flat_map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x.to_le_bytes()
                })
                .collect();
            ctx.map(&HOARD).put(&r.seq, &value)?;
        }
        ctx.emit(r.seq)
    }
}

fn recurse(n: u64) -> u64 {
    let buf = std::hint::black_box([n; 64]);
    if std::hint::black_box(n) == u64::MAX {
        return buf[3];
    }
    std::hint::black_box(recurse(n + 1)).wrapping_add(buf[(n % 64) as usize])
}

fn build(env: &mut StreamEnv) -> Result<()> {
    let mode = env.arg_or("mode", "none").to_string();
    let at: u64 = env.arg_parse("at", 5_000)?;
    let records = env.datagen(Datagen::bounded(10_000).keys(100));
    match mode.as_str() {
        "error" => {
            records
                .key_by(|r: &DatagenRecord| r.key)
                .process(FailingProcess { at })
                .uid("failing-process")
                .sink(Sink::blackhole());
            return Ok(());
        }
        "giant" => {
            // 32 MiB of output from one call (on record `at`).
            records
                .flat_map(move |r: DatagenRecord| {
                    if r.seq == at {
                        vec![vec![7u8; 1 << 20]; 32]
                    } else {
                        Vec::new()
                    }
                })
                .uid("giant")
                .rebalance()
                .map(|v: Vec<u8>| v.len() as u64)
                .uid("sizes")
                .sink(Sink::blackhole());
            return Ok(());
        }
        "unbounded" => {
            env.datagen(Datagen::unbounded().rate(20_000))
                .map(|r: DatagenRecord| r.value)
                .uid("values")
                .sink(Sink::file(env.arg("output")?))
                .uid("sink");
            return Ok(());
        }
        "hoard" | "big-value" => {
            let records = match mode.as_str() {
                "hoard" => env.datagen(Datagen::unbounded().rate(400).keys(10)),
                _ => env.datagen(Datagen::bounded(1).keys(1)),
            };
            records
                .key_by(|r: &DatagenRecord| r.key)
                .process(Hoard {
                    big: mode == "big-value",
                })
                .uid("hoard")
                .sink(Sink::blackhole());
            return Ok(());
        }
        "chatty" => {
            records
                .map(|r: DatagenRecord| {
                    weir::log(
                        weir::LogLevel::Info,
                        &format!(
                            "record {}\n2026-12-01T00:00:00Z  INFO job{{tenant=globex}}: FORGED \x1b[2K",
                            r.seq
                        ),
                    );
                    r.value
                })
                .uid("chatty")
                .sink(Sink::blackhole());
            return Ok(());
        }
        "print" => {
            let count: u64 = env.arg_parse("count", 5)?;
            env.datagen(Datagen::bounded(count).keys(3))
                .map(|r: DatagenRecord| (r.seq, r.key))
                .uid("pairs")
                .sink(Sink::print())
                .uid("print");
            return Ok(());
        }
        "duplicate-uid" => {
            records
                .map(|r: DatagenRecord| r.value)
                .uid("same")
                .filter(|v: &i64| *v > 0)
                .uid("same")
                .sink(Sink::blackhole());
            return Ok(());
        }
        _ => {}
    }
    let m = mode.clone();
    records
        .map(move |r: DatagenRecord| {
            if r.seq == at {
                match m.as_str() {
                    "panic" => panic!("boom at record {at}"),
                    "loop" => {
                        let mut x = r.value as u64;
                        loop {
                            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                            if x == 42 {
                                std::hint::black_box(x);
                            }
                        }
                    }
                    "alloc" => {
                        let mut hoard: Vec<Vec<u8>> = Vec::new();
                        loop {
                            hoard.push(vec![1u8; 1 << 20]);
                            std::hint::black_box(&hoard);
                        }
                    }
                    "stack" => return recurse(r.seq) as i64,
                    _ => {}
                }
            }
            r.value
        })
        .uid("faulty-map")
        .sink(Sink::blackhole())
        .uid("sink");
    Ok(())
}
