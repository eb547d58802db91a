//! `weir.toml`: the server's settings and its tenants, every server setting also from a
//! `WEIR_*` environment variable.
//!
//! The `[server]` table is shared: the JobManager reads its own keys here and hands the
//! keys of other parts of the server (the REST API's address and limits) back to the
//! caller as they are.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::auth::{random_token, sha256_hex};

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown or mistyped keys.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with line and column.
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("{0}")]
    Invalid(String),
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// `[server]`.
    #[serde(default)]
    pub server: ServerConfig,
    /// `[[tenants]]`.
    #[serde(default)]
    pub tenants: Vec<TenantConfig>,
}

/// `weir.toml` as it is read: `[server]` is split between its readers.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    server: toml::Table,
    #[serde(default)]
    tenants: Vec<TenantConfig>,
}

/// The JobManager's keys of `[server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Task slots of the local TaskManager (`WEIR_SLOTS`).
    pub slots: u32,
    /// Components, checkpoints and savepoints by default (`WEIR_DATA_DIR`).
    pub data_dir: PathBuf,
    /// Hex SHA-256 of the admin token (`WEIR_ADMIN_TOKEN_SHA256`); no admin without it.
    pub admin_token_sha256: Option<String>,
    /// Longest one call into guest code may run, in ms (`WEIR_CALL_TIMEOUT_MS`).
    pub call_timeout_ms: u64,
    /// Most bytes one guest call may return (`WEIR_MAX_CALL_OUTPUT_BYTES`).
    pub max_call_output_bytes: usize,
    /// On SIGTERM, running jobs stop with a savepoint (`WEIR_SAVEPOINT_ON_SHUTDOWN`).
    pub savepoint_on_shutdown: bool,
    /// On shutdown, jobs have this long to stop with savepoints before they are cancelled
    /// (`WEIR_SHUTDOWN_TIMEOUT_MS`).
    pub shutdown_timeout_ms: u64,
    /// Tasks (threads) one job may run (`WEIR_MAX_TASKS_PER_JOB`).
    pub max_tasks_per_job: u32,
    /// Keyed state all jobs together may hold in memory; a job whose state would take more
    /// fails (`WEIR_STATE_MEMORY_BUDGET_BYTES`; default: half the machine's memory).
    pub state_memory_budget_bytes: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            slots: 8,
            data_dir: PathBuf::from("./weir-data"),
            admin_token_sha256: None,
            call_timeout_ms: 30_000,
            max_call_output_bytes: 64 << 20,
            savepoint_on_shutdown: true,
            shutdown_timeout_ms: 60_000,
            max_tasks_per_job: 256,
            state_memory_budget_bytes: physical_memory().map_or(4 << 30, |m| m / 2),
        }
    }
}

impl ServerConfig {
    /// The call deadline.
    pub fn call_timeout(&self) -> Duration {
        Duration::from_millis(self.call_timeout_ms)
    }
}

/// The machine's memory (Linux), bytes.
fn physical_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// `[[tenants]]`: one tenant, its token (as a hash) and its quotas.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// Name, unique; ids and directories are scoped by it.
    pub name: String,
    /// Hex SHA-256 of the tenant's API token.
    pub token_sha256: String,
    /// Jobs not yet ended at once.
    #[serde(default = "defaults::max_jobs")]
    pub max_jobs: u32,
    /// Slots its jobs may hold together.
    #[serde(default = "defaults::max_slots")]
    pub max_slots: u32,
    /// Tasks (threads) its jobs may run together.
    #[serde(default = "defaults::max_tasks")]
    pub max_tasks: u32,
    /// Largest component it may upload.
    #[serde(default = "defaults::max_component_bytes")]
    pub max_component_bytes: u64,
    /// Largest linear memory of one of its guest instances.
    #[serde(default = "defaults::max_instance_memory_bytes")]
    pub max_instance_memory_bytes: u64,
    /// Largest keyed state of one of its jobs, enforced as the state grows (and checked in
    /// each checkpoint).
    #[serde(default = "defaults::max_state_bytes")]
    pub max_state_bytes: u64,
    /// Largest keyed state of all its jobs together.
    #[serde(default = "defaults::max_total_state_bytes")]
    pub max_total_state_bytes: u64,
    /// Disk its components, checkpoints and savepoints may take together.
    #[serde(default = "defaults::max_disk_bytes")]
    pub max_disk_bytes: u64,
    /// Largest single state value (a map entry: user key and value) its jobs may write.
    #[serde(default = "defaults::max_state_value_bytes")]
    pub max_state_value_bytes: u64,
    /// The only directories its file sources and sinks may use.
    #[serde(default)]
    pub allowed_paths: Vec<PathBuf>,
}

mod defaults {
    pub fn max_jobs() -> u32 {
        10
    }
    pub fn max_slots() -> u32 {
        4
    }
    pub fn max_component_bytes() -> u64 {
        50_000_000
    }
    pub fn max_instance_memory_bytes() -> u64 {
        64 << 20
    }
    pub fn max_disk_bytes() -> u64 {
        10 << 30
    }
    pub fn max_tasks() -> u32 {
        512
    }
    pub fn max_state_bytes() -> u64 {
        256 << 20
    }
    pub fn max_total_state_bytes() -> u64 {
        1 << 30
    }
    pub fn max_state_value_bytes() -> u64 {
        4 << 20
    }
}

/// A token made up for the default tenant (no config file): printed once, stored nowhere.
#[derive(Debug, Clone)]
pub struct GeneratedToken(pub String);

impl ClusterConfig {
    /// Reads `path` (or starts from the defaults), then applies the environment. The
    /// `[server]` keys named in `others` are not the JobManager's: they are returned, as
    /// written, for their readers.
    ///
    /// Without a config file the cluster has one tenant, `default`, allowed to use files
    /// under the current directory; its token is `WEIR_TOKEN` if set, otherwise a random
    /// one returned here for the caller to print.
    pub fn load(
        path: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
        others: &[&str],
    ) -> Result<(ClusterConfig, Option<GeneratedToken>, toml::Table), ConfigError> {
        let mut theirs = toml::Table::new();
        let mut config = match path {
            Some(path) => {
                let parse = |message: String| ConfigError::Parse {
                    path: path.to_path_buf(),
                    message,
                };
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                let mut file: File = toml::from_str(&text).map_err(|e| parse(e.to_string()))?;
                for key in others {
                    if let Some(v) = file.server.remove(*key) {
                        theirs.insert(key.to_string(), v);
                    }
                }
                let server = ServerConfig::deserialize(toml::Value::Table(file.server))
                    .map_err(|e| parse(format!("[server]: {e}")))?;
                ClusterConfig {
                    server,
                    tenants: file.tenants,
                }
            }
            None => ClusterConfig {
                server: ServerConfig::default(),
                tenants: Vec::new(),
            },
        };
        config.server.apply_env(&env)?;
        let mut generated = None;
        if path.is_none() && config.tenants.is_empty() {
            let token = match env("WEIR_TOKEN") {
                Some(t) if !t.is_empty() => t,
                _ => {
                    let t = random_token();
                    generated = Some(GeneratedToken(t.clone()));
                    t
                }
            };
            let here = std::env::current_dir().map_err(|e| {
                ConfigError::Invalid(format!("cannot tell the current directory: {e}"))
            })?;
            config.tenants.push(TenantConfig {
                name: "default".into(),
                token_sha256: sha256_hex(token.as_bytes()),
                max_jobs: 1000,
                max_slots: config.server.slots,
                max_tasks: 4096,
                max_component_bytes: defaults::max_component_bytes(),
                max_instance_memory_bytes: 512 << 20,
                max_state_bytes: 4 << 30,
                max_total_state_bytes: 16 << 30,
                max_state_value_bytes: defaults::max_state_value_bytes(),
                max_disk_bytes: 1 << 40,
                allowed_paths: vec![here],
            });
        }
        config.validate()?;
        Ok((config, generated, theirs))
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if self.server.slots == 0 {
            return invalid("server.slots must be at least 1".into());
        }
        if self.server.call_timeout_ms == 0 {
            return invalid("server.call_timeout_ms must be at least 1".into());
        }
        let hex = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
        if let Some(h) = &self.server.admin_token_sha256 {
            if !hex(h) {
                return invalid("server.admin_token_sha256 must be 64 hex digits".into());
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for t in &self.tenants {
            let ok_name = !t.name.is_empty()
                && t.name.len() <= 64
                && t.name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !ok_name {
                return invalid(format!(
                    "tenant name '{}': use 1-64 letters, digits, '-' or '_'",
                    t.name
                ));
            }
            if !names.insert(t.name.as_str()) {
                return invalid(format!("tenant '{}' is declared twice", t.name));
            }
            if !hex(&t.token_sha256) {
                return invalid(format!(
                    "tenant '{}': token_sha256 must be 64 hex digits",
                    t.name
                ));
            }
            if t.max_instance_memory_bytes < 1 << 20 {
                return invalid(format!(
                    "tenant '{}': max_instance_memory_bytes must be at least 1 MiB",
                    t.name
                ));
            }
            for p in &t.allowed_paths {
                if !p.is_absolute() {
                    return invalid(format!(
                        "tenant '{}': allowed path '{}' must be absolute",
                        t.name,
                        p.display()
                    ));
                }
            }
        }
        let token_hashes: std::collections::BTreeSet<String> = self
            .tenants
            .iter()
            .map(|t| t.token_sha256.to_ascii_lowercase())
            .collect();
        if token_hashes.len() != self.tenants.len() {
            return invalid("two tenants have the same token".into());
        }
        Ok(())
    }
}

/// Sets `into` from the environment variable `name` when it is set (every part of the server
/// reads its `WEIR_*` settings this way); a value that does not parse is named in the error.
pub fn from_env<T: std::str::FromStr>(
    env: &impl Fn(&str) -> Option<String>,
    name: &str,
    into: &mut T,
) -> Result<(), ConfigError>
where
    T::Err: std::fmt::Display,
{
    if let Some(v) = env(name) {
        *into = v
            .parse()
            .map_err(|e| ConfigError::Invalid(format!("{name}='{v}': {e}")))?;
    }
    Ok(())
}

impl ServerConfig {
    fn apply_env(&mut self, env: &impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        from_env(env, "WEIR_SLOTS", &mut self.slots)?;
        from_env(env, "WEIR_DATA_DIR", &mut self.data_dir)?;
        from_env(env, "WEIR_CALL_TIMEOUT_MS", &mut self.call_timeout_ms)?;
        from_env(
            env,
            "WEIR_MAX_CALL_OUTPUT_BYTES",
            &mut self.max_call_output_bytes,
        )?;
        from_env(
            env,
            "WEIR_SAVEPOINT_ON_SHUTDOWN",
            &mut self.savepoint_on_shutdown,
        )?;
        from_env(
            env,
            "WEIR_SHUTDOWN_TIMEOUT_MS",
            &mut self.shutdown_timeout_ms,
        )?;
        from_env(env, "WEIR_MAX_TASKS_PER_JOB", &mut self.max_tasks_per_job)?;
        from_env(
            env,
            "WEIR_STATE_MEMORY_BUDGET_BYTES",
            &mut self.state_memory_budget_bytes,
        )?;
        if let Some(h) = env("WEIR_ADMIN_TOKEN_SHA256") {
            self.admin_token_sha256 = Some(h);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn the_issue_example_parses() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weir.toml");
        let h = "ab".repeat(32);
        std::fs::write(
            &path,
            format!(
                r#"
[server]
rest_address = "127.0.0.1:9090"
slots = 8
data_dir = "./weir-data"
admin_token_sha256 = "{h}"

[[tenants]]
name = "acme"
token_sha256 = "{h2}"
max_jobs = 10
max_slots = 4
max_component_bytes = 50000000
max_instance_memory_bytes = 67108864
allowed_paths = ["/srv/acme"]
"#,
                h2 = "cd".repeat(32)
            ),
        )
        .unwrap();
        let (c, generated, others) =
            ClusterConfig::load(Some(&path), no_env, &["rest_address"]).unwrap();
        assert!(generated.is_none());
        assert_eq!(others["rest_address"].as_str(), Some("127.0.0.1:9090"));
        assert_eq!(c.tenants[0].max_slots, 4);
        assert_eq!(c.tenants[0].allowed_paths, [PathBuf::from("/srv/acme")]);
        // The environment wins over the file.
        let env = |k: &str| (k == "WEIR_SLOTS").then(|| "3".to_string());
        let (c, _, _) = ClusterConfig::load(Some(&path), env, &["rest_address"]).unwrap();
        assert_eq!(c.server.slots, 3);
    }

    #[test]
    fn mistakes_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weir.toml");
        let cases = [
            ("[server]\nslot = 3\n", "unknown field `slot`"),
            (
                "[server]\nrest_address = 3\n",
                "unknown field `rest_address`",
            ),
            ("[server]\nslots = 0\n", "slots must be at least 1"),
            (
                "[[tenants]]\nname = \"a b\"\ntoken_sha256 = \"00\"\n",
                "tenant name 'a b'",
            ),
            (
                "[[tenants]]\nname = \"a\"\ntoken_sha256 = \"00\"\n",
                "64 hex digits",
            ),
        ];
        for (text, expected) in cases {
            std::fs::write(&path, text).unwrap();
            let e = ClusterConfig::load(Some(&path), no_env, &[]).unwrap_err();
            assert!(e.to_string().contains(expected), "{text}: {e}");
        }
        let e = ClusterConfig::load(
            Some(&path),
            |k: &str| (k == "WEIR_SLOTS").then(|| "many".to_string()),
            &[],
        )
        .unwrap_err();
        assert!(e.to_string().contains("WEIR_SLOTS='many'"), "{e}");
    }

    #[test]
    fn without_a_file_there_is_one_default_tenant() {
        let (c, generated, _) = ClusterConfig::load(None, no_env, &[]).unwrap();
        let token = generated.expect("a token is made up").0;
        assert_eq!(c.tenants.len(), 1);
        assert_eq!(c.tenants[0].token_sha256, sha256_hex(token.as_bytes()));
        let env = |k: &str| (k == "WEIR_TOKEN").then(|| "secret".to_string());
        let (c, generated, _) = ClusterConfig::load(None, env, &[]).unwrap();
        assert!(generated.is_none());
        assert_eq!(c.tenants[0].token_sha256, sha256_hex(b"secret"));
    }
}
