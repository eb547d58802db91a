//! The `weir` commands that talk to a session cluster over its REST API.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use serde_json::{json, Value};

/// `--url`, `--token`, `--json`: how to reach the cluster and how to answer.
#[derive(clap::Args, Clone)]
pub struct ClusterArgs {
    /// The cluster's REST address.
    #[arg(long, env = "WEIR_URL", default_value = "http://127.0.0.1:8081")]
    pub url: String,
    /// A tenant's (or the admin's) API token.
    #[arg(long, env = "WEIR_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The REST client.
pub struct Client {
    http: reqwest::blocking::Client,
    url: String,
    token: String,
    /// Print JSON.
    pub json: bool,
}

impl Client {
    /// A client for `args`.
    pub fn new(args: &ClusterArgs) -> anyhow::Result<Client> {
        let token = args
            .token
            .clone()
            .ok_or_else(|| anyhow!("no token: pass --token or set WEIR_TOKEN"))?;
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(120))
            // A connection the server may have closed as idle (after 10 s by default) is
            // not reused.
            .pool_idle_timeout(Duration::from_secs(5))
            .build()?;
        Ok(Client {
            http,
            url: args.url.trim_end_matches('/').to_string(),
            token,
            json: args.json,
        })
    }

    fn send(&self, request: reqwest::blocking::RequestBuilder) -> anyhow::Result<Value> {
        let response = request
            .bearer_auth(&self.token)
            .send()
            .with_context(|| format!("cannot reach the cluster at {}", self.url))?;
        let status = response.status();
        let body: Value = response
            .json()
            .with_context(|| format!("the cluster answered {status} with no JSON"))?;
        if status.is_success() {
            return Ok(body);
        }
        match body.pointer("/error/message").and_then(Value::as_str) {
            Some(message) => bail!(
                "{message} ({status}, {})",
                body.pointer("/error/code")
                    .and_then(Value::as_str)
                    .unwrap_or("?")
            ),
            None => bail!("the cluster answered {status}"),
        }
    }

    fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.send(self.http.get(format!("{}{path}", self.url)))
    }

    fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.send(self.http.post(format!("{}{path}", self.url)).json(&body))
    }

    fn delete(&self, path: &str) -> anyhow::Result<Value> {
        self.send(self.http.delete(format!("{}{path}", self.url)))
    }

    /// Uploads a component file; answers its id.
    pub fn upload(&self, file: &PathBuf) -> anyhow::Result<Value> {
        let bytes =
            std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.send(
            self.http
                .post(format!("{}/v1/components", self.url))
                .query(&[("name", name)])
                .header("content-type", "application/wasm")
                .body(bytes),
        )
    }

    /// Prints `value` as JSON, or `table()`'s text.
    pub fn print(&self, value: &Value, table: impl FnOnce(&Value) -> String) {
        if self.json {
            println!(
                "{}",
                serde_json::to_string_pretty(value).expect("JSON values print")
            );
        } else {
            print!("{}", table(value));
        }
    }

    /// Polls a savepoint trigger until it completes or fails.
    fn await_trigger(&self, job: &str, trigger: &str) -> anyhow::Result<Value> {
        let until = Instant::now() + Duration::from_secs(600);
        loop {
            let status = self.get(&format!("/v1/jobs/{job}/savepoints/{trigger}"))?;
            match status["status"].as_str() {
                Some("COMPLETED") => return Ok(status),
                Some("FAILED") => bail!(
                    "the savepoint failed: {}",
                    status["failure"].as_str().unwrap_or("?")
                ),
                _ if Instant::now() > until => {
                    bail!("the savepoint did not complete in 10 minutes")
                }
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }
}

/// What `weir submit` asks for.
#[derive(clap::Args)]
pub struct SubmitArgs {
    /// A component id, or a `.wasm` file to upload first.
    pub component: String,
    /// Default parallelism of every operator.
    #[arg(short, long, default_value_t = 1)]
    pub parallelism: u32,
    /// A job argument, `key=value` (repeatable).
    #[arg(long = "arg", value_name = "KEY=VALUE", value_parser = crate::parse_arg)]
    pub args: Vec<(String, String)>,
    /// `memory` or `rocksdb`.
    #[arg(long, default_value = "memory")]
    pub state_backend: String,
    /// Time between checkpoints, e.g. `1s`.
    #[arg(long, value_parser = crate::parse_duration)]
    pub checkpoint_interval: Option<Duration>,
    /// Start from this savepoint (a location `weir savepoint` or `weir stop` printed).
    #[arg(long)]
    pub from_savepoint: Option<String>,
    /// Drop state of operators the job no longer has.
    #[arg(long)]
    pub allow_non_restored_state: bool,
    /// Restarts allowed after task failures.
    #[arg(long)]
    pub restart_attempts: Option<u32>,
    /// Wait for free slots instead of failing.
    #[arg(long)]
    pub wait_for_slots: bool,
}

/// `weir upload`.
pub fn upload(c: &Client, file: &PathBuf) -> anyhow::Result<()> {
    let info = c.upload(file)?;
    c.print(&info, |i| {
        format!(
            "{}  {} bytes  sha256 {}{}\n",
            i["id"].as_str().unwrap_or("?"),
            i["size"],
            i["sha256"].as_str().unwrap_or("?"),
            i.pointer("/plan/job")
                .and_then(Value::as_str)
                .map(|j| format!("  job '{j}'"))
                .unwrap_or_default()
        )
    });
    Ok(())
}

/// `weir submit`.
pub fn submit(c: &Client, a: SubmitArgs) -> anyhow::Result<()> {
    let component = if std::path::Path::new(&a.component).is_file() {
        let info = c.upload(&PathBuf::from(&a.component))?;
        info["id"].as_str().unwrap_or_default().to_string()
    } else {
        a.component
    };
    let args: serde_json::Map<String, Value> = a
        .args
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    let mut body = json!({
        "component": component,
        "parallelism": a.parallelism,
        "args": args,
        "state_backend": a.state_backend,
        "allow_non_restored_state": a.allow_non_restored_state,
        "wait": a.wait_for_slots,
    });
    if let Some(i) = a.checkpoint_interval {
        body["checkpoint_interval_ms"] = json!(i.as_millis() as u64);
    }
    if let Some(s) = a.from_savepoint {
        body["from_savepoint"] = json!(s);
    }
    if let Some(r) = a.restart_attempts {
        body["restart_attempts"] = json!(r);
    }
    let job = c.post("/v1/jobs", body)?;
    c.print(&job, |j| {
        format!(
            "{}  {}  {}\n",
            j["id"].as_str().unwrap_or("?"),
            j["state"].as_str().unwrap_or("?"),
            j["name"].as_str().unwrap_or("?")
        )
    });
    Ok(())
}

/// `weir list`.
pub fn list(c: &Client) -> anyhow::Result<()> {
    let jobs = c.get("/v1/jobs")?;
    c.print(&jobs, |v| {
        let mut rows = vec![[
            "JOB ID".to_string(),
            "STATE".into(),
            "NAME".into(),
            "TENANT".into(),
            "SLOTS".into(),
            "RESTARTS".into(),
        ]];
        for j in v["jobs"].as_array().into_iter().flatten() {
            rows.push([
                j["id"].as_str().unwrap_or("?").into(),
                j["state"].as_str().unwrap_or("?").into(),
                j["name"].as_str().unwrap_or("?").into(),
                j["tenant"].as_str().unwrap_or("?").into(),
                j["slots"].to_string(),
                j["restarts"].to_string(),
            ]);
        }
        table(&rows)
    });
    Ok(())
}

/// `weir components`.
pub fn components(c: &Client) -> anyhow::Result<()> {
    let list = c.get("/v1/components")?;
    c.print(&list, |v| {
        let mut rows = vec![[
            "ID".to_string(),
            "NAME".into(),
            "JOB".into(),
            "BYTES".into(),
        ]];
        for i in v["components"].as_array().into_iter().flatten() {
            rows.push([
                i["id"].as_str().unwrap_or("?").into(),
                i["name"].as_str().unwrap_or("-").into(),
                i.pointer("/plan/job")
                    .and_then(Value::as_str)
                    .unwrap_or("-")
                    .into(),
                i["size"].to_string(),
            ]);
        }
        table(&rows)
    });
    Ok(())
}

/// `weir status`.
pub fn status(c: &Client, job: &str) -> anyhow::Result<()> {
    let j = c.get(&format!("/v1/jobs/{job}"))?;
    c.print(&j, |j| {
        let mut out = format!(
            "job {} '{}'  {}  tenant {}  slots {}  restarts {}\n",
            j["id"].as_str().unwrap_or("?"),
            j["name"].as_str().unwrap_or("?"),
            j["state"].as_str().unwrap_or("?"),
            j["tenant"].as_str().unwrap_or("?"),
            j["slots"],
            j["restarts"]
        );
        if let Some(f) = j["failure"].as_str() {
            out += &format!("failure: {f}\n");
        }
        if let Some(s) = j["savepoint"].as_str() {
            out += &format!("savepoint: {s}\n");
        }
        if let Some(c) = j.get("last_checkpoint").filter(|c| !c.is_null()) {
            out += &format!(
                "last checkpoint: {} ({} ms, {} bytes)\n",
                c["id"], c["duration_ms"], c["state_bytes"]
            );
        }
        let mut rows = vec![[
            "OPERATOR".to_string(),
            "PAR".into(),
            "RECORDS IN".into(),
            "RECORDS OUT".into(),
            "IN/S".into(),
            "OUT/S".into(),
        ]];
        for o in j["operators"].as_array().into_iter().flatten() {
            rows.push([
                o["uid"].as_str().unwrap_or("?").into(),
                o["parallelism"].to_string(),
                o["records_in"].to_string(),
                o["records_out"].to_string(),
                format!("{:.0}", o["records_in_per_second"].as_f64().unwrap_or(0.0)),
                format!("{:.0}", o["records_out_per_second"].as_f64().unwrap_or(0.0)),
            ]);
        }
        out + &table(&rows)
    });
    Ok(())
}

/// `weir cancel`.
pub fn cancel(c: &Client, job: &str) -> anyhow::Result<()> {
    let j = c.post(&format!("/v1/jobs/{job}/cancel"), json!({}))?;
    c.print(&j, |j| {
        format!(
            "{}  {}\n",
            j["id"].as_str().unwrap_or("?"),
            j["state"].as_str().unwrap_or("?")
        )
    });
    Ok(())
}

/// `weir savepoint` (the job goes on) and `weir stop --savepoint`.
pub fn savepoint(c: &Client, job: &str, stop: bool, drain: bool) -> anyhow::Result<()> {
    let answer = if stop {
        c.post(&format!("/v1/jobs/{job}/stop"), json!({ "drain": drain }))?
    } else {
        c.post(&format!("/v1/jobs/{job}/savepoints"), json!({}))?
    };
    let trigger = answer["trigger_id"]
        .as_str()
        .ok_or_else(|| anyhow!("the cluster answered no trigger id"))?;
    let status = c.await_trigger(job, trigger)?;
    c.print(&status, |s| {
        format!("savepoint: {}\n", s["location"].as_str().unwrap_or("?"))
    });
    Ok(())
}

/// `weir savepoints`: the caller's savepoints and its disk use.
pub fn savepoints(c: &Client) -> anyhow::Result<()> {
    let list = c.get("/v1/savepoints")?;
    let usage = c.get("/v1/overview")?["usage"].clone();
    c.print(&list, |v| {
        let mut rows = vec![[
            "NAME".to_string(),
            "JOB".into(),
            "BYTES".into(),
            "LOCATION".into(),
        ]];
        for s in v["savepoints"].as_array().into_iter().flatten() {
            rows.push([
                s["name"].as_str().unwrap_or("?").into(),
                s["job"].as_str().unwrap_or("-").into(),
                s["bytes"].to_string(),
                s["location"].as_str().unwrap_or("?").into(),
            ]);
        }
        let mut out = table(&rows);
        if let (Some(used), Some(max)) = (
            usage["disk_bytes"].as_u64(),
            usage["max_disk_bytes"].as_u64(),
        ) {
            out.push_str(&format!("disk: {used} of {max} bytes\n"));
        }
        out
    });
    Ok(())
}

/// `weir dispose-savepoint NAME`.
pub fn dispose_savepoint(c: &Client, name: &str) -> anyhow::Result<()> {
    let deleted = c.delete(&format!("/v1/savepoints/{name}"))?;
    c.print(&deleted, |s| {
        format!(
            "deleted savepoint {} ({} bytes)\n",
            s["name"].as_str().unwrap_or("?"),
            s["bytes"]
        )
    });
    Ok(())
}

fn table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for r in rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for r in rows {
        let cells: Vec<String> = r
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out += cells.join("  ").trim_end();
        out.push('\n');
    }
    out
}
