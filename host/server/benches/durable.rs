//! Durable state at parallelism 1, in one run so the figures compare:
//!
//!   (d) keyed running count over 1,000,000 keys: memory vs RocksDB, rows/s
//!   (e) the same with a checkpoint every second vs none: overhead per backend
//!   (f) 1,000,000 keys, then only 1 % of them: every checkpoint's duration, state size and
//!       bytes uploaded — memory (full, canonical) vs RocksDB (incremental SST files)
//!   (g) recovery: starting the job from a checkpoint of those 1,000,000 keys, per backend
//!
//! Run: `cargo bench -p weir-server --bench durable` (WEIR_BENCH_SCALE=0.1 for a quick
//! look). Rates are medians of 3 runs, memory and RocksDB interleaved.

#[path = "../../../tests/common/mod.rs"]
mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use weir_checkpoint::{checkpoint_dir, list_checkpoints, read_metadata, Storage};
use weir_runtime::{Runtime, RuntimeConfig};
use weir_worker::{run_job, CheckpointConfig, JobLink, JobOptions, StateBackendKind};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn backend(name: &str, dir: &Path) -> StateBackendKind {
    match name {
        "rocksdb" => StateBackendKind::RocksDb(dir.join("state")),
        _ => StateBackendKind::Memory,
    }
}

fn options(pipeline: &str, count: u64, keys: u64) -> JobOptions {
    JobOptions::new(1)
        .arg("pipeline", pipeline)
        .arg("count", count.to_string())
        .arg("keys", keys.to_string())
}

fn with_checkpoints(mut o: JobOptions, dir: &Path, interval: Duration) -> JobOptions {
    o.checkpoints = CheckpointConfig {
        storage: Some(Storage::open(dir.join("chk").to_str().unwrap()).unwrap()),
        interval: Some(interval),
        retained: 1_000,
        ..CheckpointConfig::default()
    };
    o
}

fn main() {
    let scale: f64 = std::env::var("WEIR_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let keys = ((1_000_000.0 * scale) as u64).max(10_000);
    let count = keys * 5;
    let runtime = Runtime::new(RuntimeConfig::default()).expect("engine");
    let wasm = common::guest("benchmarks");
    let component = runtime
        .load(&std::fs::read(&wasm).unwrap())
        .expect("component");
    let backends = ["memory", "rocksdb"];

    // (d) and (e): interleaved runs, no checkpoints / a checkpoint every second.
    println!("(d, e) keyed running count, {keys} keys, {count} records, parallelism 1");
    println!(
        "{:<10} {:>16} {:>22} {:>10}",
        "backend", "rows/s, none", "rows/s, checkpoint 1 s", "overhead"
    );
    let mut rates = vec![(Vec::new(), Vec::new()); backends.len()];
    for _ in 0..3 {
        for (b, name) in backends.iter().enumerate() {
            for with in [false, true] {
                let dir = tempfile::tempdir().unwrap();
                let mut o = options("keyed-count", count, keys);
                o.state_backend = backend(name, dir.path());
                if with {
                    o = with_checkpoints(o, dir.path(), Duration::from_secs(1));
                }
                let start = Instant::now();
                let summary = run_job(&component, &o, JobLink::unsteered()).expect("benchmark run");
                assert_eq!(summary.operators[0].records_in, count);
                let rate = count as f64 / start.elapsed().as_secs_f64();
                if with {
                    rates[b].1.push(rate);
                } else {
                    rates[b].0.push(rate);
                }
            }
        }
    }
    for (b, name) in backends.iter().enumerate() {
        let (none, chk) = (median(rates[b].0.clone()), median(rates[b].1.clone()));
        println!(
            "{name:<10} {:>14.2} M {:>20.2} M {:>9.1} %",
            none / 1e6,
            chk / 1e6,
            (none / chk - 1.0) * 100.0
        );
    }

    // (f) and (g): all keys once, then 1 % hot; checkpoints every second.
    println!();
    println!("(f) {keys} keys, then 1 % of them hot; a checkpoint every second");
    println!(
        "{:<10} {:>5} {:>10} {:>14} {:>14}",
        "backend", "chk", "duration", "state bytes", "uploaded"
    );
    let mut recovery = Vec::new();
    for name in backends {
        let dir = tempfile::tempdir().unwrap();
        let mut o = options("hot-count", keys * 4, keys)
            .arg("hot", (keys / 100).to_string())
            .arg("rate", (keys * 4 / 5).to_string());
        o.state_backend = backend(name, dir.path());
        o.job_id = Some("hot".into());
        let o = with_checkpoints(o, dir.path(), Duration::from_secs(1));
        run_job(&component, &o, JobLink::unsteered()).expect("hot-count run");
        let job_dir = Storage::open(dir.path().join("chk").to_str().unwrap())
            .unwrap()
            .child("hot");
        let (complete, _) = list_checkpoints(&job_dir).unwrap();
        let mut seen: BTreeSet<String> = BTreeSet::new();
        let mut last_with_state = None;
        for id in complete {
            let m = read_metadata(&checkpoint_dir(&job_dir, id)).unwrap();
            if m.finished {
                continue;
            }
            let (mut state, mut uploaded) = (0, 0);
            for op in m.operators.values() {
                for s in &op.subtasks {
                    for f in s.file.iter() {
                        state += f.size;
                        uploaded += f.size;
                    }
                    if let Some(n) = &s.native {
                        for f in &n.shared {
                            state += f.size;
                            if seen.insert(f.path.clone()) {
                                uploaded += f.size;
                            }
                        }
                        for f in n.private.iter().chain([&n.timers]) {
                            state += f.size;
                            uploaded += f.size;
                        }
                    }
                }
            }
            println!(
                "{name:<10} {id:>5} {:>8} ms {:>14} {:>14}",
                m.duration_ms, state, uploaded
            );
            last_with_state = Some(id);
        }
        recovery.push((name, dir, last_with_state));
    }

    println!();
    println!("(g) recovery: start from the last checkpoint of (f) with state, same backend");
    for (name, dir, id) in recovery {
        let Some(id) = id else {
            println!("{name:<10} no checkpoint with state");
            continue;
        };
        let chk = dir.path().join("chk/hot").join(format!("chk-{id}"));
        let mut times = Vec::new();
        for _ in 0..3 {
            let mut o = options("hot-count", keys * 4, keys).arg("hot", (keys / 100).to_string());
            o.state_backend = backend(name, dir.path());
            o.from_savepoint = Some(Storage::open(chk.to_str().unwrap()).unwrap());
            let summary = run_job(&component, &o, JobLink::unsteered()).expect("recovery run");
            times.push(summary.startup.as_secs_f64());
        }
        println!(
            "{name:<10} checkpoint {id}: tasks running {:.0} ms after the start (median of 3)",
            median(times) * 1e3
        );
    }
}
