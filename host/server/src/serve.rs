//! `weir serve`: a session cluster (JobManager, a local TaskManager, the REST API).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use weir_jobmanager::{ClusterConfig, JobManager};

/// Runs the cluster until SIGTERM or Ctrl-C, then stops its jobs (with savepoints, if the
/// configuration says so) and exits.
pub fn serve(config_path: Option<PathBuf>) -> anyhow::Result<()> {
    let env = |k: &str| std::env::var(k).ok();
    let (config, generated, http) =
        ClusterConfig::load(config_path.as_deref(), env, weir_api::HttpConfig::KEYS)?;
    let http = weir_api::HttpConfig::load(http, env).map_err(anyhow::Error::msg)?;
    let address = http.rest_address;
    let data_dir = config.server.data_dir.clone();
    let tenants: Vec<String> = config.tenants.iter().map(|t| t.name.clone()).collect();
    // The memory budget fails whichever job grows past it: tenants are kept from each other
    // only while their state quotas fit in it together.
    let promised: u64 = config
        .tenants
        .iter()
        .map(|t| t.max_total_state_bytes)
        .fold(0, u64::saturating_add);
    if config.tenants.len() > 1 && promised > config.server.state_memory_budget_bytes {
        eprintln!(
            "warning: the tenants' max_total_state_bytes add up to {promised} bytes, over the \
             server's state_memory_budget_bytes ({}): one tenant's state can use up the budget \
             and fail another's jobs",
            config.server.state_memory_budget_bytes
        );
    }
    let jm = JobManager::start(config).context("cannot start the JobManager")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("weir-rest")
        .build()
        .context("cannot start the REST runtime")?;
    raise_open_files_limit();
    let limits = http.limits();
    let shutdown_timeout = Duration::from_millis(jm.config().server.shutdown_timeout_ms);
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("cannot listen on {address}"))?;
        let url = format!("http://{}", listener.local_addr()?);
        println!("weir session cluster: {url}");
        println!("  REST API: {url}/v1 (OpenAPI: {url}/v1/openapi.json), metrics: {url}/metrics");
        println!("  data: {}", data_dir.display());
        println!("  tenants: {}", tenants.join(", "));
        if let Some(token) = generated {
            println!("  no config file: one tenant, 'default'; authenticate with");
            println!("    export WEIR_URL={url} WEIR_TOKEN={}", token.0);
            println!("    curl -H \"Authorization: Bearer $WEIR_TOKEN\" $WEIR_URL/v1/overview");
        }
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        weir_api::serve(
            listener,
            weir_api::router(jm.clone(), &http),
            limits,
            shutdown_signal(),
        )
        .await;
        anyhow::Ok(())
    })?;
    // Work still running on the REST runtime (an upload being checked, say) is not waited for.
    runtime.shutdown_timeout(Duration::from_secs(1));
    eprintln!("shutting down: stopping jobs");
    let shutdown_ms = weir_jobmanager::components::now_ms();
    jm.shutdown(shutdown_timeout);
    let admin = weir_jobmanager::Principal::Admin;
    for job in jm.jobs_overview(&admin) {
        if let Ok(Some(savepoint)) = jm.job(&admin, &job.id).map(|j| j.savepoint) {
            if job.end_ms.is_some_and(|end| end >= shutdown_ms) {
                let line = format!(
                    "job {} ({}) stopped with savepoint {savepoint}\n",
                    job.id, job.tenant
                );
                use std::io::Write as _;
                let _ = std::io::stdout().write_all(line.as_bytes());
            }
        }
    }
    Ok(())
}

/// Every connection, RocksDB file and part file is a descriptor: the soft limit (often 1,024)
/// goes up to the hard one, so `max_connections` is not cut short by running out of them.
fn raise_open_files_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::warn!(error = %e, "cannot raise the open files limit");
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
