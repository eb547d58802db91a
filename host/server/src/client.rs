//! The `weir` commands that talk to a session cluster over its REST API.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use serde::de::DeserializeOwned;
use serde_json::Value;
use weir_api::{ComponentList, ErrorBody, JobList, SavepointList, StopRequest, TriggerAnswer};
use weir_jobmanager::components::ComponentInfo;
use weir_jobmanager::disk::SavepointInfo;
use weir_jobmanager::job::{JobDetails, SavepointStatus, SubmitJob, TriggerStatus};
use weir_jobmanager::ClusterOverview;

/// What the cluster answered: its JSON as sent (what `--json` prints) and the typed value.
pub struct Answer<T> {
    json: Value,
    value: T,
}

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

    /// Sends `request` (`what` names it in errors); an error answer's `ErrorBody` becomes
    /// the error.
    fn send<T: DeserializeOwned>(
        &self,
        what: &str,
        request: reqwest::blocking::RequestBuilder,
    ) -> anyhow::Result<Answer<T>> {
        let response = request
            .bearer_auth(&self.token)
            .send()
            .with_context(|| format!("cannot reach the cluster at {}", self.url))?;
        let status = response.status();
        let json: Value = response
            .json()
            .with_context(|| format!("the cluster answered {status} with no JSON"))?;
        if !status.is_success() {
            match serde_json::from_value::<ErrorBody>(json) {
                Ok(ErrorBody { error }) => bail!("{} ({status}, {})", error.message, error.code),
                Err(_) => bail!("the cluster answered {status}"),
            }
        }
        // Decoded into the type the server encodes it from: a field renamed there fails
        // to compile here.
        let value = serde_json::from_value(json.clone()).with_context(|| {
            format!("the cluster's answer to {what} is not what this weir understands")
        })?;
        Ok(Answer { json, value })
    }

    fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<Answer<T>> {
        self.send(
            &format!("GET {path}"),
            self.http.get(format!("{}{path}", self.url)),
        )
    }

    /// POSTs `body` as JSON, or nothing.
    fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Answer<T>> {
        let request = self.http.post(format!("{}{path}", self.url));
        let request = match body {
            Some(body) => request.json(&body),
            None => request,
        };
        self.send(&format!("POST {path}"), request)
    }

    fn delete<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<Answer<T>> {
        self.send(
            &format!("DELETE {path}"),
            self.http.delete(format!("{}{path}", self.url)),
        )
    }

    /// Uploads a component file.
    pub fn upload(&self, file: &PathBuf) -> anyhow::Result<Answer<ComponentInfo>> {
        let bytes =
            std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.send(
            "POST /v1/components",
            self.http
                .post(format!("{}/v1/components", self.url))
                .query(&[("name", name)])
                .header("content-type", "application/wasm")
                .body(bytes),
        )
    }

    /// Prints the answer's JSON, or `table()`'s text.
    pub fn print<T>(&self, answer: &Answer<T>, table: impl FnOnce(&T) -> String) {
        if self.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&answer.json).expect("JSON values print")
            );
        } else {
            print!("{}", table(&answer.value));
        }
    }

    /// Polls a savepoint trigger until it completes or fails.
    fn await_trigger(&self, job: &str, trigger: &str) -> anyhow::Result<Answer<SavepointStatus>> {
        let until = Instant::now() + Duration::from_secs(600);
        loop {
            let status: Answer<SavepointStatus> =
                self.get(&format!("/v1/jobs/{job}/savepoints/{trigger}"))?;
            match status.value.status {
                TriggerStatus::Completed => return Ok(status),
                TriggerStatus::Failed => bail!(
                    "the savepoint failed: {}",
                    status.value.failure.as_deref().unwrap_or("?")
                ),
                TriggerStatus::InProgress if Instant::now() > until => {
                    bail!("the savepoint did not complete in 10 minutes")
                }
                TriggerStatus::InProgress => std::thread::sleep(Duration::from_millis(100)),
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
            i.id,
            i.size,
            i.sha256,
            i.plan
                .as_ref()
                .map(|p| format!("  job '{}'", p.job))
                .unwrap_or_default()
        )
    });
    Ok(())
}

/// `weir submit`.
pub fn submit(c: &Client, a: SubmitArgs) -> anyhow::Result<()> {
    let component = if std::path::Path::new(&a.component).is_file() {
        c.upload(&PathBuf::from(&a.component))?.value.id
    } else {
        a.component
    };
    let request = SubmitJob {
        component,
        parallelism: Some(a.parallelism),
        args: a.args.into_iter().collect(),
        state_backend: Some(a.state_backend),
        checkpoint_interval_ms: a.checkpoint_interval.map(|i| i.as_millis() as u64),
        from_savepoint: a.from_savepoint,
        allow_non_restored_state: a.allow_non_restored_state,
        restart_attempts: a.restart_attempts,
        wait: a.wait_for_slots,
    };
    let job: Answer<JobDetails> = c.post("/v1/jobs", Some(serde_json::to_value(request)?))?;
    c.print(&job, |j| {
        format!("{}  {}  {}\n", j.id, j.state.name(), j.name)
    });
    Ok(())
}

/// `weir list`.
pub fn list(c: &Client) -> anyhow::Result<()> {
    let jobs: Answer<JobList> = c.get("/v1/jobs")?;
    c.print(&jobs, |JobList { jobs }| {
        let mut rows = vec![[
            "JOB ID".to_string(),
            "STATE".into(),
            "NAME".into(),
            "TENANT".into(),
            "SLOTS".into(),
            "RESTARTS".into(),
        ]];
        for j in jobs {
            rows.push([
                j.id.clone(),
                j.state.name().into(),
                j.name.clone(),
                j.tenant.clone(),
                j.slots.to_string(),
                j.restarts.to_string(),
            ]);
        }
        table(&rows)
    });
    Ok(())
}

/// `weir components`.
pub fn components(c: &Client) -> anyhow::Result<()> {
    let list: Answer<ComponentList> = c.get("/v1/components")?;
    c.print(&list, |ComponentList { components }| {
        let mut rows = vec![[
            "ID".to_string(),
            "NAME".into(),
            "JOB".into(),
            "BYTES".into(),
        ]];
        for i in components {
            rows.push([
                i.id.clone(),
                i.name.as_deref().unwrap_or("-").into(),
                i.plan.as_ref().map_or("-", |p| p.job.as_str()).into(),
                i.size.to_string(),
            ]);
        }
        table(&rows)
    });
    Ok(())
}

/// `weir status`.
pub fn status(c: &Client, job: &str) -> anyhow::Result<()> {
    let j: Answer<JobDetails> = c.get(&format!("/v1/jobs/{job}"))?;
    c.print(&j, |j| {
        let mut out = format!(
            "job {} '{}'  {}  tenant {}  slots {}  restarts {}\n",
            j.id,
            j.name,
            j.state.name(),
            j.tenant,
            j.slots,
            j.restarts
        );
        if let Some(f) = &j.failure {
            out += &format!("failure: {f}\n");
        }
        if let Some(s) = &j.savepoint {
            out += &format!("savepoint: {s}\n");
        }
        if let Some(c) = &j.last_checkpoint {
            out += &format!(
                "last checkpoint: {} ({} ms, {} bytes)\n",
                c.id, c.duration_ms, c.state_bytes
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
        for o in &j.operators {
            rows.push([
                o.uid.clone(),
                o.parallelism.to_string(),
                o.records_in.to_string(),
                o.records_out.to_string(),
                format!("{:.0}", o.records_in_per_second),
                format!("{:.0}", o.records_out_per_second),
            ]);
        }
        out + &table(&rows)
    });
    Ok(())
}

/// `weir cancel`.
pub fn cancel(c: &Client, job: &str) -> anyhow::Result<()> {
    let j: Answer<JobDetails> = c.post(&format!("/v1/jobs/{job}/cancel"), None)?;
    c.print(&j, |j| format!("{}  {}\n", j.id, j.state.name()));
    Ok(())
}

/// `weir savepoint` (the job goes on) and `weir stop --savepoint`.
pub fn savepoint(c: &Client, job: &str, stop: bool, drain: bool) -> anyhow::Result<()> {
    let trigger: Answer<TriggerAnswer> = if stop {
        let request = serde_json::to_value(StopRequest { drain })?;
        c.post(&format!("/v1/jobs/{job}/stop"), Some(request))?
    } else {
        c.post(&format!("/v1/jobs/{job}/savepoints"), None)?
    };
    let status = c.await_trigger(job, &trigger.value.trigger_id)?;
    c.print(&status, |s| {
        format!("savepoint: {}\n", s.location.as_deref().unwrap_or("?"))
    });
    Ok(())
}

/// `weir savepoints`: the caller's savepoints and its disk use.
pub fn savepoints(c: &Client) -> anyhow::Result<()> {
    let list: Answer<SavepointList> = c.get("/v1/savepoints")?;
    let overview: Answer<ClusterOverview> = c.get("/v1/overview")?;
    c.print(&list, |SavepointList { savepoints }| {
        let mut rows = vec![[
            "NAME".to_string(),
            "JOB".into(),
            "BYTES".into(),
            "LOCATION".into(),
        ]];
        for s in savepoints {
            rows.push([
                s.name.clone(),
                s.job.as_deref().unwrap_or("-").into(),
                s.bytes.to_string(),
                s.location.clone(),
            ]);
        }
        let mut out = table(&rows);
        if let Some(usage) = &overview.value.usage {
            out.push_str(&format!(
                "disk: {} of {} bytes\n",
                usage.disk_bytes, usage.max_disk_bytes
            ));
        }
        out
    });
    Ok(())
}

/// `weir dispose-savepoint NAME`.
pub fn dispose_savepoint(c: &Client, name: &str) -> anyhow::Result<()> {
    let deleted: Answer<SavepointInfo> = c.delete(&format!("/v1/savepoints/{name}"))?;
    c.print(&deleted, |s| {
        format!("deleted savepoint {} ({} bytes)\n", s.name, s.bytes)
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
