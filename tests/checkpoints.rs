//! Checkpoints, recovery and savepoints, end to end: the real `weir` binary, real
//! components, real faults (a guest panic at a random record, `kill -9` at a random moment),
//! checkpoints on a local directory and on an S3-compatible server (moto, installed by
//! scripts/setup.sh) that the tests start on 127.0.0.1 and that stops with them.
//!
//! The committed output of every faulty run must equal the fault-free run's exactly (no
//! loss, no duplicate), and the fault-free output is itself checked: each key's running
//! counts are exactly 1..n, and the window counts add up to the input.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{guest, read_json_lines, weir, Rng};
use serde_json::Value;

const COUNT: u64 = 20_000;

/// Arguments of the durable test job over datagen.
fn datagen_job(out: &Path, rate: u64, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "run".into(),
        guest("durable").display().to_string(),
        "--parallelism".into(),
        "2".into(),
        "--arg".into(),
        format!("output={}", out.display()),
        "--arg".into(),
        format!("count={COUNT}"),
        "--arg".into(),
        format!("rate={rate}"),
    ];
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn run(args: &[String]) -> Output {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    weir(&args)
}

fn run_ok(args: &[String]) -> Output {
    let out = run(args);
    assert!(
        out.status.success(),
        "weir {args:?} failed with {}:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The committed lines of a sink directory, sorted.
fn committed(dir: &Path) -> Vec<String> {
    let mut lines: Vec<String> = read_json_lines(dir).iter().map(Value::to_string).collect();
    lines.sort();
    lines
}

/// Checks running counts on their own: per key exactly 1..n, and n summing to `total`.
fn check_counts(dir: &Path, total: u64) -> BTreeMap<String, u64> {
    let mut per_key: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for v in read_json_lines(dir) {
        per_key
            .entry(v["key"].as_str().unwrap().to_string())
            .or_default()
            .push(v["count"].as_u64().unwrap());
    }
    let mut sum = 0;
    let mut last = BTreeMap::new();
    for (k, mut counts) in per_key {
        counts.sort_unstable();
        let n = counts.len() as u64;
        assert_eq!(
            counts,
            (1..=n).collect::<Vec<_>>(),
            "key {k}: running counts are not exactly 1..{n}"
        );
        sum += n;
        last.insert(k, n);
    }
    assert_eq!(sum, total, "running counts do not add up to the input");
    last
}

fn check_windows(dir: &Path, total: u64) {
    let mut seen = std::collections::BTreeSet::new();
    let mut sum = 0;
    for v in read_json_lines(dir) {
        assert!(
            seen.insert((v["key"].to_string(), v["start"].as_i64().unwrap())),
            "window fired twice: {v}"
        );
        sum += v["count"].as_u64().unwrap();
    }
    assert_eq!(sum, total, "window counts do not add up to the input");
}

/// The fault-free run of the datagen job, checked on its own.
/// The committed output of the fault-free run of the datagen job.
struct Baseline {
    counts: Vec<String>,
    windows: Vec<String>,
}

impl Baseline {
    /// Runs the datagen job without faults and checks its output on its own.
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        run_ok(&datagen_job(&out, 0, &[]));
        check_counts(&out.join("counts"), COUNT);
        check_windows(&out.join("windows"), COUNT);
        Baseline {
            counts: committed(&out.join("counts")),
            windows: committed(&out.join("windows")),
        }
    }

    /// Asserts that the committed output under `out` is exactly the fault-free run's.
    fn assert_same(&self, out: &Path, what: &str) {
        assert_eq!(
            committed(&out.join("counts")),
            self.counts,
            "{what} changed the committed counts"
        );
        assert_eq!(
            committed(&out.join("windows")),
            self.windows,
            "{what} changed the committed windows"
        );
    }
}

/// Checkpoint storage for a test: a local directory, or a bucket prefix on the test S3
/// server.
struct Store {
    url: String,
    _dir: Option<tempfile::TempDir>,
}

fn local_store() -> Store {
    let dir = tempfile::tempdir().unwrap();
    Store {
        url: dir.path().join("checkpoints").display().to_string(),
        _dir: Some(dir),
    }
}

fn spawn(args: &[String]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .env("WEIR_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start weir")
}

fn trap_runs(store: impl Fn() -> Store, runs: usize, seed: u64) {
    let base = Baseline::new();
    let mut rng = Rng(seed);
    for i in 0..runs {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let at = rng.below(COUNT);
        let store = store();
        let args = datagen_job(
            &out,
            20_000,
            &[
                "--arg",
                &format!("fail-at={at}"),
                "--checkpoint-dir",
                &store.url,
                "--checkpoint-interval",
                "50ms",
            ],
        );
        let mut args = args;
        args.extend(backend(i, dir.path()));
        let o = run_ok(&args);
        assert!(
            stderr(&o).contains("restarts: 1"),
            "run {i} (fault at {at}) did not restart once:\n{}",
            stderr(&o)
        );
        base.assert_same(&out, &format!("run {i}: a fault at record {at}"));
    }
}

fn kill_runs(store: impl Fn() -> Store, runs: usize, seed: u64) {
    let base = Baseline::new();
    let mut rng = Rng(seed);
    let mut restored = 0;
    for i in 0..runs {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let store = store();
        let args = datagen_job(
            &out,
            5_000,
            &[
                "--checkpoint-dir",
                &store.url,
                "--checkpoint-interval",
                "50ms",
            ],
        );
        let mut args = args;
        args.extend(backend(i / 2, dir.path()));
        let mut child = spawn(&args);
        let started = Instant::now();
        if i % 2 == 1 {
            // Every other run dies after its first checkpoint, the rest at any moment.
            while !has_checkpoint(&store) && started.elapsed() < Duration::from_secs(20) {
                std::thread::sleep(Duration::from_millis(50));
            }
            std::thread::sleep(Duration::from_millis(rng.below(600)));
        } else {
            std::thread::sleep(Duration::from_millis(150 + rng.below(1_500)));
        }
        let wait = started.elapsed();
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        if has_checkpoint(&store) {
            restored += 1;
        }
        let mut resume = args.clone();
        resume.push("--resume".into());
        run_ok(&resume);
        base.assert_same(&out, &format!("run {i}: kill -9 after {wait:?}"));
    }
    assert!(
        restored * 2 >= runs,
        "only {restored} of {runs} runs had a checkpoint to resume from"
    );
}

/// Every other run on RocksDB (its working files under `dir`).
fn backend(run: usize, dir: &Path) -> Vec<String> {
    if run.is_multiple_of(2) {
        return vec![];
    }
    vec![
        "--state-backend".into(),
        "rocksdb".into(),
        "--state-dir".into(),
        dir.join("state").display().to_string(),
    ]
}

/// Whether a completed checkpoint of the durable job exists in `store`.
fn has_checkpoint(store: &Store) -> bool {
    let out = run(&[
        "checkpoints".into(),
        store.url.clone(),
        "--job-id".into(),
        "durable".into(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.starts_with("chk-"))
}

#[test]
fn guest_traps_at_random_records_lose_and_duplicate_nothing() {
    trap_runs(local_store, 20, 7);
}

#[test]
fn kill_9_at_random_moments_then_resume_loses_and_duplicates_nothing() {
    kill_runs(local_store, 8, 11);
}

/// Input files of `<key> <seq>` lines for the file-source job.
fn key_files(dir: &Path, files: usize, lines: usize) -> BTreeMap<String, u64> {
    std::fs::create_dir_all(dir).unwrap();
    let mut rng = Rng(5);
    let mut per_key = BTreeMap::new();
    let mut seq = 0;
    for f in 0..files {
        let mut text = String::new();
        for _ in 0..lines {
            let key = format!("k{}", rng.below(40));
            *per_key.entry(key.clone()).or_insert(0) += 1;
            text.push_str(&format!("{key} {seq}\n"));
            seq += 1;
        }
        std::fs::write(dir.join(format!("in-{f:02}.txt")), text).unwrap();
    }
    per_key
}

fn file_job(input: &Path, out: &Path, p: u32, rate: u64, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "run".into(),
        guest("durable").display().to_string(),
        "--parallelism".into(),
        p.to_string(),
        "--arg".into(),
        "source=file".into(),
        "--arg".into(),
        format!("input={}", input.display()),
        "--arg".into(),
        format!("output={}", out.display()),
        "--arg".into(),
        format!("rate={rate}"),
    ];
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

/// Starts the job of `args` and waits until it writes a file of counts that was not there
/// before, so that its signal handlers are in place and it is mid-stream.
fn spawn_mid_stream(args: &[String]) -> Child {
    let out = args
        .iter()
        .find_map(|a| a.strip_prefix("output="))
        .map(|o| PathBuf::from(o).join("counts"))
        .expect("an output argument");
    let names = || -> std::collections::BTreeSet<String> {
        std::fs::read_dir(&out)
            .map(|d| {
                d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let before = names();
    let mut child = spawn(args);
    let started = Instant::now();
    while names().difference(&before).next().is_none() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the job ended before writing anything"
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the job never started writing"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// Runs until `after` past its first output, then stops it with SIGINT: returns the
/// savepoint's URL.
fn stop_with_savepoint(args: &[String], after: Duration) -> String {
    let child = spawn_mid_stream(args);
    std::thread::sleep(after);
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stop with savepoint failed ({}):\n{}",
        out.status,
        stderr(&out)
    );
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("savepoint: "))
        .unwrap_or_else(|| panic!("no savepoint reported:\n{stdout}\n{}", stderr(&out)))
        .to_string()
}

/// Lines in the committed files (not starting with `.`) of a sink directory.
fn visible_lines(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .map(|p| std::fs::read_to_string(p).unwrap().lines().count() as u64)
        .sum()
}

fn savepoint_round_trip(store: &Store) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    let expected = key_files(&input, 8, 1_500);
    let total: u64 = expected.values().sum();
    let out = dir.path().join("out");
    let sp_dir = &store.url;
    // Parallelism 2, stopped mid-stream with a savepoint.
    let sp1 = stop_with_savepoint(
        &file_job(&input, &out, 2, 2_000, &["--savepoint-dir", sp_dir]),
        Duration::from_millis(600),
    );
    let partial = visible_lines(&out.join("counts"));
    assert!(
        partial > 0 && partial < total,
        "the first run should stop mid-stream ({partial} of {total})"
    );
    // Parallelism 4 on RocksDB from it, stopped again.
    let state_dir = dir.path().join("state").display().to_string();
    let sp2 = stop_with_savepoint(
        &file_job(
            &input,
            &out,
            4,
            1_000,
            &[
                "--savepoint-dir",
                sp_dir,
                "--from-savepoint",
                &sp1,
                "--state-backend",
                "rocksdb",
                "--state-dir",
                &state_dir,
            ],
        ),
        Duration::from_millis(400),
    );
    assert_ne!(sp1, sp2);
    // Parallelism 1 back on the heap from the second savepoint, to the end.
    run_ok(&file_job(&input, &out, 1, 0, &["--from-savepoint", &sp2]));
    let last = check_counts(&out.join("counts"), total);
    assert_eq!(last, expected, "final counts per key");
}

#[test]
fn savepoints_restore_memory_to_rocksdb_to_memory_at_parallelism_2_then_4_then_1() {
    savepoint_round_trip(&local_store());
}

/// A savepoint with keyed state files, taken mid-stream.
fn savepoint_with_state(dir: &Path) -> (PathBuf, String) {
    let input = dir.join("in");
    key_files(&input, 4, 2_000);
    let sp = stop_with_savepoint(
        &file_job(
            &input,
            &dir.join("out"),
            2,
            2_000,
            &["--savepoint-dir", &dir.join("sp").display().to_string()],
        ),
        Duration::from_millis(300),
    );
    (input, sp)
}

#[test]
fn corrupted_or_missing_checkpoint_files_are_rejected_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let (input, sp) = savepoint_with_state(dir.path());
    let sp_path = PathBuf::from(sp.strip_prefix("file://").unwrap());
    let state = sp_path.join("count/0.state");
    assert!(state.exists(), "no state file in {}", sp_path.display());
    let restore = |out: &str| {
        run(&file_job(
            &input,
            &dir.path().join(out),
            2,
            0,
            &["--from-savepoint", &sp],
        ))
    };

    // One flipped byte in a state file.
    let original = std::fs::read(&state).unwrap();
    let mut bad = original.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x40;
    std::fs::write(&state, &bad).unwrap();
    let o = restore("out1");
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("corrupt checkpoint file") && e.contains("count/0.state"),
        "{e}"
    );
    assert!(!e.contains("panicked"), "{e}");
    // Truncated.
    std::fs::write(&state, &original[..original.len() - 3]).unwrap();
    let e = stderr(&restore("out2"));
    assert!(e.contains("count/0.state"), "{e}");
    // Missing.
    std::fs::remove_file(&state).unwrap();
    let e = stderr(&restore("out3"));
    assert!(
        e.contains("count/0.state") && e.contains("not found"),
        "{e}"
    );
    std::fs::write(&state, &original).unwrap();
    // Damaged metadata.
    let meta = sp_path.join("_metadata");
    let m = std::fs::read(&meta).unwrap();
    std::fs::write(&meta, &m[..m.len() / 2]).unwrap();
    let e = stderr(&restore("out4"));
    assert!(
        e.contains("corrupt checkpoint file") && e.contains("_metadata"),
        "{e}"
    );
    // Nothing was committed by the refused runs.
    for out in ["out1", "out2", "out3", "out4"] {
        let counts = dir.path().join(out).join("counts");
        assert!(
            !counts.exists() || visible_lines(&counts) == 0,
            "a refused restore committed output"
        );
    }
    // Intact again: it restores.
    std::fs::write(&meta, &m).unwrap();
    run_ok(&file_job(
        &input,
        &dir.path().join("out5"),
        2,
        0,
        &["--from-savepoint", &sp],
    ));
}

#[test]
fn state_of_a_removed_operator_needs_allow_non_restored_state() {
    let dir = tempfile::tempdir().unwrap();
    let (_input, sp) = savepoint_with_state(dir.path());
    // The datagen variant of the job has no 'lines'/'parse' operators: the file source's
    // positions would be dropped.
    let out = dir.path().join("other");
    let o = run(&datagen_job(&out, 0, &["--from-savepoint", &sp]));
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("'lines'") && e.contains("--allow-non-restored-state"),
        "{e}"
    );
    run_ok(&datagen_job(
        &out,
        0,
        &["--from-savepoint", &sp, "--allow-non-restored-state"],
    ));
}

#[test]
fn resume_without_a_checkpoint_starts_fresh() {
    let base = Baseline::new();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let store = local_store();
    run_ok(&datagen_job(
        &out,
        0,
        &["--checkpoint-dir", &store.url, "--resume"],
    ));
    assert_eq!(committed(&out.join("counts")), base.counts);
}

#[test]
fn at_least_once_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let store = local_store();
    run_ok(&datagen_job(
        &out,
        20_000,
        &[
            "--arg",
            "fail-at=12345",
            "--checkpoint-dir",
            &store.url,
            "--checkpoint-interval",
            "50ms",
            "--checkpoint-mode",
            "at-least-once",
        ],
    ));
    // Every record reached the windows at least once.
    let windows: u64 = read_json_lines(&out.join("windows"))
        .iter()
        .map(|v| v["count"].as_u64().unwrap())
        .sum();
    assert!(windows >= COUNT, "{windows} < {COUNT}");
}

#[test]
fn checkpoint_flags_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = run(&datagen_job(&out, 0, &["--checkpoint-interval", "1s"]));
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--checkpoint-dir"), "{}", stderr(&o));
    let o = run(&datagen_job(
        &out,
        0,
        &["--checkpoint-dir", "x", "--checkpoint-interval", "soon"],
    ));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("soon"), "{}", stderr(&o));
    let missing = dir.path().join("no-such-savepoint");
    let o = run(&datagen_job(
        &out,
        0,
        &["--from-savepoint", &missing.display().to_string()],
    ));
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("_metadata") && stderr(&o).contains("not found"),
        "{}",
        stderr(&o)
    );
    let o = run(&[
        "run".into(),
        guest("counting_source").display().to_string(),
        "--arg".into(),
        format!("output={}", out.display()),
        "--checkpoint-dir".into(),
        dir.path().display().to_string(),
        "--checkpoint-interval".into(),
        "1s".into(),
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("written in the guest"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_finished_job_resumes_to_nothing_new() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let store = local_store();
    let args = datagen_job(&out, 0, &["--checkpoint-dir", &store.url]);
    run_ok(&args);
    let first = committed(&out.join("counts"));
    let mut resume = args.clone();
    resume.push("--resume".into());
    let started = Instant::now();
    run_ok(&resume);
    assert_eq!(committed(&out.join("counts")), first);
    assert!(started.elapsed() < Duration::from_secs(30));
}

/// The S3-compatible server of this test binary: started once, on a free port of
/// 127.0.0.1, and stopped by its watchdog when the test process exits. `weir` finds it
/// through the `AWS_*` variables set here (children inherit them).
fn s3_port() -> u16 {
    static PORT: OnceLock<u16> = OnceLock::new();
    *PORT.get_or_init(|| {
        let server = tools_dir().join("moto/bin/moto_server");
        assert!(
            server.exists(),
            "{} is missing: run scripts/setup.sh",
            server.display()
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let script = format!(
            "'{}' -H 127.0.0.1 -p {port} >/dev/null 2>&1 & s=$!; \
             while kill -0 {} 2>/dev/null; do sleep 0.5; done; kill $s",
            server.display(),
            std::process::id()
        );
        let mut watchdog = Command::new("bash")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .spawn()
            .expect("cannot start the S3 test server");
        std::thread::spawn(move || watchdog.wait());
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the S3 test server did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        http(port, "PUT", "/weir-test", b"");
        for (k, v) in [
            ("AWS_ENDPOINT", format!("http://127.0.0.1:{port}")),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_REGION", "us-east-1".into()),
        ] {
            std::env::set_var(k, v);
        }
        port
    })
}

/// Where scripts/setup.sh installs test tools.
fn tools_dir() -> PathBuf {
    std::env::var("WEIR_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/weir-tools"))
}

/// One plain HTTP request to the S3 test server (moto takes unsigned requests).
fn http(port: u16, method: &str, path: &str, body: &[u8]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    assert!(
        response.starts_with("HTTP/1.1 2") || response.starts_with("HTTP/1.0 2"),
        "{method} {path}: {response}"
    );
    response
}

fn s3_store() -> Store {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    s3_port();
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Store {
        url: format!("s3://weir-test/{}-{n}", std::process::id()),
        _dir: None,
    }
}

#[test]
fn on_s3_guest_traps_lose_and_duplicate_nothing() {
    trap_runs(s3_store, 6, 13);
}

#[test]
fn on_s3_kill_9_then_resume_loses_and_duplicates_nothing() {
    kill_runs(s3_store, 3, 17);
}

#[test]
fn on_s3_savepoints_restore_across_backends_and_parallelism() {
    savepoint_round_trip(&s3_store());
}

#[test]
fn on_s3_a_corrupted_state_file_is_rejected_naming_it() {
    let port = s3_port();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    key_files(&input, 4, 2_000);
    let store = s3_store();
    let sp = stop_with_savepoint(
        &file_job(
            &input,
            &dir.path().join("out"),
            2,
            2_000,
            &["--savepoint-dir", &store.url],
        ),
        Duration::from_millis(300),
    );
    let key = sp.strip_prefix("s3://").unwrap();
    // Overwrite the object through boto3, which comes with moto.
    let (bucket, object) = key.split_once('/').unwrap();
    let py = format!(
        "import boto3; boto3.client('s3', endpoint_url='http://127.0.0.1:{port}', \
         aws_access_key_id='test', aws_secret_access_key='test', region_name='us-east-1')\
         .put_object(Bucket='{bucket}', Key='{object}/count/0.state', Body=b'not a state file')"
    );
    let status = Command::new(tools_dir().join("moto/bin/python"))
        .args(["-c", &py])
        .status()
        .unwrap();
    assert!(status.success());
    let o = run(&file_job(
        &input,
        &dir.path().join("out2"),
        2,
        0,
        &["--from-savepoint", &sp],
    ));
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("corrupt checkpoint file") && e.contains(&format!("{sp}/count/0.state")),
        "{e}"
    );
}

/// The shared files each completed checkpoint of the durable job references.
fn shared_refs(job_dir: &Path) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(job_dir).unwrap() {
        let path = e.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let Ok(text) = std::fs::read_to_string(path.join("_metadata")) else {
            continue;
        };
        let m: Value = serde_json::from_str(text.split_once('\n').unwrap().1).unwrap();
        let mut files = Vec::new();
        for op in m["operators"].as_object().unwrap().values() {
            for s in op["subtasks"].as_array().unwrap() {
                for f in s["native"]["shared"].as_array().into_iter().flatten() {
                    files.push(f["path"].as_str().unwrap().to_string());
                }
            }
        }
        out.insert(name, files);
    }
    out
}

fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn rocksdb_checkpoints_are_incremental_and_restore_anywhere() {
    let base = Baseline::new();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let store = local_store();
    let state = dir.path().join("state").display().to_string();
    let mut args = datagen_job(
        &out,
        5_000,
        &[
            "--checkpoint-dir",
            &store.url,
            "--checkpoint-interval",
            "100ms",
            "--retained-checkpoints",
            "3",
            "--state-backend",
            "rocksdb",
            "--state-dir",
            &state,
        ],
    );
    let mut child = spawn(&args);
    std::thread::sleep(Duration::from_millis(1_500));
    child.kill().unwrap();
    child.wait().unwrap();
    let job_dir = PathBuf::from(&store.url).join("durable");
    let refs = shared_refs(&job_dir);
    assert!(refs.len() >= 2, "retained checkpoints: {refs:?}");
    // Later checkpoints reference files an earlier one uploaded (incremental).
    let mut by_file: BTreeMap<&String, usize> = BTreeMap::new();
    for files in refs.values() {
        for f in files {
            *by_file.entry(f).or_default() += 1;
        }
    }
    assert!(
        by_file.values().any(|&n| n >= 2),
        "no shared file is referenced twice: {refs:?}"
    );
    for f in by_file.keys() {
        assert!(job_dir.join("shared").join(f).exists(), "{f} is missing");
    }

    // A retained incremental checkpoint restores into the heap backend.
    let latest = refs.keys().last().unwrap().clone();
    let other = dir.path().join("other");
    run_ok(&datagen_job(
        &other,
        0,
        &[
            "--from-savepoint",
            &job_dir.join(&latest).display().to_string(),
        ],
    ));

    // Resuming on RocksDB opens the files as the database; at the end no shared file is
    // left that no retained checkpoint references.
    args.push("--resume".into());
    run_ok(&args);
    base.assert_same(&out, "the run");
    let referenced: Vec<String> = shared_refs(&job_dir).into_values().flatten().collect();
    for f in files_under(&job_dir.join("shared")) {
        assert!(
            referenced.contains(&f),
            "{f} is referenced by no checkpoint"
        );
    }
}

#[test]
fn sigusr1_takes_a_savepoint_and_the_job_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    let expected = key_files(&input, 4, 1_500);
    let total: u64 = expected.values().sum();
    let out = dir.path().join("out");
    let sp_dir = dir.path().join("sp").display().to_string();
    let args = file_job(&input, &out, 2, 2_000, &["--savepoint-dir", &sp_dir]);
    let child = spawn_mid_stream(&args);
    std::thread::sleep(Duration::from_millis(300));
    let status = Command::new("kill")
        .args(["-USR1", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let e = stderr(&o);
    let sp = e
        .lines()
        .find_map(|l| l.strip_prefix("savepoint taken: "))
        .unwrap_or_else(|| panic!("no savepoint reported:\n{e}"))
        .to_string();
    // The job itself went on to the end, exactly once.
    assert_eq!(check_counts(&out.join("counts"), total), expected);
    // The savepoint restores: the counts go on from where it was taken.
    let out2 = dir.path().join("out2");
    run_ok(&file_job(&input, &out2, 3, 0, &["--from-savepoint", &sp]));
    let mut last: BTreeMap<String, u64> = BTreeMap::new();
    let mut rows = 0;
    for v in read_json_lines(&out2.join("counts")) {
        let n = last.entry(v["key"].as_str().unwrap().into()).or_default();
        *n = (*n).max(v["count"].as_u64().unwrap());
        rows += 1;
    }
    assert!(
        rows > 0 && rows < total,
        "{rows} of {total} after the savepoint"
    );
    for (k, n) in last {
        assert_eq!(n, expected[&k], "key {k}");
    }
}

/// Counts of the durable job with expiring state over one key: `rate` records per second.
fn ttl_counts(dir: &Path, rate: u64, extra: &[&str]) -> Vec<u64> {
    let out = dir.join(format!("out-{rate}-{}", extra.len()));
    let mut args: Vec<String> = vec![
        "run".into(),
        guest("durable").display().to_string(),
        "--arg".into(),
        format!("output={}", out.display()),
        "--arg".into(),
        "count=5".into(),
        "--arg".into(),
        "keys=1".into(),
        "--arg".into(),
        format!("rate={rate}"),
        "--arg".into(),
        "ttl=true".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    run_ok(&args);
    let mut counts: Vec<u64> = read_json_lines(&out.join("counts"))
        .iter()
        .map(|v| v["count"].as_u64().unwrap())
        .collect();
    counts.sort_unstable();
    counts
}

#[test]
fn state_with_a_ttl_expires_on_both_backends() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state").display().to_string();
    let rocksdb = ["--state-backend", "rocksdb", "--state-dir", &state];
    for extra in [&[][..], &rocksdb[..]] {
        // Records 500 ms apart, state living 300 ms: every record finds its key's count gone.
        assert_eq!(
            ttl_counts(dir.path(), 2, extra),
            [1, 1, 1, 1, 1],
            "{extra:?}"
        );
        // All at once: the state lives.
        assert_eq!(
            ttl_counts(dir.path(), 0, extra),
            [1, 2, 3, 4, 5],
            "{extra:?}"
        );
    }
}

#[test]
fn a_savepoint_the_job_goes_on_after_commits_nothing_a_restart_would_replay() {
    let base = Baseline::new();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let store = local_store();
    let sp_dir = dir.path().join("sp").display().to_string();
    // Checkpoints every second, a savepoint in between, then a fault: the restart goes back
    // to the checkpoint before the savepoint.
    let args = datagen_job(
        &out,
        4_000,
        &[
            "--arg",
            "fail-at=13000",
            "--checkpoint-dir",
            &store.url,
            "--checkpoint-interval",
            "1s",
            "--savepoint-dir",
            &sp_dir,
        ],
    );
    let child = spawn_mid_stream(&args);
    std::thread::sleep(Duration::from_millis(1_100));
    Command::new("kill")
        .args(["-USR1", &child.id().to_string()])
        .status()
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("restarts: 1"), "{}", stderr(&o));
    base.assert_same(&out, "the run");
}

#[test]
fn a_drained_savepoint_restores_with_event_time_going_on() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let sp_dir = dir.path().join("sp").display().to_string();
    let sp = stop_with_savepoint(
        &datagen_job(&out, 5_000, &["--savepoint-dir", &sp_dir, "--drain"]),
        Duration::from_millis(400),
    );
    let before = visible_lines(&out.join("counts"));
    assert!(before > 0 && before < COUNT, "{before}");
    // Drained: every window fired, so the windows account for every record read so far.
    let fired: u64 = read_json_lines(&out.join("windows"))
        .iter()
        .map(|v| v["count"].as_u64().unwrap())
        .sum();
    assert_eq!(fired, before);
    // Restored, windows fire for the rest of the input (event time did not stay at +inf).
    let out2 = dir.path().join("out2");
    run_ok(&datagen_job(&out2, 0, &["--from-savepoint", &sp]));
    let after = visible_lines(&out2.join("counts"));
    assert_eq!(before + after, COUNT);
    let fired: u64 = read_json_lines(&out2.join("windows"))
        .iter()
        .map(|v| v["count"].as_u64().unwrap())
        .sum();
    assert_eq!(
        fired, after,
        "records after the savepoint were dropped as late"
    );
}

#[test]
fn a_restart_after_one_source_subtask_finished_restores_the_others() {
    // Subtask 1 of the source emits record 1 and finishes; subtask 0 emits 0, then 2 a
    // second later, which traps once: the restart restores subtask 1 as finished and
    // subtask 0 from its position.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let store = local_store();
    let o = run_ok(&[
        "run".into(),
        guest("durable").display().to_string(),
        "--parallelism".into(),
        "2".into(),
        "--arg".into(),
        format!("output={}", out.display()),
        "--arg".into(),
        "count=3".into(),
        "--arg".into(),
        "keys=1".into(),
        "--arg".into(),
        "rate=1".into(),
        "--arg".into(),
        "fail-at=2".into(),
        "--checkpoint-dir".into(),
        store.url.clone(),
        "--checkpoint-interval".into(),
        "100ms".into(),
    ]);
    assert!(stderr(&o).contains("restarts: 1"), "{}", stderr(&o));
    check_counts(&out.join("counts"), 3);
}

/// RocksDB's working files vanish while the job runs (a failed or wiped local disk): the
/// checkpoint that cannot copy them fails with the storage's error, the job restarts from
/// its last checkpoint on a new database, and the output is exact. Nothing panics.
#[test]
fn losing_rocksdbs_local_files_restarts_from_the_last_checkpoint() {
    let base = Baseline::new();
    let dir = tempfile::tempdir().unwrap();
    let (out, state) = (dir.path().join("out"), dir.path().join("state"));
    let store = local_store();
    let args = datagen_job(
        &out,
        5_000,
        &[
            "--checkpoint-dir",
            &store.url,
            "--checkpoint-interval",
            "100ms",
            "--state-backend",
            "rocksdb",
            "--state-dir",
            &state.display().to_string(),
        ],
    );
    let child = spawn_mid_stream(&args);
    std::thread::sleep(Duration::from_millis(500));
    // Moved away at once (RocksDB may be writing into it: a removal could race with it).
    std::fs::rename(&state, dir.path().join("gone")).unwrap();
    let o = child.wait_with_output().unwrap();
    let e = stderr(&o);
    assert!(o.status.success(), "{e}");
    assert!(!e.contains("panicked"), "{e}");
    // The checkpoint fails where the missing files are first touched (copying the
    // database, or reading its files to upload them).
    assert!(
        e.contains("restarting the job") && e.contains("checkpointing failed: checkpoint"),
        "{e}"
    );
    base.assert_same(&out, "losing RocksDB's files");
}
