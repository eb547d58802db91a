//! `weir`: run stream-processing jobs written as WebAssembly components.
//!
//! - `weir run job.wasm --parallelism 2 --arg input=in.txt` runs a job locally in this
//!   process (Flink's local environment) and prints a summary when it ends.
//! - `weir plan job.wasm` prints the job's dataflow graph.
//! - `weir new my-job` creates a job crate that depends on the weir SDK.
//! - `weir serve` runs a session cluster; `weir upload`, `submit`, `list`, `status`,
//!   `cancel`, `savepoint` and `stop` talk to one over its REST API.

mod client;
mod scaffold;
mod serve;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};
use weir_runtime::{Runtime, RuntimeConfig};
use weir_worker::{
    run_job, CheckpointConfig, CheckpointMode, JobCommand, JobError, JobEvent, JobLink, JobOptions,
    RestartStrategy, StateBackendKind,
};

#[derive(Parser)]
#[command(
    name = "weir",
    version,
    about = "Stream processing with WebAssembly components"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs a job locally until its bounded input ends (or Ctrl-C).
    Run {
        /// The job component (`.wasm`, built for wasm32-wasip2).
        component: PathBuf,
        #[command(flatten)]
        job: JobArgs,
        /// Largest linear memory of one guest instance, in MiB.
        #[arg(long, default_value_t = 512)]
        max_memory_mib: usize,
        /// Longest one call into guest code may run, in seconds.
        #[arg(long, default_value_t = 30.0)]
        call_timeout: f64,
        /// Most output one call into guest code may return, in MiB.
        #[arg(long, default_value_t = 64)]
        max_call_output_mib: usize,
        #[command(flatten)]
        durable: Box<DurableArgs>,
    },
    /// Prints a job's dataflow graph.
    Plan {
        /// The job component.
        component: PathBuf,
        #[command(flatten)]
        job: JobArgs,
    },
    /// Lists the completed checkpoints of a job under a checkpoint directory.
    Checkpoints {
        /// The checkpoint directory (`--checkpoint-dir` of `weir run`).
        dir: String,
        /// The job's id (its name unless `--job-id` was given to `weir run`).
        #[arg(long)]
        job_id: String,
    },
    /// Runs a session cluster: many tenants' jobs behind a REST API (default
    /// 127.0.0.1:8081), until SIGTERM or Ctrl-C.
    Serve {
        /// The configuration (TOML: [server] and [[tenants]]); without one, a single
        /// tenant with a token printed at start.
        #[arg(long, env = "WEIR_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Uploads a component to a cluster.
    Upload {
        /// The `.wasm` file.
        file: PathBuf,
        #[command(flatten)]
        cluster: client::ClusterArgs,
    },
    /// Submits a job to a cluster (uploading the component first if given a file).
    Submit {
        #[command(flatten)]
        submit: client::SubmitArgs,
        #[command(flatten)]
        cluster: client::ClusterArgs,
    },
    /// Lists a cluster's jobs.
    List {
        #[command(flatten)]
        cluster: client::ClusterArgs,
    },
    /// Lists a cluster's components.
    Components {
        #[command(flatten)]
        cluster: client::ClusterArgs,
    },
    /// Shows a job on a cluster.
    Status {
        /// Job id.
        job: String,
        #[command(flatten)]
        cluster: client::ClusterArgs,
    },
    /// Cancels a job on a cluster.
    Cancel {
        /// Job id.
        job: String,
        #[command(flatten)]
        cluster: client::ClusterArgs,
    },
    /// Takes a savepoint of a job on a cluster (the job goes on); prints its location.
    Savepoint {
        /// Job id.
        job: String,
        #[command(flatten)]
        cluster: client::ClusterArgs,
    },
    /// Lists your savepoints on a cluster, and your disk use.
    Savepoints {
        #[command(flatten)]
        cluster: client::ClusterArgs,
    },
    /// Deletes a savepoint on a cluster (refused while a running job was started from it).
    DisposeSavepoint {
        /// The savepoint's name, as `weir savepoints` lists it.
        name: String,
        #[command(flatten)]
        cluster: client::ClusterArgs,
    },
    /// Stops a job on a cluster with a savepoint; prints its location.
    Stop {
        /// Job id.
        job: String,
        /// Take a savepoint (required: stopping without one is `weir cancel`).
        #[arg(long, required = true)]
        savepoint: bool,
        /// End the input first: the final watermark fires every window.
        #[arg(long)]
        drain: bool,
        #[command(flatten)]
        cluster: client::ClusterArgs,
    },
    /// Creates a new job crate.
    New {
        /// Directory (and crate name) to create.
        name: PathBuf,
        /// Path of the weir SDK (default: the SDK this binary was built with).
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct JobArgs {
    /// Default parallelism of every operator.
    #[arg(short, long, default_value_t = 1)]
    parallelism: u32,
    /// A job argument, `key=value` (repeatable).
    #[arg(long = "arg", value_name = "KEY=VALUE", value_parser = parse_arg)]
    args: Vec<(String, String)>,
}

/// Checkpoints, recovery and savepoints of `weir run`.
#[derive(clap::Args)]
struct DurableArgs {
    /// Where keyed state lives: `memory` or `rocksdb` (on local disk under --state-dir).
    #[arg(long, default_value = "memory", value_parser = ["memory", "rocksdb"])]
    state_backend: String,
    /// Local directory of the RocksDB backend's working files (default: the system's
    /// temporary directory).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Checkpoint storage: a directory, `file:///path` or `s3://bucket/prefix` (S3 settings
    /// from AWS_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION,
    /// AWS_ALLOW_HTTP). Checkpoints go to `<dir>/<job-id>/chk-<n>/`.
    #[arg(long, value_name = "URL")]
    checkpoint_dir: Option<String>,
    /// Time between checkpoints, e.g. `200ms`, `10s`.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    checkpoint_interval: Option<Duration>,
    /// `exactly-once` (aligned barriers) or `at-least-once`.
    #[arg(long, default_value = "exactly-once", value_parser = ["exactly-once", "at-least-once"])]
    checkpoint_mode: String,
    /// A checkpoint not complete after this long is given up.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    checkpoint_timeout: Duration,
    /// Least pause between the end of one checkpoint and the start of the next.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    min_pause: Duration,
    /// Checkpoints that may fail in a row before the job fails.
    #[arg(long, default_value_t = 0)]
    tolerable_failed_checkpoints: u32,
    /// Completed checkpoints to keep.
    #[arg(long, default_value_t = 1)]
    retained_checkpoints: usize,
    /// The job's id under --checkpoint-dir (default: its name).
    #[arg(long)]
    job_id: Option<String>,
    /// Continue from the latest completed checkpoint under --checkpoint-dir (fresh if none).
    #[arg(long, requires = "checkpoint_dir")]
    resume: bool,
    /// Start from a savepoint (or a retained checkpoint's `chk-<n>` directory).
    #[arg(long, value_name = "URL", conflicts_with = "resume")]
    from_savepoint: Option<String>,
    /// Drop state of operators the job no longer has instead of failing.
    #[arg(long)]
    allow_non_restored_state: bool,
    /// Ctrl-C / SIGTERM stop the job with a savepoint written under this directory;
    /// SIGUSR1 takes one and the job goes on.
    #[arg(long, value_name = "URL")]
    savepoint_dir: Option<String>,
    /// With --savepoint-dir: end the input first (final watermark: windows fire).
    #[arg(long, requires = "savepoint_dir")]
    drain: bool,
    /// After a task failure: `none`, `fixed-delay` or `exponential-backoff` (the default
    /// with checkpoints; `none` without).
    #[arg(long, value_parser = ["none", "fixed-delay", "exponential-backoff"])]
    restart: Option<String>,
    /// Restarts allowed.
    #[arg(long, default_value_t = RestartStrategy::DEFAULT_ATTEMPTS)]
    restart_attempts: u32,
    /// Wait before a restart (fixed delay), or before the first (backoff).
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    restart_delay: Duration,
}

impl DurableArgs {
    fn apply(self, options: &mut JobOptions) -> anyhow::Result<()> {
        let open = |url: &str| {
            weir_checkpoint::Storage::open(url).with_context(|| format!("storage '{url}'"))
        };
        options.checkpoints = CheckpointConfig {
            storage: self.checkpoint_dir.as_deref().map(open).transpose()?,
            interval: self.checkpoint_interval,
            timeout: self.checkpoint_timeout,
            min_pause: self.min_pause,
            retained: self.retained_checkpoints.max(1),
            mode: match self.checkpoint_mode.as_str() {
                "at-least-once" => CheckpointMode::AtLeastOnce,
                _ => CheckpointMode::ExactlyOnce,
            },
            tolerable_failures: self.tolerable_failed_checkpoints,
        };
        if options.checkpoints.interval.is_some() && options.checkpoints.storage.is_none() {
            bail!("--checkpoint-interval needs --checkpoint-dir");
        }
        if options.checkpoints.interval.is_some_and(|i| i.is_zero()) {
            bail!("--checkpoint-interval must be longer than 0");
        }
        options.state_backend = match self.state_backend.as_str() {
            "rocksdb" => StateBackendKind::RocksDb(
                self.state_dir
                    .unwrap_or_else(|| std::env::temp_dir().join("weir-state")),
            ),
            _ => StateBackendKind::Memory,
        };
        options.job_id = self.job_id;
        options.resume = self.resume;
        options.from_savepoint = self.from_savepoint.as_deref().map(open).transpose()?;
        options.allow_non_restored_state = self.allow_non_restored_state;
        options.savepoint_dir = self.savepoint_dir.as_deref().map(open).transpose()?;
        let (attempts, delay) = (self.restart_attempts, self.restart_delay);
        options.restart = self.restart.map(|r| match r.as_str() {
            "none" => RestartStrategy::None,
            "fixed-delay" => RestartStrategy::FixedDelay { attempts, delay },
            _ => RestartStrategy::backoff(attempts, delay),
        });
        Ok(())
    }
}

pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("'{s}': {e} (e.g. 200ms, 10s, 1m)"))
}

pub(crate) fn parse_arg(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected KEY=VALUE, got '{s}'"))
}

fn load(
    runtime: &Runtime,
    path: &Path,
) -> anyhow::Result<std::sync::Arc<weir_runtime::JobComponent>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    runtime
        .load(&bytes)
        .with_context(|| format!("cannot load {}", path.display()))
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run {
            component,
            job,
            max_memory_mib,
            call_timeout,
            max_call_output_mib,
            durable,
        } => run_local(
            &component,
            job,
            max_memory_mib,
            call_timeout,
            max_call_output_mib,
            *durable,
        ),
        Command::Plan { component, job } => print_plan(&component, job),
        Command::Checkpoints { dir, job_id } => list_checkpoints(&dir, &job_id),
        Command::Serve { config } => {
            serve::serve(config)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Upload { file, cluster } => {
            client::upload(&client::Client::new(&cluster)?, &file)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Submit { submit, cluster } => {
            client::submit(&client::Client::new(&cluster)?, submit)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::List { cluster } => {
            client::list(&client::Client::new(&cluster)?)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Components { cluster } => {
            client::components(&client::Client::new(&cluster)?)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { job, cluster } => {
            client::status(&client::Client::new(&cluster)?, &job)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Cancel { job, cluster } => {
            client::cancel(&client::Client::new(&cluster)?, &job)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Savepoint { job, cluster } => {
            client::savepoint(&client::Client::new(&cluster)?, &job, false, false)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Savepoints { cluster } => {
            client::savepoints(&client::Client::new(&cluster)?)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::DisposeSavepoint { name, cluster } => {
            client::dispose_savepoint(&client::Client::new(&cluster)?, &name)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Stop {
            job,
            drain,
            cluster,
            ..
        } => {
            client::savepoint(&client::Client::new(&cluster)?, &job, true, drain)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::New { name, sdk } => {
            let sdk = sdk.unwrap_or_else(|| {
                PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../sdk"))
            });
            scaffold::new_job(&name, &sdk)?;
            println!(
                "created {0}\nbuild it with: cd {0} && cargo build --target wasm32-wasip2 --release",
                name.display()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `weir run`: one job in this process, steered by signals.
fn run_local(
    component: &Path,
    job: JobArgs,
    max_memory_mib: usize,
    call_timeout: f64,
    max_call_output_mib: usize,
    durable: DurableArgs,
) -> anyhow::Result<ExitCode> {
    if !(call_timeout > 0.0 && call_timeout.is_finite()) {
        bail!("--call-timeout must be a positive number of seconds");
    }
    let runtime = Runtime::new(RuntimeConfig {
        max_instance_memory: max_memory_mib << 20,
        call_timeout: Duration::from_secs_f64(call_timeout),
        max_call_output: max_call_output_mib << 20,
        ..RuntimeConfig::default()
    })?;
    let component = load(&runtime, component)?;
    let mut options = JobOptions::new(job.parallelism);
    options.args = job.args;
    let drain = durable.drain;
    durable.apply(&mut options)?;
    let (handle, link) = JobLink::new();
    let savepoints = options.savepoint_dir.is_some();
    // Ctrl-C or SIGTERM: stop with a savepoint when a savepoint directory is set
    // (a second one cancels), otherwise cancel.
    let stopping = AtomicBool::new(false);
    let on_signal = handle.clone();
    ctrlc::set_handler(move || {
        if savepoints && !stopping.swap(true, Ordering::Relaxed) {
            eprintln!("stopping with a savepoint (again to cancel)");
            on_signal.send(JobCommand::Stop { drain });
        } else {
            on_signal.send(JobCommand::Cancel);
        }
    })
    .context("cannot install the Ctrl-C handler")?;
    let (events_tx, events) = crossbeam_channel::unbounded();
    let link = link.with_events(events_tx);
    if savepoints {
        // SIGUSR1: a savepoint, and the job goes on.
        let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGUSR1])
            .context("cannot install the SIGUSR1 handler")?;
        std::thread::spawn(move || {
            for _ in signals.forever() {
                handle.send(JobCommand::Savepoint);
            }
        });
    }
    std::thread::spawn(move || {
        for event in events {
            if let JobEvent::Snapshot(s) = event {
                if s.savepoint {
                    eprintln!("savepoint taken: {}", s.location);
                }
            }
        }
    });
    match run_job(&component, &options, link) {
        Ok(summary) => {
            eprint!("{summary}");
            if let Some(s) = &summary.savepoint {
                println!("savepoint: {s}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(JobError::Cancelled) => {
            eprintln!("job cancelled");
            Ok(ExitCode::from(130))
        }
        Err(e) => Err(anyhow::Error::new(e).context("the job failed")),
    }
}

/// `weir plan`: the job graph a component describes.
fn print_plan(component: &Path, job: JobArgs) -> anyhow::Result<ExitCode> {
    let runtime = Runtime::new(RuntimeConfig::default())?;
    let component = load(&runtime, component)?;
    let graph = component.plan(&job.args, job.parallelism)?;
    println!(
        "job '{}' (max parallelism {})",
        graph.name, graph.max_parallelism
    );
    for (i, n) in graph.nodes.iter().enumerate() {
        println!(
            "  [{i}] {} ({}) {:?} parallelism {}",
            n.uid,
            n.name,
            kind(&n.kind),
            n.parallelism
        );
    }
    for e in &graph.edges {
        println!(
            "  {} -> {} {:?}{}",
            graph.nodes[e.source].uid,
            graph.nodes[e.target].uid,
            e.partitioning,
            e.side_output
                .as_deref()
                .map(|s| format!(" (side output '{s}')"))
                .unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `weir checkpoints`: the completed checkpoints of a job.
fn list_checkpoints(dir: &str, job_id: &str) -> anyhow::Result<ExitCode> {
    let job_dir = weir_checkpoint::Storage::open(dir)?.child(job_id);
    let (complete, _) = weir_checkpoint::list_checkpoints(&job_dir)?;
    for id in complete {
        let chk = weir_checkpoint::checkpoint_dir(&job_dir, id);
        match weir_checkpoint::read_metadata(&chk) {
            Ok(m) => println!(
                "chk-{id}  {}  backend {}  {} operators{}",
                chk.url(),
                m.backend,
                m.operators.len(),
                if m.finished { "  (job finished)" } else { "" }
            ),
            Err(e) => println!("chk-{id}  unreadable: {e}"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn kind(k: &weir_core::NodeKind) -> String {
    match k {
        weir_core::NodeKind::Source(c) => format!("source:{}", c.name),
        weir_core::NodeKind::Sink(c) => format!("sink:{}", c.name),
        weir_core::NodeKind::Operator => "operator".into(),
        weir_core::NodeKind::GuestSource => "guest-source".into(),
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WEIR_LOG").unwrap_or_else(|_| {
                // A server says what it does; a command-line run only what goes wrong.
                let serving = std::env::args().nth(1).as_deref() == Some("serve");
                tracing_subscriber::EnvFilter::new(if serving { "info" } else { "warn" })
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
