//! The session cluster through its real interfaces: a real `weir serve` on 127.0.0.1 with
//! two tenants and an admin, driven over HTTP (and by the `weir` CLI client), running real
//! components: upload, run, status, savepoint, stop, resume from the savepoint, cancel;
//! every route with another tenant's token (404) and without one (401); malformed
//! requests; quotas; and hostile guests that fail only their own job.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{guest, read_json_lines};
use serde_json::{json, Value};

const ACME: &str = "acme-token";
const GLOBEX: &str = "globex-token";
const ADMIN: &str = "admin-token";
const INITECH: &str = "initech-token";
const HOOLI: &str = "hooli-token";

/// A running `weir serve`, stopped when dropped.
struct Cluster {
    child: Child,
    /// What the server printed on standard output after its first line.
    stdout: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    url: String,
    http: reqwest::blocking::Client,
    /// acme's allowed directory.
    acme_dir: PathBuf,
    dir: tempfile::TempDir,
}

impl Cluster {
    fn start(extra_server: &str) -> Cluster {
        Self::start_logging(extra_server, "error", None)
    }

    /// With the server's log at `level`, written to `log` (else to this test's stderr).
    fn start_logging(extra_server: &str, level: &str, log: Option<&Path>) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let acme_dir = dir.path().join("acme");
        std::fs::create_dir_all(&acme_dir).unwrap();
        std::fs::create_dir_all(dir.path().join("globex")).unwrap();
        std::fs::create_dir_all(dir.path().join("initech")).unwrap();
        std::fs::create_dir_all(dir.path().join("hooli")).unwrap();
        let config = dir.path().join("weir.toml");
        std::fs::write(
            &config,
            format!(
                r#"
[server]
rest_address = "127.0.0.1:0"
slots = 8
data_dir = "{data}"
admin_token_sha256 = "{admin}"
{extra_server}

[[tenants]]
name = "acme"
token_sha256 = "{acme}"
max_jobs = 4
max_slots = 6
max_component_bytes = 5000000
max_instance_memory_bytes = 201326592
allowed_paths = ["{acme_dir}"]

[[tenants]]
name = "initech"
token_sha256 = "{initech}"
max_state_bytes = 1000
allowed_paths = ["{initech_dir}"]

[[tenants]]
name = "hooli"
token_sha256 = "{hooli}"
max_disk_bytes = 400000
allowed_paths = ["{hooli_dir}"]

[[tenants]]
name = "globex"
token_sha256 = "{globex}"
max_jobs = 2
max_slots = 2
max_component_bytes = 1000
allowed_paths = ["{globex_dir}"]
"#,
                data = dir.path().join("data").display(),
                admin = common::sha256_hex(ADMIN),
                acme = common::sha256_hex(ACME),
                globex = common::sha256_hex(GLOBEX),
                initech = common::sha256_hex(INITECH),
                hooli = common::sha256_hex(HOOLI),
                hooli_dir = dir.path().join("hooli").display(),
                initech_dir = dir.path().join("initech").display(),
                acme_dir = acme_dir.display(),
                globex_dir = dir.path().join("globex").display(),
            ),
        )
        .unwrap();
        let (child, url, stdout) = serve(&config, level, log);
        Cluster {
            child,
            stdout,
            url,
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(60))
                // The server closes a connection idle for header_read_timeout_ms (as low as
                // 2 s in these tests): a kept connection is not reused after that.
                .pool_idle_timeout(Duration::from_secs(1))
                .build()
                .unwrap(),
            acme_dir,
            dir,
        }
    }

    /// Kills the server (`kill -9`) and starts a new one on the same configuration and data.
    fn crash_and_restart(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        let (child, url, stdout) = serve(&self.dir.path().join("weir.toml"), "error", None);
        self.child = child;
        self.url = url;
        self.stdout = stdout;
    }

    fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut r = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.url));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().expect("the server answers");
        let status = resp.status().as_u16();
        let text = resp.text().unwrap();
        let v = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("{method} {path} answered {status} with non-JSON: {text}"));
        (status, v)
    }

    fn metrics(&self, token: &str) -> String {
        let r = self
            .http
            .get(format!("{}/metrics", self.url))
            .bearer_auth(token);
        r.send().unwrap().text().unwrap()
    }

    fn get(&self, path: &str, token: &str) -> Value {
        let (s, v) = self.call("GET", path, Some(token), None);
        assert_eq!(s, 200, "GET {path}: {v}");
        v
    }

    fn upload_bytes(&self, token: &str, bytes: Vec<u8>, content_type: &str) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("{}/v1/components", self.url))
            .bearer_auth(token)
            .header("content-type", content_type)
            .body(bytes)
            .send()
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().unwrap())
    }

    /// An upload that announces `len` bytes and sends none: a server that refuses it by
    /// its length answers before reading a byte.
    fn upload_announced(&self, token: &str, len: usize) -> (u16, Value) {
        use std::io::{Read, Write};
        let addr = self.url.strip_prefix("http://").unwrap();
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(
            s,
            "POST /v1/components HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/wasm\r\nContent-Length: {len}\r\n\r\n"
        )
        .unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut response = Vec::new();
        let mut buf = [0u8; 4096];
        // Read up to the end of the JSON body (the connection may stay open).
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            response.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&response);
            if text.contains("\r\n\r\n") && text.trim_end().ends_with('}') {
                break;
            }
        }
        let text = String::from_utf8_lossy(&response).to_string();
        let status: u16 = text.split(' ').nth(1).unwrap().parse().unwrap();
        let body = &text[text.find("\r\n\r\n").unwrap() + 4..];
        (status, serde_json::from_str(body.trim()).unwrap())
    }

    fn upload(&self, token: &str, name: &str) -> String {
        let (s, v) = self.upload_bytes(
            token,
            std::fs::read(guest(name)).unwrap(),
            "application/wasm",
        );
        assert!(s == 201 || s == 200, "upload {name}: {s} {v}");
        v["id"].as_str().unwrap().to_string()
    }

    fn submit(&self, token: &str, body: Value) -> String {
        let (s, v) = self.call("POST", "/v1/jobs", Some(token), Some(body));
        assert_eq!(s, 201, "submit: {v}");
        v["id"].as_str().unwrap().to_string()
    }

    /// Polls a job until `done` says so about it; answers the last view.
    fn wait_job(&self, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let until = Instant::now() + Duration::from_secs(120);
        loop {
            let j = self.get(&format!("/v1/jobs/{id}"), ACME);
            if done(&j) {
                return j;
            }
            assert!(Instant::now() < until, "job {id} never {what}: {j:#}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_state(&self, id: &str, state: &str) -> Value {
        self.wait_job(id, state, |j| j["state"] == state)
    }

    fn wait_trigger(&self, job: &str, trigger: &str) -> Value {
        let until = Instant::now() + Duration::from_secs(120);
        loop {
            let t = self.get(&format!("/v1/jobs/{job}/savepoints/{trigger}"), ACME);
            if t["status"] != "IN_PROGRESS" {
                return t;
            }
            assert!(
                Instant::now() < until,
                "savepoint {trigger} never completed"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn cli(&self, token: &str, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(args)
            .env("WEIR_URL", &self.url)
            .env("WEIR_TOKEN", token)
            .output()
            .unwrap()
    }
}

/// What a server printed.
type Printed = std::sync::Arc<std::sync::Mutex<Vec<u8>>>;

/// Starts `weir serve --config config`; answers it, its URL and what it prints after that.
fn serve(config: &Path, level: &str, log: Option<&Path>) -> (Child, String, Printed) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["serve", "--config"])
        .arg(config)
        .env("WEIR_LOG", level)
        .stdout(Stdio::piped())
        .stderr(match log {
            Some(path) => Stdio::from(std::fs::File::create(path).unwrap()),
            None => Stdio::inherit(),
        })
        .spawn()
        .expect("cannot start weir serve");
    let mut first = String::new();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    stdout.read_line(&mut first).unwrap();
    // Keep reading what it prints.
    let printed = Printed::default();
    let into = printed.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = std::io::Read::read(&mut stdout, &mut buf) {
            if n == 0 {
                break;
            }
            into.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    let url = first
        .trim()
        .strip_prefix("weir session cluster: ")
        .unwrap_or_else(|| panic!("unexpected first line: {first}"))
        .to_string();
    (child, url, printed)
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The states a job went through, in order.
fn states(job: &Value) -> Vec<&str> {
    let entries = job["timestamps"].as_array().unwrap();
    entries
        .iter()
        .map(|s| s["state"].as_str().unwrap())
        .collect()
}

/// The durable test job: datagen → keyed running count and 1 s windows → file sinks.
fn durable_job(component: &str, out: &Path, count: u64, rate: u64) -> Value {
    json!({
        "component": component,
        "parallelism": 2,
        "args": {"output": out.display().to_string(), "count": count.to_string(), "rate": rate.to_string()},
        "checkpoint_interval_ms": 100,
    })
}

/// Each key's running counts are exactly 1..n and add up to `total`; the windows add up to
/// `total` and none fired twice: exactly once, whatever stops and restores happened.
fn check_exactly_once(out: &Path, total: u64) {
    let mut per_key: std::collections::BTreeMap<String, Vec<u64>> = Default::default();
    for v in read_json_lines(&out.join("counts")) {
        per_key
            .entry(v["key"].as_str().unwrap().to_string())
            .or_default()
            .push(v["count"].as_u64().unwrap());
    }
    let mut sum = 0;
    for (k, mut c) in per_key {
        c.sort_unstable();
        let n = c.len() as u64;
        assert_eq!(
            c,
            (1..=n).collect::<Vec<_>>(),
            "key {k}: counts are not 1..{n}"
        );
        sum += n;
    }
    assert_eq!(sum, total, "running counts do not add up to the input");
    let mut windows = std::collections::BTreeSet::new();
    let mut wsum = 0;
    for v in read_json_lines(&out.join("windows")) {
        assert!(
            windows.insert((v["key"].to_string(), v["start"].as_i64().unwrap())),
            "window twice: {v}"
        );
        wsum += v["count"].as_u64().unwrap();
    }
    assert_eq!(wsum, total, "window counts do not add up to the input");
}

#[test]
fn upload_run_savepoint_stop_resume_and_cancel() {
    let c = Cluster::start("");
    let id = c.upload(ACME, "durable");
    // The same bytes again: the same component.
    assert_eq!(c.upload(ACME, "durable"), id);
    let info = c.get(&format!("/v1/components/{id}"), ACME);
    assert_eq!(info["tenant"], "acme");
    assert_eq!(
        info["size"].as_u64().unwrap(),
        std::fs::metadata(guest("durable")).unwrap().len()
    );
    assert_eq!(info["sha256"].as_str().unwrap().len(), 64);
    let list = c.get("/v1/components", ACME);
    assert_eq!(list["components"].as_array().unwrap().len(), 1);

    // Two subtasks at 2,000 records/s each: about 10 s for 40,000.
    let out = c.acme_dir.join("out");
    let total = 40_000;
    let job = c.submit(ACME, durable_job(&id, &out, total, 2_000));
    let running = c.wait_state(&job, "RUNNING");
    assert_eq!(running["name"], "durable");
    assert_eq!(running["slots"], 2);
    let ops = running["plan"]["operators"].as_array().unwrap();
    assert!(
        ops.iter()
            .any(|o| o["uid"] == "count" && o["parallelism"] == 2),
        "{running:#}"
    );
    // Records flow, and a checkpoint completes.
    c.wait_job(&job, "counted records at a rate and checkpointed", |j| {
        j["operators"].as_array().is_some_and(|ops| {
            ops.iter().any(|o| {
                o["uid"] == "count"
                    && o["records_in"].as_u64() > Some(1_000)
                    && o["records_in_per_second"].as_f64() > Some(0.0)
            })
        }) && !j["last_checkpoint"].is_null()
            && j["guest_cpu_ms"].as_u64() > Some(0)
            && j["guest_memory_bytes"].as_u64() > Some(0)
    });
    let lag = format!("weir_operator_watermark_lag_seconds{{job_id=\"{job}\"");
    let until = Instant::now() + Duration::from_secs(10);
    let mut live = c.metrics(ACME);
    while !live.contains(&lag) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
        live = c.metrics(ACME);
    }
    assert!(
        live.contains(&lag),
        "no watermark lag while running: {live}"
    );
    let chk = c.get(&format!("/v1/jobs/{job}/checkpoints"), ACME);
    assert!(chk["completed"].as_u64() >= Some(1), "{chk}");
    assert!(chk["history"][0]["location"]
        .as_str()
        .unwrap()
        .contains("/checkpoints/"));

    // A savepoint; the job goes on.
    let (s, t) = c.call(
        "POST",
        &format!("/v1/jobs/{job}/savepoints"),
        Some(ACME),
        None,
    );
    assert_eq!(s, 202, "{t}");
    let done = c.wait_trigger(&job, t["trigger_id"].as_str().unwrap());
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert!(done["location"].as_str().unwrap().contains("savepoint-"));
    assert_eq!(c.get(&format!("/v1/jobs/{job}"), ACME)["state"], "RUNNING");

    // Stop with a savepoint (through the CLI), then resume from it.
    let o = c.cli(ACME, &["stop", &job, "--savepoint"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let printed = String::from_utf8_lossy(&o.stdout).to_string();
    let location = printed
        .trim()
        .strip_prefix("savepoint: ")
        .unwrap()
        .to_string();
    let stopped = c.wait_state(&job, "FINISHED");
    assert_eq!(stopped["savepoint"].as_str(), Some(location.as_str()));
    assert_eq!(
        states(&stopped),
        ["CREATED", "SCHEDULED", "RUNNING", "FINISHING", "FINISHED"]
    );
    // Visible (committed) lines only: what the stopped job wrote after its savepoint is
    // still in progress, and the next start discards it.
    let before: usize = std::fs::read_dir(out.join("counts"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .map(|p| std::fs::read_to_string(p).unwrap().lines().count())
        .sum();
    let before = before as u64;
    assert!(
        before < total,
        "the job was meant to stop before its input ended"
    );

    let mut resume = durable_job(&id, &out, total, 0);
    resume["from_savepoint"] = json!(location);
    let resumed = c.submit(ACME, resume);
    c.wait_state(&resumed, "FINISHED");
    check_exactly_once(&out, total);

    // Cancel, the Flink way.
    let out2 = c.acme_dir.join("out2");
    let slow = c.submit(ACME, durable_job(&id, &out2, 1_000_000, 1_000));
    c.wait_state(&slow, "RUNNING");
    let (s, v) = c.call(
        "PATCH",
        &format!("/v1/jobs/{slow}?mode=cancel"),
        Some(ACME),
        None,
    );
    assert_eq!(s, 202, "{v}");
    c.wait_state(&slow, "CANCELED");
    // A cancelled (or finished) job's checkpoints are deleted (in the background).
    let checkpoints = c.dir.path().join("data/tenants/acme/checkpoints");
    let until = Instant::now() + Duration::from_secs(10);
    while checkpoints.join(&slow).exists() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !checkpoints.join(&slow).exists(),
        "checkpoints of a cancelled job remain"
    );
    assert!(
        !checkpoints.join(&job).exists(),
        "checkpoints of a finished job remain"
    );
    let (s, v) = c.call("POST", &format!("/v1/jobs/{slow}/cancel"), Some(ACME), None);
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("conflict")),
        "{v}"
    );

    // The overview counts them; the CLI lists them.
    let o = c.get("/v1/overview", ACME);
    assert_eq!(o["jobs"]["FINISHED"], 2);
    assert_eq!(o["jobs"]["CANCELED"], 1);
    // A tenant sees the slots it may use (acme: max_slots 6), all free again.
    assert_eq!(
        (&o["slots_total"], &o["slots_free"]),
        (&json!(6), &json!(6))
    );
    let listed = c.cli(ACME, &["list"]);
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(text.contains(&slow) && text.contains("CANCELED"), "{text}");
    let metrics = c.metrics(ACME);
    assert!(
        metrics.contains(&format!("weir_operator_records_in_total{{job_id=\"{job}\"")),
        "{metrics}"
    );
    for family in [
        "weir_tenant_guest_cpu_seconds{tenant=\"acme\"}",
        "weir_job_guest_memory_bytes{",
        "weir_operator_backpressure_ratio{",
    ] {
        assert!(metrics.contains(family), "no {family} in {metrics}");
    }
    assert!(
        metrics.contains("weir_checkpoints_completed_total"),
        "{metrics}"
    );
}

#[test]
fn tenants_see_only_their_own() {
    let c = Cluster::start("");
    let id = c.upload(ACME, "durable");
    let out = c.acme_dir.join("out");
    let job = c.submit(ACME, durable_job(&id, &out, 1_000_000, 500));
    c.wait_state(&job, "RUNNING");
    let (s, t) = c.call(
        "POST",
        &format!("/v1/jobs/{job}/savepoints"),
        Some(ACME),
        None,
    );
    assert_eq!(s, 202);
    let trigger = t["trigger_id"].as_str().unwrap().to_string();
    let routes: Vec<(&str, String, Option<Value>)> = vec![
        ("GET", format!("/v1/components/{id}"), None),
        ("DELETE", format!("/v1/components/{id}"), None),
        ("GET", format!("/v1/jobs/{job}"), None),
        ("PATCH", format!("/v1/jobs/{job}?mode=cancel"), None),
        ("POST", format!("/v1/jobs/{job}/cancel"), None),
        ("GET", format!("/v1/jobs/{job}/exceptions"), None),
        ("GET", format!("/v1/jobs/{job}/checkpoints"), None),
        ("POST", format!("/v1/jobs/{job}/savepoints"), None),
        ("GET", format!("/v1/jobs/{job}/savepoints/{trigger}"), None),
        ("POST", format!("/v1/jobs/{job}/stop"), None),
        (
            "POST",
            "/v1/jobs".into(),
            Some(durable_job(&id, &out, 10, 0)),
        ),
    ];
    for (method, path, body) in &routes {
        let (s, v) = c.call(method, path, Some(GLOBEX), body.clone());
        assert_eq!(s, 404, "{method} {path} with another tenant's token: {v}");
        assert_eq!(v["error"]["code"], "not_found", "{v}");
    }
    let mut all = routes.clone();
    all.extend([
        ("GET", "/v1/components".to_string(), None),
        ("POST", "/v1/components".to_string(), None),
        ("GET", "/v1/jobs".to_string(), None),
        ("GET", "/v1/overview".to_string(), None),
        ("GET", "/v1/taskmanagers".to_string(), None),
        ("GET", "/metrics".to_string(), None),
    ]);
    for (method, path, body) in &all {
        for token in [None, Some("wrong")] {
            let (s, v) = c.call(method, path, token, body.clone());
            assert_eq!(s, 401, "{method} {path} with {token:?}: {v}");
            assert_eq!(v["error"]["code"], "unauthorized");
        }
    }
    // Lists hold only one's own.
    assert_eq!(
        c.get("/v1/jobs", GLOBEX)["jobs"].as_array().unwrap().len(),
        0
    );
    assert_eq!(
        c.get("/v1/components", GLOBEX)["components"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    assert_eq!(c.get("/v1/overview", GLOBEX)["tenants"], json!(["globex"]));
    let metrics = c.metrics(GLOBEX);
    assert!(
        !metrics.contains(&job),
        "another tenant's job in the metrics"
    );
    // Slots and memory: a tenant sees its own figures, not the cluster's (acme holds 2 of
    // the 8 slots; globex may use 2 and holds none).
    let overview = c.get("/v1/overview", GLOBEX);
    assert_eq!(
        (&overview["slots_total"], &overview["slots_free"]),
        (&json!(2), &json!(2)),
        "{overview}"
    );
    let tm = &c.get("/v1/taskmanagers", GLOBEX)["taskmanagers"][0];
    assert_eq!(
        (&tm["slots_free"], &tm["jobs_running"], &tm["rss_bytes"]),
        (&json!(2), &json!(0), &Value::Null),
        "{tm}"
    );
    assert!(metrics.contains("weir_slots_used{} 0.0"), "{metrics}");
    assert!(
        !metrics.contains("weir_process_resident_memory_bytes{}"),
        "{metrics}"
    );
    let admin = c.metrics(ADMIN);
    assert!(admin.contains("weir_slots_used{} 2.0"), "{admin}");
    assert!(admin.contains("weir_process_resident_memory_bytes{}"));
    assert!(c.get("/v1/taskmanagers", ADMIN)["taskmanagers"][0]["rss_bytes"].as_u64() > Some(0));
    // The scheme of `Authorization` is case-insensitive (RFC 9110).
    for scheme in ["bearer", "BEARER", "beaRer"] {
        let r = c
            .http
            .get(format!("{}/v1/jobs", c.url))
            .header("authorization", format!("{scheme} {GLOBEX}"))
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{scheme}");
    }
    // The admin sees everything, but uploads and submits nothing.
    assert_eq!(c.get(&format!("/v1/jobs/{job}"), ADMIN)["tenant"], "acme");
    assert_eq!(
        c.get("/v1/overview", ADMIN)["tenants"],
        json!(["acme", "initech", "hooli", "globex"])
    );
    let (s, v) = c.call(
        "POST",
        "/v1/jobs",
        Some(ADMIN),
        Some(durable_job(&id, &out, 10, 0)),
    );
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (403, Some("tenant_only")),
        "{v}"
    );
    let (s, v) = c.upload_bytes(
        ADMIN,
        std::fs::read(guest("durable")).unwrap(),
        "application/wasm",
    );
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (403, Some("tenant_only")),
        "{v}"
    );
    // The job was never touched by the others.
    assert_eq!(c.get(&format!("/v1/jobs/{job}"), ACME)["state"], "RUNNING");
    c.call("POST", &format!("/v1/jobs/{job}/cancel"), Some(ACME), None);
    c.wait_state(&job, "CANCELED");
}

#[test]
fn malformed_requests_get_clear_errors() {
    let c = Cluster::start("");
    let id = c.upload(ACME, "durable");
    let expect = |(s, v): (u16, Value), status: u16, code: &str, says: &str| {
        assert_eq!(s, status, "{v}");
        assert_eq!(v["error"]["code"], code, "{v}");
        let m = v["error"]["message"].as_str().unwrap();
        assert!(m.contains(says), "'{m}' does not say '{says}'");
    };
    let raw = |body: &str, ct: &str| {
        let r = c
            .http
            .post(format!("{}/v1/jobs", c.url))
            .bearer_auth(ACME)
            .header("content-type", ct)
            .body(body.to_string())
            .send()
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().unwrap())
    };
    expect(
        raw("{\"component\": ", "application/json"),
        400,
        "invalid_json",
        "EOF",
    );
    expect(
        raw("{}", "text/plain"),
        415,
        "unsupported_media_type",
        "Content-Type",
    );
    expect(
        c.call(
            "POST",
            "/v1/jobs",
            Some(ACME),
            Some(json!({"component": id, "paralelism": 2})),
        ),
        400,
        "invalid_request",
        "unknown field `paralelism`",
    );
    expect(
        c.call(
            "POST",
            "/v1/jobs",
            Some(ACME),
            Some(json!({"component": "nope"})),
        ),
        404,
        "not_found",
        "no component with id 'nope'",
    );
    expect(
        c.call("GET", "/v1/jobs/0123", Some(ACME), None),
        404,
        "not_found",
        "no job with id '0123'",
    );
    expect(
        c.call("GET", "/v1/nothing", Some(ACME), None),
        404,
        "not_found",
        "no such route",
    );
    expect(
        c.call("PUT", "/v1/jobs", Some(ACME), None),
        405,
        "method_not_allowed",
        "method",
    );
    expect(
        c.call("PATCH", "/v1/jobs/x?mode=explode", Some(ACME), None),
        400,
        "bad_request",
        "only 'cancel'",
    );
    expect(
        c.call(
            "POST",
            "/v1/jobs",
            Some(ACME),
            Some(json!({"component": id, "parallelism": 0})),
        ),
        400,
        "bad_request",
        "parallelism",
    );
    expect(
        c.call(
            "POST",
            "/v1/jobs",
            Some(ACME),
            Some(json!({"component": id, "state_backend": "disk"})),
        ),
        400,
        "bad_request",
        "state_backend 'disk'",
    );
    // The job's plan needs an output argument: the guest's own message.
    expect(
        c.call(
            "POST",
            "/v1/jobs",
            Some(ACME),
            Some(json!({"component": id})),
        ),
        400,
        "invalid_plan",
        "output",
    );
    // Files outside the tenant's directories, directly, with `..`, or through a symlink.
    let outside = c.dir.path().join("globex/out");
    expect(
        c.call(
            "POST",
            "/v1/jobs",
            Some(ACME),
            Some(durable_job(&id, &outside, 10, 0)),
        ),
        400,
        "path_not_allowed",
        "outside the tenant's allowed paths",
    );
    let climbing = c.acme_dir.join("../globex/out");
    expect(
        c.call(
            "POST",
            "/v1/jobs",
            Some(ACME),
            Some(durable_job(&id, &climbing, 10, 0)),
        ),
        400,
        "path_not_allowed",
        "globex/out",
    );
    std::os::unix::fs::symlink(c.dir.path().join("globex"), c.acme_dir.join("link")).unwrap();
    expect(
        c.call(
            "POST",
            "/v1/jobs",
            Some(ACME),
            Some(durable_job(&id, &c.acme_dir.join("link/out"), 10, 0)),
        ),
        400,
        "path_not_allowed",
        "is not allowed",
    );
    let mut from = durable_job(&id, &c.acme_dir.join("o"), 10, 0);
    from["from_savepoint"] = json!("/etc");
    expect(
        c.call("POST", "/v1/jobs", Some(ACME), Some(from)),
        400,
        "path_not_allowed",
        "from_savepoint",
    );
    // Uploads: not Wasm, a core module, too large, wrong content type.
    expect(
        c.upload_bytes(ACME, b"hello".to_vec(), "application/wasm"),
        422,
        "invalid_component",
        "not a WebAssembly file",
    );
    expect(
        c.upload_bytes(ACME, b"\0asm\x01\0\0\0".to_vec(), "application/wasm"),
        422,
        "invalid_component",
        "core WebAssembly module",
    );
    expect(
        c.upload_announced(GLOBEX, 200_000),
        413,
        "too_large",
        "max_component_bytes (1000)",
    );
    expect(
        c.upload_announced(ACME, 6_000_000),
        413,
        "too_large",
        "5000000",
    );
    expect(
        c.upload_bytes(ACME, b"{}".to_vec(), "application/json"),
        415,
        "unsupported_media_type",
        "application/wasm",
    );
    // A multipart form, as a browser sends it.
    let form = reqwest::blocking::multipart::Form::new().part(
        "file",
        reqwest::blocking::multipart::Part::bytes(std::fs::read(guest("word_count")).unwrap())
            .file_name("word_count.wasm"),
    );
    let r = c
        .http
        .post(format!("{}/v1/components", c.url))
        .bearer_auth(ACME)
        .multipart(form)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let v: Value = r.json().unwrap();
    assert_eq!(v["name"], "word_count.wasm");
    // Quotas: slots beyond the tenant's, and more jobs than it may have.
    let mut wide = durable_job(&id, &c.acme_dir.join("w"), 10, 0);
    wide["parallelism"] = json!(7);
    expect(
        c.call("POST", "/v1/jobs", Some(ACME), Some(wide)),
        409,
        "quota_exceeded",
        "max_slots",
    );
    let mut jobs = Vec::new();
    for i in 0..4 {
        let mut j = durable_job(&id, &c.acme_dir.join(format!("q{i}")), 1_000_000, 100);
        j["parallelism"] = json!(1);
        jobs.push(c.submit(ACME, j));
    }
    let mut fifth = durable_job(&id, &c.acme_dir.join("q5"), 10, 0);
    fifth["parallelism"] = json!(1);
    expect(
        c.call("POST", "/v1/jobs", Some(ACME), Some(fifth)),
        409,
        "quota_exceeded",
        "max_jobs",
    );
    // The quota is checked before the guest's code runs to make a plan (this one's plan
    // would fail).
    let raw = c.upload(ACME, "raw_plan");
    expect(
        c.call(
            "POST",
            "/v1/jobs",
            Some(ACME),
            Some(json!({"component": raw, "args": {"plan": "plan-error"}})),
        ),
        409,
        "quota_exceeded",
        "max_jobs",
    );
    for j in &jobs {
        c.call("POST", &format!("/v1/jobs/{j}/cancel"), Some(ACME), None);
    }
    for j in &jobs {
        c.wait_state(j, "CANCELED");
    }
    // A plan of 1,500 operators that cannot be chained would start as many threads.
    expect(
        c.call(
            "POST",
            "/v1/jobs",
            Some(ACME),
            Some(json!({"component": raw, "args": {"plan": "wide", "ops": "1500"}})),
        ),
        409,
        "quota_exceeded",
        "1501 tasks",
    );
    // Slots: with "wait", a job beyond the tenant's free slots queues in SCHEDULED (and can be
    // cancelled there); without, it is refused.
    let mut big = durable_job(&id, &c.acme_dir.join("big"), 1_000_000, 100);
    big["parallelism"] = json!(6);
    let big = c.submit(ACME, big);
    c.wait_state(&big, "RUNNING");
    let mut queued = durable_job(&id, &c.acme_dir.join("queued"), 10, 0);
    queued["wait"] = json!(true);
    let queued = c.submit(ACME, queued);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        c.get(&format!("/v1/jobs/{queued}"), ACME)["state"],
        "SCHEDULED"
    );
    expect(
        c.call(
            "POST",
            "/v1/jobs",
            Some(ACME),
            Some(durable_job(&id, &c.acme_dir.join("n"), 10, 0)),
        ),
        409,
        "quota_exceeded",
        "holds 6 of its 6",
    );
    let (s, _) = c.call(
        "POST",
        &format!("/v1/jobs/{queued}/cancel"),
        Some(ACME),
        None,
    );
    assert_eq!(s, 202);
    c.wait_state(&queued, "CANCELED");
    c.call("POST", &format!("/v1/jobs/{big}/cancel"), Some(ACME), None);
    c.wait_state(&big, "CANCELED");
    // Another tenant's savepoints are out of reach, even by path.
    let mut theirs = durable_job(&id, &c.acme_dir.join("o"), 10, 0);
    theirs["from_savepoint"] = json!(c
        .dir
        .path()
        .join("data/tenants/globex/savepoints/x")
        .display()
        .to_string());
    expect(
        c.call("POST", "/v1/jobs", Some(ACME), Some(theirs)),
        400,
        "path_not_allowed",
        "from_savepoint",
    );
    // Components can be deleted; then they are gone.
    let (s, _) = c.call("DELETE", &format!("/v1/components/{id}"), Some(ACME), None);
    assert_eq!(s, 200);
    expect(
        c.call("GET", &format!("/v1/components/{id}"), Some(ACME), None),
        404,
        "not_found",
        &id,
    );
    // The OpenAPI document needs no token and lists the routes.
    let (s, doc) = c.call("GET", "/v1/openapi.json", None, None);
    assert_eq!(s, 200);
    for p in [
        "/v1/components",
        "/v1/jobs/{id}",
        "/v1/jobs/{id}/savepoints/{trigger}",
        "/v1/jobs/{id}/stop",
    ] {
        assert!(
            doc["paths"].get(p).is_some(),
            "the OpenAPI document lacks {p}"
        );
    }
}

#[test]
fn hostile_guests_fail_only_their_own_job() {
    let c = Cluster::start("call_timeout_ms = 5000\nmax_call_output_bytes = 8388608");
    let durable = c.upload(ACME, "durable");
    let faulty = c.upload(ACME, "faulty");
    // A well-behaved neighbour, running through it all.
    let out = c.acme_dir.join("neighbour");
    let total = 20_000;
    let neighbour = c.submit(ACME, durable_job(&durable, &out, total, 5_000));
    c.wait_state(&neighbour, "RUNNING");
    let cases = [
        ("loop", "exceeded the call deadline of 5s"),
        ("alloc", "exceeded the memory limit of 201326592 bytes"),
        ("stack", "stack overflows"),
        ("giant", "over the limit of 8388608 bytes per call"),
        ("panic", "boom at record 5000"),
    ];
    // max_jobs is 4: three hostile jobs at a time beside the neighbour.
    let mut pending: std::collections::VecDeque<(&str, &str)> = cases.into_iter().collect();
    let mut running: Vec<(String, &str, &str)> = Vec::new();
    while !pending.is_empty() || !running.is_empty() {
        while running.len() < 3 {
            let Some((mode, says)) = pending.pop_front() else {
                break;
            };
            let id = c.submit(ACME, json!({"component": faulty, "args": {"mode": mode}}));
            running.push((id, mode, says));
        }
        let (id, mode, says) = running.remove(0);
        let j = c.wait_job(&id, "ended", |j| {
            j["state"] == "FAILED" || j["state"] == "FINISHED"
        });
        assert_eq!(j["state"], "FAILED", "{mode}: {j:#}");
        let failure = j["failure"].as_str().unwrap();
        assert!(
            failure.contains(says),
            "{mode}: '{failure}' does not say '{says}'"
        );
        assert!(
            failure.contains("faulty-map") || failure.contains("giant"),
            "{mode}: '{failure}' names no operator"
        );
        let ex = c.get(&format!("/v1/jobs/{id}/exceptions"), ACME);
        assert!(
            ex["exceptions"][0]["message"]
                .as_str()
                .unwrap()
                .contains(says),
            "{ex}"
        );
    }
    let n = c.wait_job(&neighbour, "finished", |j| j["state"] != "RUNNING");
    assert_eq!(n["state"], "FINISHED", "{n:#}");
    assert_eq!(n["restarts"], 0);
    check_exactly_once(&out, total);
    // The cluster still serves.
    assert_eq!(c.get("/v1/overview", ADMIN)["slots_free"], 8);
}

#[test]
fn the_web_ui_is_served_and_speaks_the_api() {
    let c = Cluster::start("");
    let page = c.http.get(format!("{}/", c.url)).send().unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let html = page.text().unwrap();
    assert!(html.contains("<script src=\"/ui/app.js\">"), "{html}");
    let js = c.http.get(format!("{}/ui/app.js", c.url)).send().unwrap();
    assert!(js.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));
    let js = js.text().unwrap();
    // Every route the UI calls exists in the OpenAPI document.
    let (_, doc) = c.call("GET", "/v1/openapi.json", None, None);
    for route in ["/v1/overview", "/v1/jobs", "/v1/components"] {
        assert!(
            js.contains(&format!("\"{route}\"")),
            "the UI does not call {route}"
        );
        assert!(
            doc["paths"].get(route).is_some(),
            "{route} is not in the API"
        );
    }
    for route in [
        "/v1/jobs/{id}/checkpoints",
        "/v1/jobs/{id}/exceptions",
        "/v1/jobs/{id}/savepoints",
        "/v1/jobs/{id}/stop",
        "/v1/jobs/{id}/cancel",
    ] {
        let js_form = route
            .replace("{id}", "${selected}")
            .replace("${selected}/checkpoints", "${id}/checkpoints")
            .replace("${selected}/exceptions", "${id}/exceptions");
        assert!(
            js.contains(&js_form),
            "the UI does not call {route} ({js_form})"
        );
        assert!(
            doc["paths"].get(route).is_some(),
            "{route} is not in the API"
        );
    }
    let (s, v) = c.call("GET", "/ui/nothing.js", None, None);
    assert_eq!((s, v["error"]["code"].as_str()), (404, Some("not_found")));
}

#[test]
fn a_job_over_its_state_quota_fails_naming_it() {
    let c = Cluster::start("");
    let (s, v) = c.upload_bytes(
        INITECH,
        std::fs::read(guest("durable")).unwrap(),
        "application/wasm",
    );
    assert_eq!(s, 201, "{v}");
    let id = v["id"].as_str().unwrap();
    let out = c.dir.path().join("initech/out");
    let (s, v) = c.call(
        "POST",
        "/v1/jobs",
        Some(INITECH),
        Some(durable_job(id, &out, 1_000_000, 2_000)),
    );
    assert_eq!(s, 201, "{v}");
    let job = v["id"].as_str().unwrap();
    let until = Instant::now() + Duration::from_secs(60);
    let j = loop {
        let j = c.get(&format!("/v1/jobs/{job}"), INITECH);
        if j["state"] == "FAILED" {
            break j;
        }
        assert!(Instant::now() < until, "the job never failed: {j:#}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let failure = j["failure"].as_str().unwrap();
    assert!(
        failure.contains("tenant 'initech''s max_state_bytes per job of 1000 bytes"),
        "{failure}"
    );
    // Restarting would not help: it failed at once.
    assert_eq!(j["restarts"], 0, "{j:#}");
}

/// The server's resident memory and its peak since the last [`reset_peak_rss`], bytes.
fn rss(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        let line = status.lines().find(|l| l.starts_with(name)).unwrap();
        let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        kib * 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn reset_peak_rss(pid: u32) {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
}

#[test]
fn state_is_limited_as_it_grows_by_default_on_both_backends() {
    // The issue's attack: 64 KiB map-state values at 400 records/s, no quota configured.
    // acme sets no state limit: the default per job (256 MiB) applies.
    let c = Cluster::start("");
    let faulty = c.upload(ACME, "faulty");
    let started = Instant::now();
    let jobs: Vec<(String, &str)> = ["memory", "rocksdb"]
        .into_iter()
        .map(|backend| {
            let job = c.submit(
                ACME,
                json!({"component": faulty, "args": {"mode": "hoard"}, "state_backend": backend}),
            );
            (job, backend)
        })
        .collect();
    for (job, backend) in &jobs {
        let j = c.wait_job(job, "failed", |j| {
            j["state"] != "RUNNING" && j["state"] != "CREATED" && j["state"] != "SCHEDULED"
        });
        assert_eq!(j["state"], "FAILED", "{backend}: {j:#}");
        let failure = j["failure"].as_str().unwrap();
        assert!(
            failure.contains("tenant 'acme''s max_state_bytes per job of 268435456 bytes")
                && failure.contains("hoard"),
            "{backend}: {failure}"
        );
        assert_eq!(j["restarts"], 0, "{backend}: {j:#}");
    }
    // 256 MiB at ~25 MiB/s: it took about ten seconds, not a checkpoint's while.
    assert!(started.elapsed() < Duration::from_secs(60));
    // One value over max_state_value_bytes (4 MiB by default) fails its job at once.
    let big = c.submit(
        ACME,
        json!({"component": faulty, "args": {"mode": "big-value"}}),
    );
    let j = c.wait_job(&big, "failed", |j| j["state"] == "FAILED");
    let failure = j["failure"].as_str().unwrap();
    assert!(
        failure.contains("exceeds max_state_value_bytes (4194304 bytes)"),
        "{failure}"
    );
}

#[test]
fn the_servers_state_memory_budget_holds_whatever_the_tenants_quotas() {
    let c = Cluster::start("state_memory_budget_bytes = 50000000");
    let pid = c.child.id();
    let faulty = c.upload(ACME, "faulty");
    // A neighbour's small state is left alone.
    let durable = c.upload(ACME, "durable");
    let out = c.acme_dir.join("neighbour");
    let neighbour = c.submit(ACME, durable_job(&durable, &out, 20_000, 4_000));
    c.wait_state(&neighbour, "RUNNING");
    let (before, _) = rss(pid);
    reset_peak_rss(pid);
    for attempt in 0..2 {
        // The budget is given back when a job ends: the second hoard gets as far.
        let job = c.submit(
            ACME,
            json!({"component": faulty, "args": {"mode": "hoard"}}),
        );
        let j = c.wait_job(&job, "failed", |j| j["state"] == "FAILED");
        let failure = j["failure"].as_str().unwrap();
        assert!(
            failure.contains(
                "the server's state memory budget (state_memory_budget_bytes) of 50000000 bytes"
            ),
            "attempt {attempt}: {failure}"
        );
    }
    let (_, peak) = rss(pid);
    assert!(
        peak < before + (200 << 20),
        "the server grew from {before} to {peak} bytes"
    );
    let n = c.wait_job(&neighbour, "finished", |j| j["state"] != "RUNNING");
    assert_eq!(n["state"], "FINISHED", "{n:#}");
    check_exactly_once(&out, 20_000);
}

/// A component padded with a custom section to about `size` bytes: still a valid component,
/// with bytes of its own.
fn padded_component(name: &str, size: usize) -> Vec<u8> {
    let mut bytes = std::fs::read(guest(name)).unwrap();
    let section = b"weir-test-padding";
    let mut content = vec![section.len() as u8];
    content.extend_from_slice(section);
    content.resize(
        size.saturating_sub(bytes.len() + 8).max(content.len()),
        0x5a,
    );
    bytes.push(0);
    let mut n = content.len();
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            bytes.push(byte);
            break;
        }
        bytes.push(byte | 0x80);
    }
    bytes.extend_from_slice(&content);
    bytes
}

/// The files in a tenant's component directory that are neither a component nor its record.
fn leftovers(c: &Cluster, tenant: &str) -> Vec<String> {
    let dir = c.dir.path().join("data/components").join(tenant);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    entries
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| !n.ends_with(".wasm") && !n.ends_with(".json"))
        .collect()
}

#[test]
fn browser_uploads_large_forms_and_failed_uploads_leave_nothing_behind() {
    let c = Cluster::start("");
    // What Chromium and Safari send: a boundary with capitals, and a form over 2 MiB.
    let boundary = "----WebKitFormBoundaryQ7xYzAbC9dEfGhIj";
    let component = padded_component("word_count", 3 << 20);
    let mut form = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"Word Count.wasm\"\r\n\
         Content-Type: application/wasm\r\n\r\n"
    )
    .into_bytes();
    form.extend_from_slice(&component);
    form.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let (s, v) = c.upload_bytes(
        ACME,
        form,
        &format!("multipart/form-data; boundary={boundary}"),
    );
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["name"], "Word Count.wasm");
    assert_eq!(v["size"], component.len());
    assert_eq!(v["sha256"], common::sha256_hex(&component));
    // Over the limit while streaming (no length announced): refused, nothing kept. The
    // server stops reading, so the client may see its answer or only the closed connection.
    let stored = c.get("/v1/components", ACME)["components"]
        .as_array()
        .unwrap()
        .len();
    let chunks = std::iter::repeat_n(vec![0u8; 1 << 20], 6).map(Ok::<_, std::io::Error>);
    let r = c
        .http
        .post(format!("{}/v1/components", c.url))
        .bearer_auth(ACME)
        .header("content-type", "application/wasm")
        .body(reqwest::blocking::Body::new(ChunkReader::new(chunks)))
        .send();
    match r {
        Ok(r) => assert_eq!(r.status().as_u16(), 413),
        Err(e) => assert!(e.is_body() || e.is_request(), "{e:?}"),
    }
    assert_eq!(
        c.get("/v1/components", ACME)["components"]
            .as_array()
            .unwrap()
            .len(),
        stored
    );
    // Not a component: refused, nothing kept.
    let (s, _) = c.upload_bytes(ACME, vec![1u8; 100_000], "application/wasm");
    assert_eq!(s, 422);
    // A client that goes away in the middle of its upload.
    {
        use std::io::Write;
        let addr = c.url.strip_prefix("http://").unwrap();
        let mut sock = std::net::TcpStream::connect(addr).unwrap();
        write!(
            sock,
            "POST /v1/components HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {ACME}\r\n\
             Content-Type: application/wasm\r\nContent-Length: 4000000\r\n\r\n"
        )
        .unwrap();
        sock.write_all(&vec![0u8; 1 << 20]).unwrap();
        std::thread::sleep(Duration::from_millis(300));
    }
    let until = Instant::now() + Duration::from_secs(10);
    while !leftovers(&c, "acme").is_empty() {
        assert!(
            Instant::now() < until,
            "left behind: {:?}",
            leftovers(&c, "acme")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Eight large uploads at once are streamed to disk, not held in memory (initech may
    // upload 50 MB).
    let pid = c.child.id();
    let big = std::sync::Arc::new(padded_component("faulty", 45_000_000));
    let (before, _) = rss(pid);
    reset_peak_rss(pid);
    let uploads: Vec<_> = (0..8)
        .map(|_| {
            let (url, big) = (c.url.clone(), big.clone());
            std::thread::spawn(move || {
                let r = reqwest::blocking::Client::new()
                    .post(format!("{url}/v1/components"))
                    .bearer_auth(INITECH)
                    .header("content-type", "application/wasm")
                    .body(big.to_vec())
                    .send()
                    .unwrap();
                r.status().as_u16()
            })
        })
        .collect();
    for u in uploads {
        let status = u.join().unwrap();
        assert!(status == 201 || status == 200, "{status}");
    }
    let (_, peak) = rss(pid);
    assert!(
        peak < before + (200 << 20),
        "eight 45 MB uploads grew the server from {before} to {peak} bytes"
    );
    assert!(leftovers(&c, "initech").is_empty());
}

/// A request body sent in chunks, with no length announced.
struct ChunkReader<I> {
    chunks: I,
    current: std::io::Cursor<Vec<u8>>,
}

impl<I> ChunkReader<I> {
    fn new(chunks: I) -> Self {
        ChunkReader {
            chunks,
            current: std::io::Cursor::new(Vec::new()),
        }
    }
}

impl<I: Iterator<Item = std::io::Result<Vec<u8>>>> std::io::Read for ChunkReader<I> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let n = self.current.read(buf)?;
            if n > 0 {
                return Ok(n);
            }
            match self.chunks.next() {
                Some(chunk) => self.current = std::io::Cursor::new(chunk?),
                None => return Ok(0),
            }
        }
    }
}

/// Opens a connection that sends part of a request's headers and then nothing.
fn half_sent(url: &str) -> std::net::TcpStream {
    use std::io::Write;
    let addr = url.strip_prefix("http://").unwrap();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /v1/overview HTTP/1.1\r\nHost: weir\r\nAuthor")
        .unwrap();
    s
}

/// Whether the server closed `s` within `within`.
fn closed_within(s: &mut std::net::TcpStream, within: Duration) -> bool {
    use std::io::Read;
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            // An error answer (408) before the close is fine.
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return false,
            Err(_) => return true,
        }
    }
}

#[test]
fn a_client_that_stops_sending_or_reading_is_cut_off() {
    use std::io::{Read, Write};
    let c = Cluster::start(
        "header_read_timeout_ms = 30000\nbody_read_timeout_ms = 1000\nwrite_timeout_ms = 1000",
    );
    let addr = c.url.strip_prefix("http://").unwrap().to_string();
    // A body that stops half-way.
    let mut body = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        body,
        "POST /v1/jobs HTTP/1.1\r\nHost: weir\r\nAuthorization: Bearer {ACME}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"component\""
    )
    .unwrap();
    assert!(closed_within(&mut body, Duration::from_secs(10)));
    // Many responses asked for and none read: the server's writes stall, and it gives up.
    let (_, doc) = c.call("GET", "/v1/openapi.json", None, None);
    let one = doc.to_string().len();
    let requests = 2_000;
    let mut reader = std::net::TcpStream::connect(&addr).unwrap();
    let ask = "GET /v1/openapi.json HTTP/1.1\r\nHost: weir\r\n\r\n".repeat(requests);
    reader.write_all(ask.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_secs(4));
    reader
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut buf = vec![0u8; 1 << 16];
    let mut received = 0;
    let closed = loop {
        match reader.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => received += n,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                break false
            }
            Err(_) => break true,
        }
    };
    assert!(closed, "the connection stayed open ({received} bytes read)");
    assert!(received < requests * one, "every response was written");
    // The server still serves.
    assert_eq!(c.get("/v1/overview", ACME)["tenants"], json!(["acme"]));
}

#[test]
fn kept_alive_connections_serve_request_after_request() {
    // One pooled connection, answers of every kind in turn: none is cut short.
    let c = Cluster::start("");
    let http = reqwest::blocking::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();
    // Among them, bodies refused before they are read (a wrong token, the admin uploading):
    // the server does not read them, so it must say it closes the connection.
    let big = vec![0u8; 300_000];
    for i in 0..300 {
        let (method, path, token) = match i % 7 {
            0 => ("GET", "/v1/jobs", Some(ACME)),
            1 => ("GET", "/v1/jobs/nope", Some(ACME)),
            2 => ("DELETE", "/v1/components/nope", Some("wrong")),
            3 => ("GET", "/v1/overview", None),
            4 => ("POST", "/v1/components", Some("wrong")),
            5 => ("POST", "/v1/components", Some(ADMIN)),
            _ => ("POST", "/v1/jobs", Some("wrong")),
        };
        let mut r = http.request(method.parse().unwrap(), format!("{}{path}", c.url));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if path == "/v1/jobs" && method == "POST" {
            r = r.json(&json!({"component": "x", "args": {"pad": "y".repeat(10_000)}}));
        } else if method == "POST" {
            r = r
                .header("content-type", "application/wasm")
                .body(big.clone());
        }
        let response = r
            .send()
            .unwrap_or_else(|e| panic!("request {i} ({method} {path}): {e:?}"));
        let status = response.status();
        assert!(status.as_u16() < 500, "{i}: {status}");
        if method == "POST" {
            assert_eq!(
                response.headers().get("connection").map(|v| v.as_bytes()),
                Some(&b"close"[..]),
                "{i}: {method} {path} refused without closing"
            );
        }
    }
}

#[test]
fn slow_and_half_open_clients_cannot_hold_the_server() {
    let c = Cluster::start("header_read_timeout_ms = 2000\nmax_connections = 40");
    let fresh = || {
        reqwest::blocking::Client::builder()
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap()
    };
    let overview = |http: &reqwest::blocking::Client| {
        http.get(format!("{}/v1/overview", c.url))
            .bearer_auth(ACME)
            .send()
            .map(|r| r.status().as_u16())
    };
    // Half-sent requests fill most of the connections; a legitimate request is answered.
    let mut slow: Vec<_> = (0..30).map(|_| half_sent(&c.url)).collect();
    assert_eq!(overview(&fresh()).unwrap(), 200);
    // Past the limit, a new connection is closed at once.
    let mut more: Vec<_> = (0..15).map(|_| half_sent(&c.url)).collect();
    let refused = more
        .iter_mut()
        .map(|s| closed_within(s, Duration::from_millis(500)))
        .filter(|&closed| closed)
        .count();
    assert!(
        refused >= 5,
        "only {refused} connections past the limit were closed"
    );
    // The half-sent ones are closed once the header deadline passes...
    for s in slow.iter_mut() {
        assert!(closed_within(s, Duration::from_secs(10)));
    }
    // ... and so is an idle kept-alive connection; the server serves again.
    let mut idle = half_sent(&c.url);
    {
        use std::io::Write;
        idle.write_all(b"ization: Bearer x\r\n\r\n").unwrap();
    }
    assert!(closed_within(&mut idle, Duration::from_secs(10)));
    assert_eq!(overview(&fresh()).unwrap(), 200);
}

#[test]
fn disk_quotas_are_checked_before_writing_and_savepoints_can_be_deleted() {
    let c = Cluster::start("");
    // hooli may keep 400,000 bytes; the durable component takes about 270,000.
    let id = c.upload(HOOLI, "durable");
    let usage = c.get("/v1/overview", HOOLI)["usage"].clone();
    let component = std::fs::metadata(guest("durable")).unwrap().len();
    assert!(
        usage["components_bytes"].as_u64().unwrap() >= component,
        "{usage}"
    );
    assert_eq!(usage["max_disk_bytes"], 400_000);
    // An upload larger than what is left is refused while it streams in.
    let (s, v) = c.upload_bytes(
        HOOLI,
        std::fs::read(guest("word_count")).unwrap(),
        "application/wasm",
    );
    assert_eq!(s, 413, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_disk_bytes"),
        "{v}"
    );
    // Savepoints fill the rest; then the next is refused before it is written.
    let out = c.dir.path().join("hooli/out");
    let mut body = durable_job(&id, &out, 1_000_000, 2_000);
    body.as_object_mut()
        .unwrap()
        .remove("checkpoint_interval_ms");
    let (s, v) = c.call("POST", "/v1/jobs", Some(HOOLI), Some(body.clone()));
    assert_eq!(s, 201, "{v}");
    let job = v["id"].as_str().unwrap().to_string();
    let get = |path: &str| c.get(path, HOOLI);
    let wait = |job: &str, state: &str| {
        let until = Instant::now() + Duration::from_secs(60);
        while get(&format!("/v1/jobs/{job}"))["state"] != state {
            assert!(Instant::now() < until, "job {job} never {state}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait(&job, "RUNNING");
    let mut taken = 0;
    let refused = loop {
        let (s, v) = c.call(
            "POST",
            &format!("/v1/jobs/{job}/savepoints"),
            Some(HOOLI),
            None,
        );
        if s != 202 {
            break (s, v);
        }
        let trigger = v["trigger_id"].as_str().unwrap();
        let until = Instant::now() + Duration::from_secs(60);
        while get(&format!("/v1/jobs/{job}/savepoints/{trigger}"))["status"] == "IN_PROGRESS" {
            assert!(Instant::now() < until);
            std::thread::sleep(Duration::from_millis(20));
        }
        taken += 1;
        assert!(taken < 500, "the quota never stopped a savepoint");
    };
    assert_eq!(refused.0, 409, "{}", refused.1);
    assert_eq!(refused.1["error"]["code"], "quota_exceeded");
    assert!(refused.1["error"]["message"]
        .as_str()
        .unwrap()
        .contains("max_disk_bytes"));
    assert!(get("/v1/overview")["usage"]["disk_bytes"].as_u64() >= Some(400_000));
    // So is a new job (its checkpoints would be written).
    let (s, v) = c.call("POST", "/v1/jobs", Some(HOOLI), Some(body.clone()));
    assert_eq!(
        (s, &v["error"]["code"]),
        (409, &json!("quota_exceeded")),
        "{v}"
    );
    // The savepoints are listed, and deleting them frees the space.
    let list = get("/v1/savepoints")["savepoints"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(list.len(), taken, "{list:?}");
    assert!(list.iter().all(|s| s["job"] == job.as_str()));
    // The CLI lists and deletes them too.
    let o = c.cli(HOOLI, &["savepoints"]);
    let printed = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{o:?}");
    assert!(printed.contains(list[1]["name"].as_str().unwrap()) && printed.contains("disk: "));
    let o = c.cli(
        HOOLI,
        &["dispose-savepoint", list[1]["name"].as_str().unwrap()],
    );
    assert!(o.status.success(), "{o:?}");
    for s in &list[2..] {
        let name = s["name"].as_str().unwrap();
        let (status, v) = c.call(
            "DELETE",
            &format!("/v1/savepoints/{name}"),
            Some(HOOLI),
            None,
        );
        assert_eq!(status, 200, "{v}");
    }
    assert!(get("/v1/overview")["usage"]["disk_bytes"].as_u64() < Some(400_000));
    // A savepoint a running job was started from cannot be deleted while it runs.
    let kept = &list[0];
    let (name, location) = (
        kept["name"].as_str().unwrap(),
        kept["location"].as_str().unwrap(),
    );
    c.call("POST", &format!("/v1/jobs/{job}/cancel"), Some(HOOLI), None);
    wait(&job, "CANCELED");
    let mut resumed = body.clone();
    resumed["from_savepoint"] = json!(location);
    resumed["args"]["output"] = json!(c.dir.path().join("hooli/out2").display().to_string());
    let (s, v) = c.call("POST", "/v1/jobs", Some(HOOLI), Some(resumed));
    assert_eq!(s, 201, "{v}");
    let second = v["id"].as_str().unwrap().to_string();
    wait(&second, "RUNNING");
    let (s, v) = c.call(
        "DELETE",
        &format!("/v1/savepoints/{name}"),
        Some(HOOLI),
        None,
    );
    assert_eq!((s, &v["error"]["code"]), (409, &json!("in_use")), "{v}");
    // Another tenant's savepoint, or a path, is not found.
    for (token, name) in [
        (ACME, name.to_string()),
        (HOOLI, "..".to_string()),
        (HOOLI, format!("..%2Fsavepoints%2F{name}")),
        (HOOLI, "nope".to_string()),
    ] {
        let (s, v) = c.call(
            "DELETE",
            &format!("/v1/savepoints/{name}"),
            Some(token),
            None,
        );
        assert_eq!(s, 404, "{name}: {v}");
    }
    c.call(
        "POST",
        &format!("/v1/jobs/{second}/cancel"),
        Some(HOOLI),
        None,
    );
    wait(&second, "CANCELED");
    let (s, v) = c.call(
        "DELETE",
        &format!("/v1/savepoints/{name}"),
        Some(HOOLI),
        None,
    );
    assert_eq!(s, 200, "{v}");
    assert!(get("/v1/savepoints")["savepoints"]
        .as_array()
        .unwrap()
        .is_empty());
    // Checkpoints count too: a checkpointing job whose tenant goes over the quota fails as
    // its next checkpoint completes, and keeps its checkpoints, which can then be deleted.
    let mut checkpointing = body.clone();
    checkpointing["checkpoint_interval_ms"] = json!(100);
    checkpointing["args"]["output"] = json!(c.dir.path().join("hooli/out3").display().to_string());
    let (s, v) = c.call("POST", "/v1/jobs", Some(HOOLI), Some(checkpointing));
    assert_eq!(s, 201, "{v}");
    let third = v["id"].as_str().unwrap().to_string();
    wait(&third, "RUNNING");
    let (s, v) = c.call(
        "DELETE",
        &format!("/v1/jobs/{third}/checkpoints"),
        Some(HOOLI),
        None,
    );
    assert_eq!((s, &v["error"]["code"]), (409, &json!("conflict")), "{v}");
    let mut refused = false;
    for _ in 0..500 {
        let (s, v) = c.call(
            "POST",
            &format!("/v1/jobs/{third}/savepoints"),
            Some(HOOLI),
            None,
        );
        if s != 202 {
            refused = true;
            break;
        }
        let trigger = v["trigger_id"].as_str().unwrap().to_string();
        while get(&format!("/v1/jobs/{third}/savepoints/{trigger}"))["status"] == "IN_PROGRESS" {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    assert!(refused, "the quota never stopped a savepoint");
    wait(&third, "FAILED");
    let j = get(&format!("/v1/jobs/{third}"));
    assert!(
        j["failure"].as_str().unwrap().contains("max_disk_bytes"),
        "{j:#}"
    );
    let checkpoints = c
        .dir
        .path()
        .join("data/tenants/hooli/checkpoints")
        .join(&third);
    assert!(checkpoints.is_dir());
    let (s, v) = c.call(
        "DELETE",
        &format!("/v1/jobs/{third}/checkpoints"),
        Some(HOOLI),
        None,
    );
    assert_eq!(s, 200, "{v}");
    assert!(v["bytes"].as_u64() > Some(0), "{v}");
    assert!(!checkpoints.exists());
    let (s, _) = c.call(
        "DELETE",
        &format!("/v1/jobs/{third}/checkpoints"),
        Some(ACME),
        None,
    );
    assert_eq!(s, 404);
}

#[test]
fn sigterm_stops_running_jobs_with_a_savepoint() {
    let mut c = Cluster::start("");
    let id = c.upload(ACME, "durable");
    let out = c.acme_dir.join("out");
    let job = c.submit(ACME, durable_job(&id, &out, 1_000_000, 1_000));
    c.wait_state(&job, "RUNNING");
    // Clients that never finish their requests do not hold the shutdown: half-sent headers,
    // and a body that stops half-way.
    let _slow: Vec<_> = (0..20).map(|_| half_sent(&c.url)).collect();
    let _stalled = {
        use std::io::Write;
        let addr = c.url.strip_prefix("http://").unwrap();
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(
            s,
            "POST /v1/components HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {ACME}\r\n\
             Content-Type: application/wasm\r\nContent-Length: 1000000\r\n\r\n\0asm"
        )
        .unwrap();
        s
    };
    std::thread::sleep(Duration::from_millis(200));
    let pid = c.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let until = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = c.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < until, "the server did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    // The connections were given shutdown_grace_ms (5 s) and the job a savepoint's time.
    assert!(
        Instant::now() + Duration::from_secs(40) < until,
        "the server took over 20 s to stop"
    );
    // The job's savepoint is complete and names it.
    let savepoints = c.dir.path().join("data/tenants/acme/savepoints");
    let found: Vec<_> = std::fs::read_dir(&savepoints)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().contains(&job))
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].join("_metadata").is_file());
}

#[test]
fn cancelling_a_job_stuck_in_a_guest_call_is_prompt() {
    // The default call deadline is 30 s; the cancel must not wait for it.
    let c = Cluster::start("");
    let faulty = c.upload(ACME, "faulty");
    let job = c.submit(
        ACME,
        json!({"component": faulty, "args": {"mode": "loop", "at": "10"}}),
    );
    c.wait_state(&job, "RUNNING");
    std::thread::sleep(Duration::from_millis(500));
    let asked = Instant::now();
    let (s, v) = c.call("POST", &format!("/v1/jobs/{job}/cancel"), Some(ACME), None);
    assert_eq!(s, 202, "{v}");
    let j = c.wait_job(&job, "ended", |j| {
        j["state"] != "CANCELLING" && j["state"] != "RUNNING"
    });
    assert_eq!(j["state"], "CANCELED", "{j:#}");
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "the cancel took {:?}",
        asked.elapsed()
    );
}

#[test]
fn tokens_never_reach_the_log() {
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("serve.log");
    let c = Cluster::start_logging("", "trace", Some(&log));
    let id = c.upload(ACME, "durable");
    let job = c.submit(ACME, durable_job(&id, &c.acme_dir.join("out"), 2_000, 0));
    c.wait_state(&job, "FINISHED");
    c.call("GET", "/v1/jobs", Some("a-wrong-token-xyz"), None);
    c.call("GET", "/v1/overview", Some(ADMIN), None);
    c.call("GET", &format!("/v1/jobs/{job}"), Some(GLOBEX), None);
    drop(c);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains(&job),
        "the log says nothing about the job: {text}"
    );
    assert!(text.contains("tenant"), "the log names no tenant");
    for token in [ACME, GLOBEX, ADMIN, "a-wrong-token-xyz"] {
        assert!(!text.contains(token), "token '{token}' in the log");
    }
}

#[test]
fn guest_log_lines_are_escaped_and_rate_limited() {
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("serve.log");
    let c = Cluster::start_logging("", "info", Some(&log));
    let faulty = c.upload(ACME, "faulty");
    // 10,000 lines as fast as the guest can write them, each trying to forge a line.
    let job = c.submit(
        ACME,
        json!({"component": faulty, "args": {"mode": "chatty"}}),
    );
    c.wait_state(&job, "FINISHED");
    drop(c);
    let text = std::fs::read_to_string(&log).unwrap();
    let forged = text
        .lines()
        .filter(|l| l.contains("FORGED"))
        .collect::<Vec<_>>();
    assert!(!forged.is_empty(), "no guest line in the log");
    for line in &forged {
        assert!(
            line.contains("record ") && line.contains("\\n2026-12-01") && line.contains("\\u{1b}"),
            "a guest line was not kept on one line: {line}"
        );
        assert!(!line.starts_with("2026-12-01T00:00:00Z"), "{line}");
    }
    // At most the burst (1,000) and 100 a second after it.
    assert!(
        forged.len() < 1_000 + 100 * 30,
        "{} guest lines",
        forged.len()
    );
    assert!(forged.len() < 10_000);
    assert!(
        text.contains("guest log lines dropped") || forged.len() == 10_000,
        "the drops are not reported"
    );
}

#[test]
fn a_print_sink_cannot_flood_the_servers_output() {
    let c = Cluster::start("");
    let faulty = c.upload(ACME, "faulty");
    let job = c.submit(
        ACME,
        json!({"component": faulty, "args": {"mode": "print", "count": "20000"}}),
    );
    let j = c.wait_state(&job, "FINISHED");
    // Every record was taken; only the job's rate of them was printed.
    assert_eq!(j["operators"][2]["records_in"], 20_000, "{j:#}");
    std::thread::sleep(Duration::from_millis(200));
    let printed = String::from_utf8_lossy(&c.stdout.lock().unwrap()).to_string();
    let records = printed.lines().filter(|l| l.starts_with('[')).count();
    assert!(records >= 100, "{printed}");
    assert!(records <= 1_000 + 100 * 30, "{records} records printed");
}

#[test]
fn a_path_swapped_for_a_symlink_after_submission_is_refused_at_start() {
    let c = Cluster::start("");
    let id = c.upload(ACME, "durable");
    // Fill the tenant's slots, then queue a job writing under a real directory.
    let mut big = durable_job(&id, &c.acme_dir.join("big"), 1_000_000, 100);
    big["parallelism"] = json!(6);
    let big = c.submit(ACME, big);
    c.wait_state(&big, "RUNNING");
    let swap = c.acme_dir.join("swap");
    std::fs::create_dir_all(&swap).unwrap();
    let mut queued = durable_job(&id, &swap.join("out"), 10, 0);
    queued["wait"] = json!(true);
    let queued = c.submit(ACME, queued);
    // While it waits, the directory becomes a link into another tenant's files.
    std::fs::remove_dir(&swap).unwrap();
    std::os::unix::fs::symlink(c.dir.path().join("globex"), &swap).unwrap();
    c.call("POST", &format!("/v1/jobs/{big}/cancel"), Some(ACME), None);
    let j = c.wait_job(&queued, "ended", |j| {
        j["state"] == "FAILED" || j["state"] == "FINISHED"
    });
    assert_eq!(j["state"], "FAILED", "{j:#}");
    let failure = j["failure"].as_str().unwrap();
    assert!(
        failure.contains("outside the tenant's allowed paths"),
        "{failure}"
    );
    assert!(
        std::fs::read_dir(c.dir.path().join("globex"))
            .unwrap()
            .next()
            .is_none(),
        "something was written into another tenant's directory"
    );
}

#[test]
fn a_stop_whose_savepoint_fails_leaves_the_job_running() {
    let c = Cluster::start("");
    let id = c.upload(ACME, "durable");
    let job = c.submit(
        ACME,
        durable_job(&id, &c.acme_dir.join("out"), 1_000_000, 500),
    );
    c.wait_state(&job, "RUNNING");
    // The savepoint directory cannot be written: a file stands in its place.
    let savepoints = c.dir.path().join("data/tenants/acme/savepoints");
    std::fs::remove_dir_all(&savepoints).unwrap();
    std::fs::write(&savepoints, b"not a directory").unwrap();
    let (s, t) = c.call("POST", &format!("/v1/jobs/{job}/stop"), Some(ACME), None);
    assert_eq!(s, 202, "{t}");
    let status = c.wait_trigger(&job, t["trigger_id"].as_str().unwrap());
    assert_eq!(status["status"], "FAILED", "{status}");
    let j = c.wait_state(&job, "RUNNING");
    assert_eq!(
        states(&j),
        ["CREATED", "SCHEDULED", "RUNNING", "FINISHING", "RUNNING"]
    );
    assert_eq!(j["restarts"], 0);
    // With the directory back, the stop succeeds.
    std::fs::remove_file(&savepoints).unwrap();
    std::fs::create_dir_all(&savepoints).unwrap();
    let (s, t) = c.call("POST", &format!("/v1/jobs/{job}/stop"), Some(ACME), None);
    assert_eq!(s, 202, "{t}");
    let status = c.wait_trigger(&job, t["trigger_id"].as_str().unwrap());
    assert_eq!(status["status"], "COMPLETED", "{status}");
    c.wait_state(&job, "FINISHED");
}

/// What a browser needs to drive the web UI: Debian's Chromium, Node.js and playwright-core
/// (installed by scripts/setup.sh under `${WEIR_TOOLS:-~/.cache/weir-tools}`). Missing, the
/// test fails: it is never skipped.
fn browser_tools() -> (&'static str, PathBuf) {
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("no Chromium: run scripts/setup.sh");
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.as_ref().is_ok_and(|o| o.status.success()),
        "no node: run scripts/setup.sh ({node:?})"
    );
    let tools = std::env::var_os("WEIR_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(&std::env::var_os("HOME").unwrap()).join(".cache/weir-tools"));
    let playwright = tools.join("playwright/node_modules/playwright-core");
    assert!(
        playwright.join("package.json").exists(),
        "no playwright-core at {}: run scripts/setup.sh",
        playwright.display()
    );
    (chromium, playwright)
}

/// The web UI as a user drives it, in a real browser (tests/ui/browser.mjs: Chromium through
/// playwright-core): with a token link, acme sees its running job and nothing of initech's;
/// it uploads word count by choosing the file and clicking Upload, fills in the submit form,
/// and sees the job FINISHED, with its output exactly the words of the input; a file that is
/// not a component and a submit outside acme's paths show the server's messages, which stay
/// until the next action succeeds or they are dismissed.
#[test]
fn the_web_ui_shows_a_tenants_jobs_in_a_real_browser() {
    let (chromium, playwright) = browser_tools();
    let c = Cluster::start("");
    // A job acme already runs, submitted over the API, and another tenant's component.
    let running = c.upload(ACME, "durable");
    let job = c.submit(
        ACME,
        durable_job(&running, &c.acme_dir.join("out"), 1_000_000, 100),
    );
    c.wait_state(&job, "RUNNING");
    let other = c.upload(INITECH, "faulty");

    // Word count's input, in acme's directory, and the words it holds (computed without weir).
    let input = c.acme_dir.join("ui-in");
    std::fs::create_dir_all(&input).unwrap();
    let mut text = String::new();
    for i in 0..2_000 {
        text.push_str(&format!(
            "The quick brown fox-{} jumps over the LAZY dog, {}; Straße x{}\n",
            i % 7,
            i % 13,
            i % 3
        ));
    }
    std::fs::write(input.join("words.txt"), &text).unwrap();
    let mut expected: std::collections::BTreeMap<String, u64> = Default::default();
    for w in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        *expected.entry(w.to_lowercase()).or_default() += 1;
    }
    let out = c.acme_dir.join("ui-out");
    let bad = c.dir.path().join("notes.txt");
    std::fs::write(&bad, "these are notes, not a component\n").unwrap();
    let outside = c.dir.path().join("globex/out");
    let screenshot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("web-ui.png");

    let run = Command::new("node")
        .arg(common::root().join("tests/ui/browser.mjs"))
        .env("WEIR_PLAYWRIGHT", &playwright)
        .env("WEIR_CHROMIUM", chromium)
        .env("WEIR_URL", &c.url)
        .env("WEIR_TOKEN", ACME)
        .env("WEIR_UI_WASM", guest("word_count"))
        .env(
            "WEIR_UI_ARGS",
            json!({"input": input.display().to_string(), "output": out.display().to_string()})
                .to_string(),
        )
        .env("WEIR_UI_PARALLELISM", "2")
        .env("WEIR_UI_BAD_FILE", &bad)
        .env("WEIR_UI_BAD_UPLOAD_TEXT", "not a WebAssembly file")
        .env(
            "WEIR_UI_BAD_ARGS",
            json!({"input": input.display().to_string(), "output": outside.display().to_string()})
                .to_string(),
        )
        .env(
            "WEIR_UI_BAD_SUBMIT_TEXT",
            "outside the tenant's allowed paths",
        )
        .env("WEIR_UI_SCREENSHOT", &screenshot)
        .output()
        .expect("cannot run node: run scripts/setup.sh");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "the browser run failed (screenshot: {}):\n{}\n{stdout}",
        screenshot.display(),
        String::from_utf8_lossy(&run.stderr),
    );
    let seen: Value = serde_json::from_str(&stdout).unwrap();

    // On opening: the overview, acme's running job and component, nothing of initech's; the
    // token left the address bar.
    assert!(
        seen["cluster"].as_str().unwrap().contains("slots free"),
        "{seen:#}"
    );
    assert!(!seen["address"].as_str().unwrap().contains(ACME));
    let initial = &seen["initial"];
    let listed = initial["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == job.as_str())
        .unwrap_or_else(|| panic!("the running job is not listed: {initial:#}"));
    assert_eq!(listed["cells"][1], "durable", "{listed}");
    assert_eq!(listed["cells"][2], "RUNNING", "{listed}");
    assert_eq!(listed["cells"][3], "acme", "{listed}");
    let ids = |rows: &Value| -> Vec<String> {
        rows.as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&initial["components"]), vec![running.clone()]);
    // Uploaded by clicking: the component, named by its file.
    let component = seen["component"]["id"].as_str().unwrap();
    let info = c.get(&format!("/v1/components/{component}"), ACME);
    assert_eq!(info["name"], "word_count.wasm", "{info}");
    assert_eq!(info["tenant"], "acme", "{info}");
    // Submitted with the form: it finished, with exactly the input's words.
    let submitted = seen["job"]["id"].as_str().unwrap();
    let j = c.get(&format!("/v1/jobs/{submitted}"), ACME);
    assert_eq!(
        (&j["state"], &j["tenant"], &j["name"]),
        (&json!("FINISHED"), &json!("acme"), &json!("word-count")),
        "{j:#}"
    );
    assert_eq!(j["operators"][0]["parallelism"], 2, "{j:#}");
    assert!(
        seen["job"]["summary"]
            .as_str()
            .unwrap()
            .starts_with("FINISHED · tenant acme"),
        "{seen:#}"
    );
    let mut counts: std::collections::BTreeMap<String, Vec<u64>> = Default::default();
    for v in read_json_lines(&out) {
        counts
            .entry(v["word"].as_str().unwrap().to_string())
            .or_default()
            .push(v["count"].as_u64().unwrap());
    }
    assert_eq!(
        counts.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
    for (word, mut updates) in counts {
        updates.sort_unstable();
        assert_eq!(
            updates,
            (1..=expected[&word]).collect::<Vec<_>>(),
            "the counts of '{word}'"
        );
    }
    // The server's messages, shown and kept.
    for (case, text, status) in [
        (
            "bad_upload",
            "not a WebAssembly file",
            "(422 invalid_component)",
        ),
        (
            "bad_submit",
            "outside the tenant's allowed paths",
            "(400 path_not_allowed)",
        ),
    ] {
        let error = seen[case]["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(text) && error.ends_with(status),
            "{case}: {error}"
        );
        assert!(seen[case]["still_shown_after_ms"].as_u64() >= Some(4_000));
    }
    assert_eq!(seen["bad_upload"]["cleared_by_a_successful_upload"], true);
    assert_eq!(seen["bad_submit"]["dismissed"], true);
    // Nothing was made of the refused requests.
    let components = ids(&seen["final"]["components"]);
    assert_eq!(components.len(), 2, "{components:?}");
    assert!(components.contains(&component.to_string()));
    assert_eq!(seen["final"]["jobs"].as_array().unwrap().len(), 2);
    // Nothing of initech's, anywhere on the page.
    let page = seen["final"]["text"].as_str().unwrap();
    assert!(
        !page.contains(&other) && !page.contains("initech-token"),
        "{page}"
    );
    assert!(!components.contains(&other));
    // A thin client: the page loaded its files and called the API, nothing else.
    for r in seen["requests"].as_array().unwrap() {
        let (_, path) = r.as_str().unwrap().split_once(' ').unwrap();
        assert!(
            path == "/" || path.starts_with("/ui/") || path.starts_with("/v1/"),
            "the page requested {r}"
        );
    }

    c.call("POST", &format!("/v1/jobs/{job}/cancel"), Some(ACME), None);
    c.wait_state(&job, "CANCELED");
}

#[test]
fn jobs_running_when_the_server_dies_continue_after_a_restart() {
    let mut c = Cluster::start("");
    let id = c.upload(ACME, "durable");
    let out = c.acme_dir.join("out");
    let total = 30_000;
    let job = c.submit(ACME, durable_job(&id, &out, total, 2_000));
    c.wait_job(&job, "checkpointed", |j| {
        j["last_checkpoint"]["id"].as_u64() >= Some(2)
    });
    c.crash_and_restart();
    // Same id, same tenant, continued from its latest checkpoint; the output is exactly once.
    let j = c.wait_state(&job, "FINISHED");
    assert_eq!(j["tenant"], "acme");
    let ex = c.get(&format!("/v1/jobs/{job}/exceptions"), ACME);
    assert!(
        ex["exceptions"][0]["message"]
            .as_str()
            .unwrap()
            .contains("recovered from its latest checkpoint"),
        "{ex}"
    );
    check_exactly_once(&out, total);
    // Ended, it is not recovered again.
    c.crash_and_restart();
    let (s, _) = c.call("GET", &format!("/v1/jobs/{job}"), Some(ACME), None);
    assert_eq!(s, 404);
}

/// Every byte under `dir`, in-progress and hidden files included.
fn all_bytes_under(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(all_bytes_under(&p));
        } else {
            out.extend(std::fs::read(&p).unwrap_or_default());
        }
    }
    out
}

/// A file source reading a directory slowly; while it reads its first file, a file it has not
/// reached yet (one job) or the whole directory (another) is swapped for a symlink to files
/// outside the tenant's paths. The job fails with "not allowed"; nothing of those files ever
/// reaches the output.
#[test]
fn a_source_swapped_for_a_symlink_while_the_job_reads_is_not_followed() {
    let c = Cluster::start("");
    let id = c.upload(ACME, "durable");
    let secret = c.dir.path().join("secret.txt");
    let secrets = c.dir.path().join("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    let secret_lines: String = (0..50).map(|i| format!("SECRET{i} {i}\n")).collect();
    std::fs::write(&secret, &secret_lines).unwrap();
    std::fs::write(secrets.join("b.txt"), &secret_lines).unwrap();
    let mut jobs = Vec::new();
    for case in ["file", "dir"] {
        let input = c.acme_dir.join(format!("in-{case}"));
        std::fs::create_dir_all(&input).unwrap();
        // Three seconds of reading at 100 records a second before b.txt is reached; long
        // lines, so that b.txt is not even opened ahead of time (the source reads ahead a
        // few 256 KiB chunks).
        let pad = "x".repeat(8 << 10);
        let first: String = (0..300)
            .map(|i| format!("k{} {i} {pad}\n", i % 5))
            .collect();
        std::fs::write(input.join("a.txt"), first).unwrap();
        std::fs::write(input.join("b.txt"), "k9 0\n").unwrap();
        let out = c.acme_dir.join(format!("out-{case}"));
        let job = c.submit(
            ACME,
            json!({
                "component": id,
                "parallelism": 1,
                "args": {
                    "source": "file",
                    "input": input.display().to_string(),
                    "output": out.display().to_string(),
                    "rate": "100",
                },
                "checkpoint_interval_ms": 100,
                "restart_attempts": 0,
            }),
        );
        jobs.push((job, input, out, case));
    }
    for (job, input, _, case) in &jobs {
        c.wait_state(job, "RUNNING");
        if *case == "file" {
            std::fs::remove_file(input.join("b.txt")).unwrap();
            std::os::unix::fs::symlink(&secret, input.join("b.txt")).unwrap();
        } else {
            std::fs::rename(input, c.acme_dir.join("in-dir.old")).unwrap();
            std::os::unix::fs::symlink(&secrets, input).unwrap();
        }
    }
    for (job, _, out, case) in &jobs {
        let j = c.wait_job(job, "ended", |j| {
            j["state"] == "FAILED" || j["state"] == "FINISHED"
        });
        let written = String::from_utf8_lossy(&all_bytes_under(out)).to_string();
        assert!(
            !written.contains("SECRET"),
            "{case}: the secret reached the output"
        );
        assert_eq!(j["state"], "FAILED", "{case}: {j:#}");
        let failure = j["failure"].as_str().unwrap();
        assert!(failure.contains("is not allowed"), "{case}: {failure}");
        for leak in ["secret", "SECRET"] {
            assert!(!failure.contains(leak), "{case}: {failure}");
        }
    }
}

/// A FIFO as a file source's input is refused: at submission, and at the start of a job
/// whose input became one while it waited for slots (it fails, rather than blocking on a
/// read that never ends). The server answers throughout.
#[test]
fn a_fifo_as_input_is_refused_and_nothing_blocks_on_it() {
    let c = Cluster::start("");
    let wc = c.upload(ACME, "word_count");
    let fifo = c.acme_dir.join("fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let job = |input: &Path, out: &str| {
        json!({
            "component": wc,
            "parallelism": 1,
            "args": {
                "input": input.display().to_string(),
                "output": c.acme_dir.join(out).display().to_string(),
            },
        })
    };
    let (s, v) = c.call("POST", "/v1/jobs", Some(ACME), Some(job(&fifo, "o1")));
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["error"]["code"], "path_not_allowed", "{v}");
    let m = v["error"]["message"].as_str().unwrap();
    assert!(m.contains("not a regular file"), "{m}");
    // A regular file at submission, a FIFO by the time the job starts.
    let durable = c.upload(ACME, "durable");
    let mut big = durable_job(&durable, &c.acme_dir.join("big"), 1_000_000, 100);
    big["parallelism"] = json!(6);
    let big = c.submit(ACME, big);
    c.wait_state(&big, "RUNNING");
    let later = c.acme_dir.join("later.txt");
    std::fs::write(&later, "a b c\n").unwrap();
    let mut queued = job(&later, "o2");
    queued["wait"] = json!(true);
    let queued = c.submit(ACME, queued);
    std::fs::remove_file(&later).unwrap();
    let made = Command::new("mkfifo").arg(&later).status().unwrap();
    assert!(made.success());
    c.call("POST", &format!("/v1/jobs/{big}/cancel"), Some(ACME), None);
    let until = Instant::now() + Duration::from_secs(30);
    let j = loop {
        let j = c.get(&format!("/v1/jobs/{queued}"), ACME);
        let state = j["state"].as_str().unwrap().to_string();
        if ["FAILED", "FINISHED", "CANCELED"].contains(&state.as_str()) {
            break j;
        }
        if Instant::now() > until {
            // Blocked on the FIFO: a cancel must still end it promptly.
            c.call(
                "POST",
                &format!("/v1/jobs/{queued}/cancel"),
                Some(ACME),
                None,
            );
            let cancel_until = Instant::now() + Duration::from_secs(10);
            let mut j = j;
            while Instant::now() < cancel_until && j["state"] != "CANCELED" {
                std::thread::sleep(Duration::from_millis(100));
                j = c.get(&format!("/v1/jobs/{queued}"), ACME);
            }
            panic!("the job read the FIFO (after a cancel: {})", j["state"]);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(j["state"], "FAILED", "{j:#}");
    let failure = j["failure"].as_str().unwrap();
    assert!(failure.contains("not a regular file"), "{failure}");
    c.wait_state(&big, "CANCELED");
    let (s, _) = c.call("GET", "/v1/overview", Some(ADMIN), None);
    assert_eq!(s, 200);
}

/// A path outside the tenant's directories gets one answer, whether it exists or not and
/// wherever a symlink leads: "not allowed", naming only the path as sent.
#[test]
fn path_errors_tell_a_tenant_nothing_about_the_servers_files() {
    let c = Cluster::start("");
    let wc = c.upload(ACME, "word_count");
    std::os::unix::fs::symlink("/etc", c.acme_dir.join("etc-link")).unwrap();
    std::os::unix::fs::symlink("/nonexistent-target-w31r", c.acme_dir.join("dangling")).unwrap();
    let inputs: Vec<PathBuf> = vec![
        "/etc/shadow".into(),
        "/nonexistent/x".into(),
        c.acme_dir.join("etc-link"),
        c.acme_dir.join("etc-link/shadow"),
        c.acme_dir.join("etc-link/nonexistent"),
        c.acme_dir.join("dangling"),
        c.acme_dir.join("dangling/x"),
        c.acme_dir.join("nothere/../../globex"),
    ];
    let mut shapes = Vec::new();
    for input in &inputs {
        let sent = input.display().to_string();
        let (s, v) = c.call(
            "POST",
            "/v1/jobs",
            Some(ACME),
            Some(json!({
                "component": wc,
                "args": {"input": sent, "output": c.acme_dir.join("o").display().to_string()},
            })),
        );
        assert_eq!(s, 400, "{sent}: {v}");
        assert_eq!(v["error"]["code"], "path_not_allowed", "{sent}: {v}");
        let m = v["error"]["message"].as_str().unwrap();
        assert!(m.contains("is not allowed"), "{sent}: {m}");
        // What is left once the path as sent is taken out says nothing of the server.
        let shape = m.replace(&sent, "<path>");
        for leak in [
            "exist",
            "/etc",
            "shadow",
            "nonexistent-target",
            "resolves",
            "globex",
            "No such file",
        ] {
            assert!(!shape.contains(leak), "{sent}: '{m}' says '{leak}'");
        }
        assert!(
            !shape.contains(&*c.dir.path().to_string_lossy()),
            "{sent}: {m}"
        );
        shapes.push(shape);
    }
    for (input, shape) in inputs.iter().zip(&shapes) {
        assert_eq!(shape, &shapes[0], "{}", input.display());
    }
}
