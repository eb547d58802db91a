//! Bearer tokens: who is asking. Tokens are kept only as SHA-256 hashes and compared in
//! constant time.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{ClusterConfig, TenantConfig};

/// Who a request comes from.
#[derive(Debug, Clone)]
pub enum Principal {
    /// The cluster's operator: sees every tenant's jobs and the whole cluster.
    Admin,
    /// A tenant: sees only its own components, jobs and snapshots.
    Tenant(Arc<TenantConfig>),
}

impl Principal {
    /// The tenant's name (`None` for the admin).
    pub fn tenant(&self) -> Option<&str> {
        match self {
            Principal::Admin => None,
            Principal::Tenant(t) => Some(&t.name),
        }
    }

    /// Whether it may see something owned by `tenant`.
    pub fn may_see(&self, tenant: &str) -> bool {
        match self {
            Principal::Admin => true,
            Principal::Tenant(t) => t.name == tenant,
        }
    }
}

/// Maps tokens to principals.
#[derive(Debug)]
pub struct Authenticator {
    admin: Option<[u8; 32]>,
    tenants: Vec<([u8; 32], Arc<TenantConfig>)>,
}

impl Authenticator {
    /// From the configured hashes (validated as 64 hex digits).
    pub fn new(config: &ClusterConfig) -> Self {
        Authenticator {
            admin: config
                .server
                .admin_token_sha256
                .as_deref()
                .and_then(weir_core::digest_from_hex),
            tenants: config
                .tenants
                .iter()
                .filter_map(|t| {
                    Some((
                        weir_core::digest_from_hex(&t.token_sha256)?,
                        Arc::new(t.clone()),
                    ))
                })
                .collect(),
        }
    }

    /// The principal a bearer token stands for. Every configured hash is compared, so the
    /// time taken does not tell which one (or whether any) matched.
    pub fn authenticate(&self, token: &str) -> Option<Principal> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        if let Some(admin) = &self.admin {
            if bool::from(admin.ct_eq(&digest)) {
                found = Some(Principal::Admin);
            }
        }
        for (hash, tenant) in &self.tenants {
            if bool::from(hash.ct_eq(&digest)) && found.is_none() {
                found = Some(Principal::Tenant(tenant.clone()));
            }
        }
        found
    }

    /// A tenant by name.
    pub fn tenant(&self, name: &str) -> Option<&Arc<TenantConfig>> {
        self.tenants.iter().map(|(_, t)| t).find(|t| t.name == name)
    }

    /// Every tenant.
    pub fn tenants(&self) -> impl Iterator<Item = &Arc<TenantConfig>> {
        self.tenants.iter().map(|(_, t)| t)
    }
}

/// Lowercase hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    weir_checkpoint::sha256_hex(data)
}

/// `n` random bytes as lowercase hex.
pub fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes).expect("the operating system's random source works");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A new API token.
pub fn random_token() -> String {
    format!("weir_{}", random_hex(24))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_map_to_their_tenant_and_nothing_else() {
        let config: ClusterConfig = toml::from_str(&format!(
            "[server]\nadmin_token_sha256 = \"{}\"\n\
             [[tenants]]\nname = \"a\"\ntoken_sha256 = \"{}\"\n\
             [[tenants]]\nname = \"b\"\ntoken_sha256 = \"{}\"\n",
            sha256_hex(b"root"),
            sha256_hex(b"ta"),
            sha256_hex(b"tb").to_uppercase()
        ))
        .unwrap();
        let auth = Authenticator::new(&config);
        assert!(matches!(auth.authenticate("root"), Some(Principal::Admin)));
        assert_eq!(auth.authenticate("ta").unwrap().tenant(), Some("a"));
        assert_eq!(auth.authenticate("tb").unwrap().tenant(), Some("b"));
        assert!(auth.authenticate("tc").is_none());
        assert!(auth.authenticate("").is_none());
        let a = auth.authenticate("ta").unwrap();
        assert!(a.may_see("a") && !a.may_see("b"));
        assert!(Principal::Admin.may_see("b"));
    }

    #[test]
    fn random_tokens_differ() {
        assert_ne!(random_token(), random_token());
        assert_eq!(random_hex(16).len(), 32);
    }
}
