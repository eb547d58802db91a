//! `weir`: run stream-processing jobs written as WebAssembly components.
//!
//! - `weir run job.wasm --parallelism 2 --arg input=in.txt` runs a job locally in this
//!   process (Flink's local environment) and prints a summary when it ends.
//! - `weir plan job.wasm` prints the job's dataflow graph.
//! - `weir new my-job` creates a job crate that depends on the weir SDK.

mod scaffold;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};
use weir_runtime::{Runtime, RuntimeConfig};
use weir_worker::{run_job, JobError, JobOptions};

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
    },
    /// Prints a job's dataflow graph.
    Plan {
        /// The job component.
        component: PathBuf,
        #[command(flatten)]
        job: JobArgs,
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

fn parse_arg(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected KEY=VALUE, got '{s}'"))
}

fn load(
    runtime: &Runtime,
    path: &PathBuf,
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
        } => {
            if !(call_timeout > 0.0 && call_timeout.is_finite()) {
                bail!("--call-timeout must be a positive number of seconds");
            }
            let runtime = Runtime::new(RuntimeConfig {
                max_instance_memory: max_memory_mib << 20,
                call_timeout: Duration::from_secs_f64(call_timeout),
                ..RuntimeConfig::default()
            })?;
            let component = load(&runtime, &component)?;
            let mut options = JobOptions::new(job.parallelism);
            options.args = job.args;
            let cancel = options.cancel.clone();
            ctrlc::set_handler(move || cancel.store(true, Ordering::Relaxed))
                .context("cannot install the Ctrl-C handler")?;
            match run_job(&component, &options) {
                Ok(summary) => {
                    eprint!("{summary}");
                    Ok(ExitCode::SUCCESS)
                }
                Err(JobError::Cancelled) => {
                    eprintln!("job cancelled");
                    Ok(ExitCode::from(130))
                }
                Err(e) => Err(anyhow::Error::new(e).context("the job failed")),
            }
        }
        Command::Plan { component, job } => {
            let runtime = Runtime::new(RuntimeConfig::default())?;
            let component = load(&runtime, &component)?;
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
            tracing_subscriber::EnvFilter::try_from_env("WEIR_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
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
