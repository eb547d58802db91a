//! What a tenant keeps on the server's disk — components, checkpoints, savepoints — measured
//! against its `max_disk_bytes`, and its savepoints, listed and deleted.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::ClusterError;

/// Bytes a tenant keeps on disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DiskUsage {
    /// Uploaded components.
    pub components_bytes: u64,
    /// Its jobs' checkpoints.
    pub checkpoints_bytes: u64,
    /// Its savepoints.
    pub savepoints_bytes: u64,
}

impl DiskUsage {
    /// All of it.
    pub fn total(&self) -> u64 {
        self.components_bytes + self.checkpoints_bytes + self.savepoints_bytes
    }
}

/// A tenant's disk use against its quota (`GET /v1/overview`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TenantUsage {
    /// By kind.
    #[serde(flatten)]
    pub disk: DiskUsage,
    /// All of it.
    pub disk_bytes: u64,
    /// Its quota.
    pub max_disk_bytes: u64,
}

/// Disk promised to uploads in flight, by tenant: what each may still write.
#[derive(Debug, Clone, Default)]
pub struct Reservations(std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, u64>>>);

impl Reservations {
    /// Reserves up to `want` bytes of what `tenant` has `left` (less what others reserved);
    /// answers the guard, which gives them back when dropped.
    pub fn reserve(&self, tenant: &str, left: u64, want: u64) -> Reservation {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let held = map.entry(tenant.to_string()).or_default();
        let bytes = want.min(left.saturating_sub(*held));
        *held += bytes;
        Reservation {
            owner: self.clone(),
            tenant: tenant.to_string(),
            bytes,
        }
    }
}

/// Bytes reserved for one upload.
#[derive(Debug)]
pub struct Reservation {
    owner: Reservations,
    tenant: String,
    bytes: u64,
}

impl Reservation {
    /// The bytes reserved.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut map = self.owner.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(held) = map.get_mut(&self.tenant) {
            *held = held.saturating_sub(self.bytes);
        }
    }
}

/// Where a tenant's files are under the data directory.
#[derive(Debug, Clone)]
pub struct TenantDirs {
    /// `components/<tenant>`.
    pub components: PathBuf,
    /// `tenants/<tenant>/checkpoints`.
    pub checkpoints: PathBuf,
    /// `tenants/<tenant>/savepoints`.
    pub savepoints: PathBuf,
}

impl TenantDirs {
    /// The directories of `tenant` under `data_dir`.
    pub fn new(data_dir: &Path, tenant: &str) -> Self {
        let own = data_dir.join("tenants").join(tenant);
        TenantDirs {
            components: data_dir.join("components").join(tenant),
            checkpoints: own.join("checkpoints"),
            savepoints: own.join("savepoints"),
        }
    }

    /// What they hold now.
    pub fn usage(&self) -> DiskUsage {
        DiskUsage {
            components_bytes: dir_bytes(&self.components),
            checkpoints_bytes: dir_bytes(&self.checkpoints),
            savepoints_bytes: dir_bytes(&self.savepoints),
        }
    }
}

/// A directory taken out of sight by renaming it beside itself (`.deleting-*`, which no
/// listing shows): nothing can find it from then on; its files are removed when this is
/// dropped, which can wait until locks are released.
#[derive(Debug)]
pub struct SetAside(PathBuf);

/// Sets `dir` aside for removal.
pub fn set_aside(dir: &Path) -> std::io::Result<SetAside> {
    let parent = dir.parent().unwrap_or(Path::new("."));
    let aside = parent.join(format!(".deleting-{}", crate::auth::random_hex(8)));
    std::fs::rename(dir, &aside)?;
    Ok(SetAside(aside))
}

impl Drop for SetAside {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            tracing::warn!(dir = %self.0.display(), error = %e, "cannot remove a deleted directory");
        }
    }
}

/// Bytes of the files under `dir` (symlinks are not followed; a missing directory is empty).
pub fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            match entry.metadata() {
                Ok(m) if m.is_dir() => pending.push(entry.path()),
                Ok(m) if m.is_file() => total += m.len(),
                _ => {}
            }
        }
    }
    total
}

/// One of a tenant's savepoints.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SavepointInfo {
    /// Its name (the last part of its location), as `DELETE /v1/savepoints/{name}` takes it.
    pub name: String,
    /// Where it is (what `from_savepoint` takes).
    pub location: String,
    /// The job that took it, if its name says.
    pub job: Option<String>,
    /// Size on disk.
    pub bytes: u64,
    /// When it was written, ms since the epoch.
    pub created_ms: i64,
}

/// The savepoints under `dir`, newest first.
pub fn list_savepoints(dir: &Path) -> Vec<SavepointInfo> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<SavepointInfo> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        // `.deleting-*`: on its way out.
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter(|e| e.path().join("_metadata").is_file())
        .map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let created_ms = e
                .path()
                .join("_metadata")
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_millis() as i64);
            SavepointInfo {
                job: job_of(&name),
                location: e.path().display().to_string(),
                bytes: dir_bytes(&e.path()),
                created_ms,
                name,
            }
        })
        .collect();
    out.sort_by(|a, b| b.created_ms.cmp(&a.created_ms).then(a.name.cmp(&b.name)));
    out
}

/// `savepoint-<job>-<n>-<ms>`: the job's id.
fn job_of(name: &str) -> Option<String> {
    let rest = name.strip_prefix("savepoint-")?;
    let job = rest.split('-').next()?;
    (!job.is_empty()).then(|| job.to_string())
}

/// The directory of savepoint `name` under `dir`: a plain name, never a path.
pub fn savepoint_dir(dir: &Path, name: &str) -> Result<PathBuf, ClusterError> {
    // No path, and nothing hidden (`..`, a `.deleting-*` on its way out).
    let plain = !name.is_empty() && !name.starts_with('.') && !name.contains(['/', '\\', '\0']);
    let path = dir.join(name);
    if !plain || !path.join("_metadata").is_file() {
        return Err(ClusterError::not_found("savepoint", name));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uploads_in_flight_share_what_is_left() {
        let r = Reservations::default();
        let a = r.reserve("t", 100, 60);
        let b = r.reserve("t", 100, 60);
        assert_eq!((a.bytes(), b.bytes()), (60, 40));
        assert_eq!(r.reserve("other", 100, 60).bytes(), 60);
        drop(a);
        assert_eq!(r.reserve("t", 100, 60).bytes(), 60);
    }

    #[test]
    fn usage_and_savepoints_are_read_from_the_directories() {
        let data = tempfile::tempdir().unwrap();
        let dirs = TenantDirs::new(data.path(), "acme");
        std::fs::create_dir_all(&dirs.components).unwrap();
        std::fs::write(dirs.components.join("a.wasm"), [0u8; 100]).unwrap();
        let sp = dirs.savepoints.join("savepoint-j1-3-18c");
        std::fs::create_dir_all(sp.join("op")).unwrap();
        std::fs::write(sp.join("_metadata"), [0u8; 10]).unwrap();
        std::fs::write(sp.join("op/state"), [0u8; 1000]).unwrap();
        // Not a savepoint: no _metadata.
        std::fs::create_dir_all(dirs.savepoints.join("half")).unwrap();
        assert_eq!(
            dirs.usage(),
            DiskUsage {
                components_bytes: 100,
                checkpoints_bytes: 0,
                savepoints_bytes: 1010,
            }
        );
        let list = list_savepoints(&dirs.savepoints);
        assert_eq!(list.len(), 1);
        assert_eq!(
            (list[0].name.as_str(), list[0].job.as_deref(), list[0].bytes),
            ("savepoint-j1-3-18c", Some("j1"), 1010)
        );
        assert!(savepoint_dir(&dirs.savepoints, "savepoint-j1-3-18c").is_ok());
        for bad in ["half", "..", "../savepoints/savepoint-j1-3-18c", "", "nope"] {
            assert!(savepoint_dir(&dirs.savepoints, bad).is_err(), "{bad}");
        }
    }
}
