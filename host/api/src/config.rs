//! The REST API's keys of `weir.toml`'s `[server]` table (the JobManager reads the others):
//! where it listens and its limits on clients, each also from a `WEIR_*` variable.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use crate::HttpLimits;

/// The REST API's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Where the REST API listens (`WEIR_REST_ADDRESS`).
    pub rest_address: SocketAddr,
    /// Largest request body other than an upload (`WEIR_MAX_REQUEST_BYTES`).
    pub max_request_bytes: usize,
    /// A client has this long to send a request's headers, and an idle connection is
    /// closed after it (`WEIR_HEADER_READ_TIMEOUT_MS`).
    pub header_read_timeout_ms: u64,
    /// A request's body may pause this long between two pieces (`WEIR_BODY_READ_TIMEOUT_MS`).
    pub body_read_timeout_ms: u64,
    /// A response write may wait this long for a client that does not read
    /// (`WEIR_WRITE_TIMEOUT_MS`).
    pub write_timeout_ms: u64,
    /// HTTP connections open at once (`WEIR_MAX_CONNECTIONS`).
    pub max_connections: usize,
    /// On shutdown, requests in progress have this long to finish (`WEIR_SHUTDOWN_GRACE_MS`).
    pub shutdown_grace_ms: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            rest_address: SocketAddr::from(([127, 0, 0, 1], 8081)),
            max_request_bytes: 1 << 20,
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 30_000,
            write_timeout_ms: 30_000,
            max_connections: 1024,
            shutdown_grace_ms: 5_000,
        }
    }
}

impl HttpConfig {
    /// Its keys in `[server]`.
    pub const KEYS: &'static [&'static str] = &[
        "rest_address",
        "max_request_bytes",
        "header_read_timeout_ms",
        "body_read_timeout_ms",
        "write_timeout_ms",
        "max_connections",
        "shutdown_grace_ms",
    ];

    /// Reads the keys `table` holds (the others keep their defaults), then the
    /// environment, and checks the result.
    pub fn load(
        table: toml::Table,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<HttpConfig, String> {
        let mut c = HttpConfig::deserialize(toml::Value::Table(table))
            .map_err(|e| format!("[server]: {e}"))?;
        fn parse<T: std::str::FromStr>(
            env: &impl Fn(&str) -> Option<String>,
            name: &str,
            into: &mut T,
        ) -> Result<(), String>
        where
            T::Err: std::fmt::Display,
        {
            weir_jobmanager::config::from_env(env, name, into).map_err(|e| e.to_string())
        }
        parse(&env, "WEIR_REST_ADDRESS", &mut c.rest_address)?;
        parse(&env, "WEIR_MAX_REQUEST_BYTES", &mut c.max_request_bytes)?;
        parse(
            &env,
            "WEIR_HEADER_READ_TIMEOUT_MS",
            &mut c.header_read_timeout_ms,
        )?;
        parse(
            &env,
            "WEIR_BODY_READ_TIMEOUT_MS",
            &mut c.body_read_timeout_ms,
        )?;
        parse(&env, "WEIR_WRITE_TIMEOUT_MS", &mut c.write_timeout_ms)?;
        parse(&env, "WEIR_MAX_CONNECTIONS", &mut c.max_connections)?;
        parse(&env, "WEIR_SHUTDOWN_GRACE_MS", &mut c.shutdown_grace_ms)?;
        let positive = [
            ("header_read_timeout_ms", c.header_read_timeout_ms),
            ("body_read_timeout_ms", c.body_read_timeout_ms),
            ("write_timeout_ms", c.write_timeout_ms),
            ("max_connections", c.max_connections as u64),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("server.{key} must be at least 1"));
        }
        Ok(c)
    }

    /// The limits the HTTP server enforces on its clients.
    pub fn limits(&self) -> HttpLimits {
        HttpLimits {
            header_read_timeout: Duration::from_millis(self.header_read_timeout_ms),
            write_timeout: Duration::from_millis(self.write_timeout_ms),
            max_connections: self.max_connections,
            shutdown_grace: Duration::from_millis(self.shutdown_grace_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_come_from_the_table_then_the_environment() {
        let table: toml::Table = toml::from_str("rest_address = \"0.0.0.0:9090\"\n").unwrap();
        let env = |k: &str| (k == "WEIR_MAX_CONNECTIONS").then(|| "7".to_string());
        let c = HttpConfig::load(table, env).unwrap();
        assert_eq!(c.rest_address.port(), 9090);
        assert_eq!(c.max_connections, 7);
        assert_eq!(c.write_timeout_ms, HttpConfig::default().write_timeout_ms);
        // Every field is a key (and nothing else is).
        let all = toml::Table::try_from(
            HttpConfig::KEYS
                .iter()
                .map(|k| (k.to_string(), 1))
                .collect::<std::collections::BTreeMap<_, _>>(),
        )
        .unwrap();
        let e = HttpConfig::load(all, |_| None).unwrap_err();
        assert!(e.contains("rest_address"), "{e}");
        let zero: toml::Table = toml::from_str("max_connections = 0\n").unwrap();
        let e = HttpConfig::load(zero, |_| None).unwrap_err();
        assert_eq!(e, "server.max_connections must be at least 1");
        let bad = |k: &str| (k == "WEIR_WRITE_TIMEOUT_MS").then(|| "soon".to_string());
        let e = HttpConfig::load(toml::Table::new(), bad).unwrap_err();
        assert!(e.contains("WEIR_WRITE_TIMEOUT_MS='soon'"), "{e}");
    }
}
