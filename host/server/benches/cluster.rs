//! The session cluster, measured through its REST API against a real `weir serve`:
//!
//!   (h) upload-to-RUNNING latency of a small job: the first (the component compiles) and
//!       the median of later ones (the compiled component is cached by digest)
//!   (i) 1,000 concurrent idle jobs: the server's resident memory
//!   (j) upload, run and cancel the same job 1,000 times: resident memory after the first
//!       100 and after all 1,000 (a leak shows as growth)
//!   (k) a well-behaved job's throughput alone and beside hostile jobs of another tenant
//!       (two guests that loop until the call deadline of 30 s, and one that allocates
//!       without bound, again and again), as a ratio
//!
//! Run: `cargo bench -p weir-server --bench cluster` (WEIR_BENCH_SCALE=0.1 for a quick look).

#[path = "../../../tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const TENANT: &str = "bench-token";
const HOSTILE: &str = "hostile-token";

struct Server {
    child: Child,
    url: String,
    http: reqwest::blocking::Client,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(slots: u32, call_timeout_ms: u64) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("weir.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\nrest_address = \"127.0.0.1:0\"\nslots = {slots}\ndata_dir = \"{}\"\n\
                 call_timeout_ms = {call_timeout_ms}\n\n\
                 [[tenants]]\nname = \"bench\"\ntoken_sha256 = \"{}\"\nmax_jobs = {slots}\n\
                 max_slots = {slots}\n\n\
                 [[tenants]]\nname = \"mallory\"\ntoken_sha256 = \"{}\"\nmax_jobs = 10\n\
                 max_slots = 10\nmax_instance_memory_bytes = 67108864\n",
                dir.path().join("data").display(),
                common::sha256_hex(TENANT),
                common::sha256_hex(HOSTILE)
            ),
        )
        .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(["serve", "--config"])
            .arg(&config)
            .env("WEIR_LOG", "error")
            .stdout(Stdio::piped())
            .spawn()
            .expect("cannot start weir serve");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        stdout.read_line(&mut first).unwrap();
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        let url = first.trim().rsplit(' ').next().unwrap().to_string();
        Server {
            child,
            url,
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(120))
                // Under the server's idle deadline (header_read_timeout_ms, 10 s).
                .pool_idle_timeout(Duration::from_secs(5))
                .build()
                .unwrap(),
            _dir: dir,
        }
    }

    fn rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kb: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap();
        kb / 1024.0
    }

    fn call(&self, method: &str, path: &str, token: &str, body: Option<Value>) -> Value {
        let mut r = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.url))
            .bearer_auth(token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().unwrap();
        let status = resp.status();
        let v: Value = resp.json().unwrap();
        assert!(status.is_success(), "{method} {path}: {status} {v}");
        v
    }

    fn upload(&self, token: &str, name: &str) -> String {
        let resp = self
            .http
            .post(format!("{}/v1/components", self.url))
            .bearer_auth(token)
            .header("content-type", "application/wasm")
            .body(std::fs::read(common::guest(name)).unwrap())
            .send()
            .unwrap();
        let v: Value = resp.json().unwrap();
        v["id"].as_str().unwrap().to_string()
    }

    fn submit(&self, token: &str, body: Value) -> String {
        self.call("POST", "/v1/jobs", token, Some(body))["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    fn state(&self, token: &str, id: &str) -> Value {
        self.call("GET", &format!("/v1/jobs/{id}"), token, None)
    }

    fn wait(&self, token: &str, id: &str, states: &[&str]) -> Value {
        loop {
            let j = self.state(token, id);
            if states.iter().any(|s| j["state"] == *s) {
                return j;
            }
            assert!(j["state"] != "FAILED", "job {id} failed: {}", j["failure"]);
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn cancel(&self, token: &str, id: &str) {
        self.call("POST", &format!("/v1/jobs/{id}/cancel"), token, None);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A small job that stays running and nearly idle: one record per second into a keyed
/// count (two tasks, two guest instances).
fn idle_job(component: &str) -> Value {
    json!({
        "component": component,
        "args": {"pipeline": "hot-count", "count": "1000000000", "keys": "10", "hot": "10", "rate": "1"},
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn at_ms(job: &Value, state: &str) -> i64 {
    job["timestamps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["state"] == state)
        .and_then(|t| t["at_ms"].as_i64())
        .unwrap()
}

fn main() {
    let scale: f64 = std::env::var("WEIR_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let n_jobs = ((1_000.0 * scale) as usize).max(20);
    // WEIR_BENCH_ONLY=hk runs only (h) and (k).
    let only = std::env::var("WEIR_BENCH_ONLY").unwrap_or_else(|_| "hijk".into());
    let run = |part: char| only.contains(part);
    if run('h') {
        upload_to_running();
    }
    if run('i') {
        idle_jobs(n_jobs);
    }
    if run('j') {
        run_and_cancel(n_jobs);
    }
    if run('k') {
        beside_hostile_guests(scale);
    }
}

/// (h) upload-to-RUNNING.
fn upload_to_running() {
    let server = Server::start(16, 30_000);
    let mut latencies = Vec::new();
    for i in 0..21 {
        let started = Instant::now();
        let component = server.upload(TENANT, "benchmarks");
        let uploaded = started.elapsed().as_secs_f64() * 1e3;
        let id = server.submit(TENANT, idle_job(&component));
        server.wait(TENANT, &id, &["RUNNING"]);
        let ms = started.elapsed().as_secs_f64() * 1e3;
        if i == 0 {
            println!(
                "(h) upload-to-RUNNING, first: {ms:.1} ms (the upload, which checks and \
                 compiles the 210 KB component: {uploaded:.1} ms; submit to RUNNING: {:.1} ms)",
                ms - uploaded
            );
        } else {
            latencies.push(ms);
        }
        server.cancel(TENANT, &id);
        server.wait(TENANT, &id, &["CANCELED"]);
    }
    println!(
        "(h) upload-to-RUNNING, median of 20 later ones: {:.1} ms (min {:.1}, max {:.1})",
        median(latencies.clone()),
        latencies.iter().cloned().fold(f64::MAX, f64::min),
        latencies.iter().cloned().fold(0.0, f64::max)
    );
    drop(server);
}

/// (i) idle jobs.
fn idle_jobs(n_jobs: usize) {
    let server = Server::start(n_jobs as u32, 30_000);
    let component = server.upload(TENANT, "benchmarks");
    let before = server.rss_mib();
    let started = Instant::now();
    let ids: Vec<String> = (0..n_jobs)
        .map(|_| server.submit(TENANT, idle_job(&component)))
        .collect();
    for id in &ids {
        server.wait(TENANT, id, &["RUNNING"]);
    }
    std::thread::sleep(Duration::from_secs(2));
    let rss = server.rss_mib();
    println!(
        "(i) {n_jobs} idle jobs RUNNING after {:.1} s: server RSS {rss:.0} MiB ({before:.0} MiB \
     before the first; {:.2} MiB per job)",
        started.elapsed().as_secs_f64(),
        (rss - before) / n_jobs as f64
    );
    for id in &ids {
        server.cancel(TENANT, id);
    }
    for id in &ids {
        server.wait(TENANT, id, &["CANCELED"]);
    }
    drop(server);
}

/// (j) run and cancel, `n_jobs` times.
fn run_and_cancel(n_jobs: usize) {
    let server = Server::start(4, 30_000);
    let mut after_100 = 0.0;
    let started = Instant::now();
    for i in 1..=n_jobs {
        let component = server.upload(TENANT, "benchmarks");
        let id = server.submit(TENANT, idle_job(&component));
        server.wait(TENANT, &id, &["RUNNING"]);
        server.cancel(TENANT, &id);
        server.wait(TENANT, &id, &["CANCELED"]);
        if i == n_jobs / 10 {
            after_100 = server.rss_mib();
        }
    }
    let after_all = server.rss_mib();
    println!(
    "(j) upload+run+cancel x{n_jobs} in {:.1} s: RSS after {}: {after_100:.1} MiB, after {n_jobs}: \
     {after_all:.1} MiB (ratio {:.3})",
    started.elapsed().as_secs_f64(),
    n_jobs / 10,
    after_all / after_100
);
    drop(server);
}

/// (k) a neighbour's throughput, alone and beside hostile guests.
fn beside_hostile_guests(scale: f64) {
    let count = ((3_000_000.0 * scale) as u64).max(300_000);
    // The default call deadline (30 s): looping guests loop that long, then restart.
    let server = Server::start(16, 30_000);
    let good = server.upload(TENANT, "benchmarks");
    let bad = server.upload(HOSTILE, "faulty");
    let run_good = || {
        let id = server.submit(
            TENANT,
            json!({"component": good, "args": {"pipeline": "keyed-count", "count": count.to_string(), "keys": "100000"}}),
        );
        let j = server.wait(TENANT, &id, &["FINISHED"]);
        let ms = (j["end_ms"].as_i64().unwrap() - at_ms(&j, "RUNNING")).max(1);
        count as f64 / (ms as f64 / 1e3)
    };
    let hostile_run = |warmup: Duration| {
        let hostile: Vec<String> = ["loop", "loop", "alloc"]
            .iter()
            .map(|mode| {
                server.submit(
                    HOSTILE,
                    json!({"component": bad, "args": {"mode": mode}, "restart_attempts": 1000}),
                )
            })
            .collect();
        // Let them start misbehaving.
        std::thread::sleep(warmup);
        let rate = run_good();
        for h in &hostile {
            server.cancel(HOSTILE, h);
        }
        for h in &hostile {
            server.wait(HOSTILE, h, &["CANCELED", "FAILED"]);
        }
        rate
    };
    let (mut alone, mut fresh, mut steady) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..3 {
        alone.push(run_good());
        fresh.push(hostile_run(Duration::from_millis(300)));
        steady.push(hostile_run(Duration::from_millis(1500)));
    }
    let (a, f, s) = (median(alone), median(fresh), median(steady));
    println!(
        "(k) keyed count of {count} records: alone {:.2} M rows/s; beside 2 looping + 1 allocating \
         guests of another tenant: {:.2} M rows/s when they started 0.3 s before (ratio {:.3}), \
         {:.2} M rows/s when 1.5 s before (ratio {:.3})",
        a / 1e6,
        f / 1e6,
        f / a,
        s / 1e6,
        s / a
    );
}
