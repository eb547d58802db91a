//! The example jobs, run by the real `weir` binary, checked against expectations computed
//! here independently of weir, at parallelism 1 and 4.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use common::{guest, read_json_lines, run_ok, Rng};
use serde_json::{json, Value};

/// Runs an example; returns the summary `weir run` printed (on stderr).
fn run_example(name: &str, input: &Path, out: &Path, parallelism: u32, extra: &[&str]) -> String {
    let wasm = guest(name);
    let p = parallelism.to_string();
    let input = format!("input={}", input.display());
    let output = format!("output={}", out.display());
    let mut args = vec![
        "run",
        wasm.to_str().unwrap(),
        "--parallelism",
        &p,
        "--arg",
        &input,
        "--arg",
        &output,
    ];
    for e in extra {
        args.push("--arg");
        args.push(e);
    }
    String::from_utf8(run_ok(&args).stderr).unwrap()
}

/// (records in, records out) of operator `uid` in a `weir run` summary.
fn summary_row(summary: &str, uid: &str) -> (u64, u64) {
    let row = summary
        .lines()
        .find(|l| l.split_whitespace().next() == Some(uid))
        .unwrap_or_else(|| panic!("no row for {uid} in:\n{summary}"));
    let cols: Vec<u64> = row
        .split_whitespace()
        .rev()
        .take(2)
        .map(|c| c.parse().unwrap())
        .collect();
    (cols[1], cols[0])
}

fn sorted(mut v: Vec<Value>) -> Vec<Value> {
    v.sort_by_key(|a| a.to_string());
    v
}

// ---------------------------------------------------------------- word count

fn word_count_input(dir: &Path) -> (std::path::PathBuf, Vec<String>) {
    let vocabulary = [
        "Apple", "apple", "APPLE", "banana", "Straße", "ÉLAN", "élan", "x2", "2x", "naïve", "日本",
        "don't", "e-mail", "ok", "the", "The",
    ];
    let separators = [" ", "  ", ", ", ". ", "! ", "\t", " -- ", "? "];
    let mut rng = Rng(7);
    let mut text = String::new();
    for _ in 0..6_000 {
        let words = rng.below(12);
        for _ in 0..words {
            text.push_str(vocabulary[rng.below(vocabulary.len() as u64) as usize]);
            text.push_str(separators[rng.below(separators.len() as u64) as usize]);
        }
        text.push('\n');
    }
    let path = dir.join("words.txt");
    std::fs::write(&path, &text).unwrap();
    // Expected words, computed without weir: maximal alphanumeric runs, lowercased.
    let mut words = Vec::new();
    let mut current = String::new();
    for c in text.chars() {
        if c.is_alphanumeric() {
            current.push(c);
        } else if !current.is_empty() {
            words.push(std::mem::take(&mut current).to_lowercase());
        }
    }
    if !current.is_empty() {
        words.push(current.to_lowercase());
    }
    (path, words)
}

fn check_word_count(parallelism: u32) {
    let dir = tempfile::tempdir().unwrap();
    let (input, words) = word_count_input(dir.path());
    let out = dir.path().join("out");
    let summary = run_example("word_count", &input, &out, parallelism, &[]);
    let lines = std::fs::read_to_string(&input).unwrap().lines().count() as u64;
    let n = words.len() as u64;
    assert_eq!(summary_row(&summary, "lines"), (lines, lines));
    assert_eq!(summary_row(&summary, "split"), (lines, n));
    assert_eq!(summary_row(&summary, "count"), (n, n));
    assert_eq!(summary_row(&summary, "sink"), (n, 0));

    let mut counts: HashMap<&str, u64> = HashMap::new();
    let mut expected = Vec::new();
    for w in &words {
        let n = counts.entry(w).or_default();
        *n += 1;
        expected.push(json!({"word": w, "count": *n}));
    }
    let got = read_json_lines(&out);
    assert_eq!(got.len(), words.len());
    assert_eq!(sorted(got), sorted(expected));

    // Each word's updates come in order (one subtask, one file, per word).
    for file in std::fs::read_dir(&out).unwrap() {
        let mut last: HashMap<String, u64> = HashMap::new();
        for line in std::fs::read_to_string(file.unwrap().path())
            .unwrap()
            .lines()
        {
            let v: Value = serde_json::from_str(line).unwrap();
            let w = v["word"].as_str().unwrap().to_string();
            let c = v["count"].as_u64().unwrap();
            assert_eq!(
                last.insert(w.clone(), c).unwrap_or(0) + 1,
                c,
                "{w} out of order"
            );
        }
    }
}

#[test]
fn word_count_parallelism_1() {
    check_word_count(1);
}

#[test]
fn word_count_parallelism_4() {
    check_word_count(4);
}

#[test]
fn same_input_same_output() {
    let dir = tempfile::tempdir().unwrap();
    let (input, _) = word_count_input(dir.path());
    let read = |out: &Path| {
        let mut files = BTreeMap::new();
        for f in std::fs::read_dir(out).unwrap() {
            let f = f.unwrap().path();
            files.insert(
                f.file_name().unwrap().to_owned(),
                std::fs::read(&f).unwrap(),
            );
        }
        files
    };
    run_example("word_count", &input, &dir.path().join("a"), 3, &[]);
    run_example("word_count", &input, &dir.path().join("b"), 3, &[]);
    assert_eq!(read(&dir.path().join("a")), read(&dir.path().join("b")));
}

// ---------------------------------------------------------------- windowed sum

struct Event {
    key: String,
    value: i64,
    ts: i64,
}

fn windowed_sum_input(dir: &Path) -> (std::path::PathBuf, Vec<Event>) {
    let mut rng = Rng(42);
    let mut base = 1_700_000_000_000i64;
    let mut events = Vec::new();
    for _ in 0..20_000 {
        base += rng.below(120) as i64;
        // Mostly a little out of order; now and then very late.
        let delay = if rng.below(50) == 0 {
            rng.below(30_000) as i64
        } else {
            rng.below(3_000) as i64
        };
        events.push(Event {
            key: format!("key-{}", rng.below(17)),
            value: rng.below(1_000) as i64 - 300,
            ts: base - delay,
        });
    }
    let text: String = events
        .iter()
        .map(|e| {
            format!(
                "{{\"key\":\"{}\",\"value\":{},\"ts\":{}}}\n",
                e.key, e.value, e.ts
            )
        })
        .collect();
    let path = dir.join("events.jsonl");
    std::fs::write(&path, text).unwrap();
    (path, events)
}

/// The windowed-sum job's semantics, simulated: batches of 1,024 records, watermark
/// = max timestamp - 2,000 - 1 after each batch, 10 s windows that fire when the watermark
/// reaches their end - 1, are purged at end - 1 + lateness, and re-fire for records that
/// arrive in between.
fn expected_windows(events: &[Event], lateness: i64) -> (Vec<Value>, Vec<Value>) {
    const SIZE: i64 = 10_000;
    let mut wm = i64::MIN;
    let mut max_ts = i64::MIN;
    // (key, start) -> (count, sum, fired)
    let mut open: BTreeMap<(String, i64), (u64, i64, bool)> = BTreeMap::new();
    let (mut fired, mut late) = (Vec::new(), Vec::new());
    let result = |k: &str, start: i64, c: u64, s: i64| json!({"key": k, "window_start": start, "window_end": start + SIZE, "count": c, "sum": s});
    let advance =
        |wm: i64, open: &mut BTreeMap<(String, i64), (u64, i64, bool)>, fired: &mut Vec<Value>| {
            for ((k, start), (c, s, done)) in open.iter_mut() {
                if !*done && start + SIZE - 1 <= wm {
                    fired.push(result(k, *start, *c, *s));
                    *done = true;
                }
            }
            open.retain(|(_, start), _| start + SIZE - 1 + lateness > wm);
        };
    for chunk in events.chunks(1024) {
        for e in chunk {
            let start = e.ts.div_euclid(SIZE) * SIZE;
            if start + SIZE - 1 + lateness <= wm {
                late.push(json!({"key": e.key, "value": e.value, "ts": e.ts}));
                continue;
            }
            let w = open.entry((e.key.clone(), start)).or_insert((0, 0, false));
            w.0 += 1;
            w.1 += e.value;
            if start + SIZE - 1 <= wm {
                w.2 = true;
                fired.push(result(&e.key, start, w.0, w.1));
            }
        }
        max_ts = chunk.iter().map(|e| e.ts).fold(max_ts, i64::max);
        let next = max_ts - 2_000 - 1;
        if next > wm {
            wm = next;
            advance(wm, &mut open, &mut fired);
        }
    }
    advance(i64::MAX, &mut open, &mut fired);
    (fired, late)
}

fn check_windowed_sum(parallelism: u32, lateness: i64) {
    let dir = tempfile::tempdir().unwrap();
    let (input, events) = windowed_sum_input(dir.path());
    let out = dir.path().join("out");
    let lateness_arg = format!("allowed-lateness-ms={lateness}");
    run_example("windowed_sum", &input, &out, parallelism, &[&lateness_arg]);
    let (windows, late) = expected_windows(&events, lateness);
    assert!(
        late.len() > 20,
        "the input should have late events ({})",
        late.len()
    );
    let got_windows = read_json_lines(&out.join("windows"));
    let got_late = read_json_lines(&out.join("late"));
    assert_eq!(got_windows.len(), windows.len());
    assert_eq!(sorted(got_windows), sorted(windows));
    assert_eq!(sorted(got_late), sorted(late));
}

#[test]
fn windowed_sum_parallelism_1() {
    check_windowed_sum(1, 0);
}

#[test]
fn windowed_sum_parallelism_4() {
    check_windowed_sum(4, 0);
}

#[test]
fn windowed_sum_with_allowed_lateness() {
    check_windowed_sum(2, 5_000);
}

// ---------------------------------------------------------------- fraud detection

struct Txn {
    account: String,
    amount: f64,
    ts: i64,
}

fn fraud_input(dir: &Path) -> (std::path::PathBuf, Vec<Txn>) {
    let mut rng = Rng(99);
    let mut base = 1_700_000_000_000i64;
    let mut last: HashMap<String, i64> = HashMap::new();
    let mut txns = Vec::new();
    for _ in 0..20_000 {
        base += rng.below(2_500) as i64;
        let account = format!("acct-{}", rng.below(40));
        // Each account in time order; accounts interleaved up to 4 s out of order.
        let ts =
            (base - rng.below(4_000) as i64).max(last.get(&account).map_or(i64::MIN, |t| t + 1));
        last.insert(account.clone(), ts);
        let cents = match rng.below(10) {
            0 | 1 => 1 + rng.below(99),
            2 | 3 => 50_001 + rng.below(200_000),
            _ => 100 + rng.below(49_900),
        };
        txns.push(Txn {
            account,
            amount: cents as f64 / 100.0,
            ts,
        });
    }
    let text: String = txns
        .iter()
        .map(|t| {
            format!(
                "{{\"account\":\"{}\",\"amount\":{},\"ts\":{}}}\n",
                t.account, t.amount, t.ts
            )
        })
        .collect();
    let path = dir.join("transactions.jsonl");
    std::fs::write(&path, text).unwrap();
    (path, txns)
}

fn check_fraud(parallelism: u32) {
    let dir = tempfile::tempdir().unwrap();
    let (input, txns) = fraud_input(dir.path());
    let out = dir.path().join("out");
    run_example("fraud_detection", &input, &out, parallelism, &[]);
    let mut previous: HashMap<&str, &Txn> = HashMap::new();
    let mut expected = Vec::new();
    for t in &txns {
        if let Some(p) = previous.insert(&t.account, t) {
            if p.amount < 1.0 && t.amount > 500.0 && t.ts - p.ts <= 60_000 {
                expected.push(json!({"account": t.account, "ts": t.ts, "amount": t.amount}));
            }
        }
    }
    assert!(
        expected.len() > 100,
        "the input should raise alerts ({})",
        expected.len()
    );
    let got = read_json_lines(&out);
    assert_eq!(sorted(got), sorted(expected));
}

#[test]
fn fraud_detection_parallelism_1() {
    check_fraud(1);
}

#[test]
fn fraud_detection_parallelism_4() {
    check_fraud(4);
}

// ---------------------------------------------------------------- a source written in the guest

fn check_guest_source(parallelism: u32) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let wasm = guest("counting_source");
    let p = parallelism.to_string();
    let output = format!("output={}", out.display());
    run_ok(&[
        "run",
        wasm.to_str().unwrap(),
        "--parallelism",
        &p,
        "--arg",
        "count=50000",
        "--arg",
        &output,
    ]);
    let mut sums: BTreeMap<(u64, i64), u64> = BTreeMap::new();
    for n in 0..50_000u64 {
        *sums.entry((n % 7, (n as i64 / 100) * 100)).or_default() += n;
    }
    let expected: Vec<Value> = sums
        .into_iter()
        .map(|((key, start), sum)| json!({"key": key, "start": start, "sum": sum}))
        .collect();
    assert_eq!(sorted(read_json_lines(&out)), sorted(expected));
}

#[test]
fn guest_source_parallelism_1() {
    check_guest_source(1);
}

#[test]
fn guest_source_parallelism_3() {
    check_guest_source(3);
}

// ---------------------------------------------------------------- `weir new`

#[test]
fn a_new_job_builds_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("my-job");
    let out = common::weir(&["new", job.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let wasm = common::build_guest(&job.join("Cargo.toml")).join("my_job.wasm");
    std::fs::write(dir.path().join("in.txt"), "b a b\nB!\n").unwrap();
    let input = format!("input={}", dir.path().join("in.txt").display());
    let output = format!("output={}", dir.path().join("out").display());
    run_ok(&[
        "run",
        wasm.to_str().unwrap(),
        "--arg",
        &input,
        "--arg",
        &output,
    ]);
    let got = read_json_lines(&dir.path().join("out"));
    assert_eq!(
        sorted(got),
        sorted(vec![
            json!(["b", 1]),
            json!(["a", 1]),
            json!(["b", 2]),
            json!(["b", 3])
        ])
    );
}

// ---------------------------------------------------------------- print sink

#[test]
fn the_print_sink_writes_json_lines_to_stdout() {
    let wasm = guest("faulty");
    let out = run_ok(&["run", wasm.to_str().unwrap(), "--arg", "mode=print"]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let mut seqs: Vec<u64> = stdout
        .lines()
        .map(|l| serde_json::from_str::<(u64, u64)>(l).unwrap().0)
        .collect();
    seqs.sort();
    assert_eq!(seqs, vec![0, 1, 2, 3, 4]);
}
