//! Throughput of three pipelines at parallelism 1, each beside the same work done by a plain
//! native Rust loop (no Wasm, no runtime), measured in the same run:
//!
//!   (a) datagen → map + filter → blackhole
//!   (b) datagen over 100,000 keys → keyed running count in value state → blackhole
//!   (c) datagen → 1 s tumbling event-time window count per key → blackhole
//!
//! Run: `cargo bench -p weir-server --bench throughput` (WEIR_BENCH_SCALE=0.1 for a quick
//! look). Prints rows/s (median of 3 runs) and the weir/native ratio.

#[path = "../../../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use weir_runtime::{Runtime, RuntimeConfig};
use weir_worker::{run_job, JobLink, JobOptions};

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The datagen record `seq` (same formula as the host's datagen, seed 0).
fn record(seq: u64, keys: u64) -> (u64, u64, i64, i64) {
    let h = splitmix64(splitmix64(seq));
    (seq, h % keys, ((h >> 32) % 1000) as i64, seq as i64)
}

fn native_map_filter(count: u64) -> u64 {
    let mut out = 0;
    for seq in 0..count {
        let (_, key, value, _) = black_box(record(seq, 1_000));
        let v = value * 2 + key as i64;
        if v % 3 != 0 {
            out += 1;
        }
    }
    out
}

fn native_keyed_count(count: u64) -> u64 {
    let mut counts: HashMap<u64, u64> = HashMap::new();
    let mut out = 0;
    for seq in 0..count {
        let (_, key, _, _) = black_box(record(seq, 100_000));
        let n = counts.entry(key).or_default();
        *n += 1;
        out += black_box(*n) & 1;
    }
    out
}

fn native_window_count(count: u64) -> u64 {
    let mut windows: HashMap<u64, u64> = HashMap::new();
    let mut window_end = 1_000;
    let mut out = 0;
    for seq in 0..count {
        let (_, key, _, ts) = black_box(record(seq, 100));
        if ts >= window_end {
            out += windows
                .drain()
                .map(|(k, n)| black_box(k ^ n) & 1)
                .sum::<u64>();
            window_end += 1_000;
        }
        *windows.entry(key).or_default() += 1;
    }
    out + windows.len() as u64
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let scale: f64 = std::env::var("WEIR_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let runs = 3;
    let wasm = common::guest("benchmarks");
    let runtime = Runtime::new(RuntimeConfig::default()).expect("engine");
    let component = runtime
        .load(&std::fs::read(&wasm).unwrap())
        .expect("component");

    type Native = fn(u64) -> u64;
    let cases: [(&str, &str, u64, Native); 3] = [
        (
            "(a) map + filter",
            "map-filter",
            20_000_000,
            native_map_filter,
        ),
        (
            "(b) keyed count, 100k keys",
            "keyed-count",
            5_000_000,
            native_keyed_count,
        ),
        (
            "(c) 1 s window count",
            "window-count",
            5_000_000,
            native_window_count,
        ),
    ];
    println!(
        "{:<28} {:>12} {:>14} {:>16} {:>10} {:>8}",
        "pipeline (parallelism 1)", "records", "weir rows/s", "native rows/s", "ns/row", "ratio"
    );
    for (name, pipeline, count, native) in cases {
        let count = ((count as f64 * scale) as u64).max(10_000);
        let options = JobOptions::new(1)
            .arg("pipeline", pipeline)
            .arg("count", count.to_string());
        // Warm-up: instantiation paths, page faults.
        let warm = JobOptions::new(1)
            .arg("pipeline", pipeline)
            .arg("count", (count / 20).max(1_000).to_string());
        run_job(&component, &warm, JobLink::unsteered()).expect("warm-up run");
        let weir: Vec<Duration> = (0..runs)
            .map(|_| {
                let start = Instant::now();
                let summary =
                    run_job(&component, &options, JobLink::unsteered()).expect("benchmark run");
                assert_eq!(summary.operators[0].records_in, count);
                start.elapsed()
            })
            .collect();
        let native_times: Vec<Duration> = (0..runs)
            .map(|_| {
                let start = Instant::now();
                black_box(native(black_box(count)));
                start.elapsed()
            })
            .collect();
        let (w, n) = (median(weir), median(native_times));
        let rate = |d: Duration| count as f64 / d.as_secs_f64();
        println!(
            "{:<28} {:>12} {:>14.0} {:>16.0} {:>10.0} {:>8.3}",
            name,
            count,
            rate(w),
            rate(n),
            w.as_nanos() as f64 / count as f64,
            rate(w) / rate(n)
        );
    }
}
