//! Uploaded components: `<data_dir>/components/<tenant>/<id>.wasm`, with a JSON sidecar
//! (`<id>.json`) describing it. Ids are scoped by tenant: another tenant's id is unknown.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use utoipa::ToSchema;
use weir_runtime::{JobComponent, Runtime};

use crate::error::ClusterError;

/// What the cluster knows about an uploaded component.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ComponentInfo {
    /// Its id (unique within the tenant).
    pub id: String,
    /// The tenant that uploaded it.
    pub tenant: String,
    /// Name given at upload (a file name), if any.
    pub name: Option<String>,
    /// Hex SHA-256 of its bytes.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// Upload time, ms since the epoch.
    pub uploaded_ms: i64,
    /// Its plan with no arguments and parallelism 1 (absent when the job needs arguments).
    pub plan: Option<PlanSummary>,
    /// Why the plan without arguments could not be read (e.g. a required argument).
    pub plan_note: Option<String>,
}

/// A job's dataflow graph, briefly.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct PlanSummary {
    /// The job's name.
    pub job: String,
    /// Key groups.
    pub max_parallelism: u32,
    /// Operators in the plan's order.
    pub operators: Vec<PlanOperator>,
    /// Edges, `source uid -> target uid`.
    pub edges: Vec<PlanEdge>,
}

/// One operator of a plan.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PlanOperator {
    /// Stable id (state is matched by it).
    pub uid: String,
    /// Display name.
    pub name: String,
    /// `source:<connector>`, `sink:<connector>`, `operator` or `guest-source`.
    pub kind: String,
    /// Subtasks.
    pub parallelism: u32,
}

/// One edge of a plan.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PlanEdge {
    /// Upstream uid.
    pub source: String,
    /// Downstream uid.
    pub target: String,
    /// `forward`, `hash`, `rebalance` or `broadcast`.
    pub partitioning: String,
}

impl PlanSummary {
    /// Summarises a validated graph.
    pub fn of(graph: &weir_core::JobGraph) -> Self {
        PlanSummary {
            job: graph.name.clone(),
            max_parallelism: graph.max_parallelism,
            operators: graph
                .nodes
                .iter()
                .map(|n| PlanOperator {
                    uid: n.uid.clone(),
                    name: n.name.clone(),
                    kind: match &n.kind {
                        weir_core::NodeKind::Source(c) => format!("source:{}", c.name),
                        weir_core::NodeKind::Sink(c) => format!("sink:{}", c.name),
                        weir_core::NodeKind::Operator => "operator".into(),
                        weir_core::NodeKind::GuestSource => "guest-source".into(),
                    },
                    parallelism: n.parallelism,
                })
                .collect(),
            edges: graph
                .edges
                .iter()
                .map(|e| PlanEdge {
                    source: graph.nodes[e.source].uid.clone(),
                    target: graph.nodes[e.target].uid.clone(),
                    partitioning: format!("{:?}", e.partitioning).to_lowercase(),
                })
                .collect(),
        }
    }
}

/// The component store.
pub struct ComponentStore {
    dir: PathBuf,
    /// By `(tenant, id)`.
    known: Mutex<BTreeMap<(String, String), ComponentInfo>>,
    /// Uploads being checked (compiled) at once.
    checks: Permits,
}

impl ComponentStore {
    /// Opens the store under `dir`, reading what earlier runs left there.
    pub fn open(dir: &Path) -> Result<Self, ClusterError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| ClusterError::internal(format!("cannot create {}: {e}", dir.display())))?;
        let mut known = BTreeMap::new();
        for tenant in read_dir(dir)? {
            if !tenant.is_dir() {
                continue;
            }
            for file in read_dir(&tenant)? {
                if is_leftover(&file) {
                    // An upload or a write cut short by a crash.
                    let _ = std::fs::remove_file(&file);
                    continue;
                }
                if file.extension().is_some_and(|e| e == "json") {
                    let info: Option<ComponentInfo> = std::fs::read(&file)
                        .ok()
                        .and_then(|b| serde_json::from_slice(&b).ok());
                    match info {
                        Some(i) if file.with_extension("wasm").exists() => {
                            known.insert((i.tenant.clone(), i.id.clone()), i);
                        }
                        _ => {
                            tracing::warn!(file = %file.display(), "skipping an unreadable component record")
                        }
                    }
                }
            }
        }
        Ok(ComponentStore {
            dir: dir.to_path_buf(),
            known: Mutex::new(known),
            checks: Permits::new(CONCURRENT_CHECKS),
        })
    }

    /// Starts receiving an upload for `tenant`, at most `limit` bytes (what sets it: `what`):
    /// a temporary file in the tenant's directory, removed unless [`ComponentStore::add`]
    /// keeps it.
    pub fn begin_upload(
        &self,
        tenant: &str,
        limit: u64,
        what: &'static str,
        reservation: Option<crate::disk::Reservation>,
    ) -> Result<Upload, ClusterError> {
        let dir = self.dir.join(tenant);
        let io =
            |e: std::io::Error| ClusterError::internal(format!("cannot receive a component: {e}"));
        std::fs::create_dir_all(&dir).map_err(io)?;
        let path = dir.join(format!("{UPLOAD_PREFIX}{}", crate::auth::random_hex(8)));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io)?;
        Ok(Upload {
            path,
            file: Some(std::io::BufWriter::with_capacity(256 << 10, file)),
            hasher: Sha256::new(),
            size: 0,
            limit,
            what,
            _reservation: reservation,
        })
    }

    /// Checks and stores an upload for `tenant`: it must be a job component of a supported
    /// WIT version whose plan can be asked for. Uploading the same bytes again answers the
    /// component already stored. Whatever the outcome, the upload's temporary file is gone
    /// afterwards (kept as the component's bytes, or removed).
    pub fn add(
        &self,
        runtime: &Runtime,
        tenant: &str,
        name: Option<String>,
        upload: Upload,
        limits: &weir_runtime::RuntimeConfig,
    ) -> Result<(ComponentInfo, bool), ClusterError> {
        let received = upload.finish()?;
        let id = received.sha256[..16].to_string();
        if let Some(info) = self.get(tenant, &id) {
            return Ok((info, false));
        }
        // Checking compiles the component: bytes in memory, a few at a time whatever the
        // number of uploads in flight.
        let _permit = self.checks.acquire();
        let bytes = std::fs::read(&received.path).map_err(|e| {
            ClusterError::internal(format!("cannot read a received component: {e}"))
        })?;
        let component = runtime
            .load(&bytes)
            .map_err(|e| ClusterError::invalid_component(e.to_string()))?;
        drop(bytes);
        let sha256 = component.digest();
        // Its plan runs in the tenant's sandbox; a component refused is not kept compiled.
        let component = component.with_limits(limits.clone());
        let refuse = |e: String| {
            if self.list(None).iter().all(|c| c.sha256 != sha256) {
                runtime.evict(&sha256);
            }
            ClusterError::invalid_component(e)
        };
        let (plan, plan_note) = match component.plan(&[], 1) {
            Ok(graph) => (Some(PlanSummary::of(&graph)), None),
            // The guest answered: it needs arguments, say. Its code runs.
            Err(e @ weir_runtime::GuestError::Plan(_)) => (None, Some(e.to_string())),
            Err(e @ weir_runtime::GuestError::InvalidPlan(_)) => (None, Some(e.to_string())),
            // It trapped, looped or ran out of memory asking for its plan.
            Err(e) => return Err(refuse(e.to_string())),
        };
        let info = ComponentInfo {
            id: id.clone(),
            tenant: tenant.to_string(),
            name,
            sha256,
            size: received.size,
            uploaded_ms: now_ms(),
            plan,
            plan_note,
        };
        let dir = self.dir.join(tenant);
        let io =
            |e: std::io::Error| ClusterError::internal(format!("cannot store a component: {e}"));
        // Bytes first, the record last: a record always has its bytes.
        received
            .keep_as(&dir.join(format!("{id}.wasm")))
            .map_err(io)?;
        let record = serde_json::to_vec_pretty(&info).expect("serializable");
        write_atomic(&dir.join(format!("{id}.json")), &record).map_err(io)?;
        self.known
            .lock()
            .expect("not poisoned")
            .insert((tenant.to_string(), id), info.clone());
        Ok((info, true))
    }

    /// A tenant's component.
    pub fn get(&self, tenant: &str, id: &str) -> Option<ComponentInfo> {
        let known = self.known.lock().expect("not poisoned");
        known.get(&(tenant.to_string(), id.to_string())).cloned()
    }

    /// Components of one tenant (every tenant's: `None`).
    pub fn list(&self, tenant: Option<&str>) -> Vec<ComponentInfo> {
        let known = self.known.lock().expect("not poisoned");
        known
            .values()
            .filter(|i| tenant.is_none_or(|t| t == i.tenant))
            .cloned()
            .collect()
    }

    /// Loads a stored component (compiled once per digest by the runtime's cache).
    pub fn load(
        &self,
        runtime: &Runtime,
        tenant: &str,
        id: &str,
    ) -> Result<Arc<JobComponent>, ClusterError> {
        let info = self
            .get(tenant, id)
            .ok_or_else(|| ClusterError::not_found("component", id))?;
        // Compiled at upload and cached by digest: no need to read and hash it again.
        if let Some(compiled) = runtime.cached(&info.sha256) {
            return Ok(compiled);
        }
        let path = self.dir.join(tenant).join(format!("{id}.wasm"));
        let bytes = std::fs::read(&path)
            .map_err(|e| ClusterError::internal(format!("cannot read component {id}: {e}")))?;
        runtime
            .load(&bytes)
            .map_err(|e| ClusterError::invalid_component(e.to_string()))
    }

    /// Deletes a component (jobs running it keep their copy).
    pub fn remove(&self, tenant: &str, id: &str) -> Result<ComponentInfo, ClusterError> {
        let info = self
            .known
            .lock()
            .expect("not poisoned")
            .remove(&(tenant.to_string(), id.to_string()))
            .ok_or_else(|| ClusterError::not_found("component", id))?;
        let dir = self.dir.join(tenant);
        let _ = std::fs::remove_file(dir.join(format!("{id}.json")));
        let _ = std::fs::remove_file(dir.join(format!("{id}.wasm")));
        Ok(info)
    }
}

fn read_dir(dir: &Path) -> Result<Vec<PathBuf>, ClusterError> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| ClusterError::internal(format!("cannot list {}: {e}", dir.display())))?;
    Ok(entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    // A name of its own: two uploads of the same bytes may write at once.
    let tmp = path.with_extension(format!("tmp-{}", crate::auth::random_hex(8)));
    let written = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        // A full disk, say: leave nothing behind.
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Temporary files' names: uploads in flight and atomic writes.
const UPLOAD_PREFIX: &str = ".upload-";

fn is_leftover(file: &Path) -> bool {
    let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.starts_with(UPLOAD_PREFIX) || name.contains(".tmp-")
}

/// Uploads checked at once; the others wait (each holds its component's bytes while it is
/// compiled).
const CONCURRENT_CHECKS: usize = 2;

/// A component being received: a temporary file that is removed when this is dropped, unless
/// it was kept as a component's bytes.
pub struct Upload {
    path: PathBuf,
    file: Option<std::io::BufWriter<std::fs::File>>,
    hasher: Sha256,
    size: u64,
    limit: u64,
    what: &'static str,
    /// The disk promised to it, given back when it is stored or dropped.
    _reservation: Option<crate::disk::Reservation>,
}

impl Upload {
    /// Appends bytes; refused (and nothing more is written) past the limit.
    pub fn write(&mut self, chunk: &[u8]) -> Result<(), UploadError> {
        use std::io::Write as _;
        self.size += chunk.len() as u64;
        let too_large = UploadError::TooLarge {
            limit: self.limit,
            what: self.what,
        };
        if self.size > self.limit {
            self.file = None;
            return Err(too_large);
        }
        let file = self.file.as_mut().ok_or(too_large)?;
        self.hasher.update(chunk);
        file.write_all(chunk).map_err(UploadError::Io)
    }

    /// Bytes received so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    fn finish(mut self) -> Result<Received, ClusterError> {
        let file = self
            .file
            .take()
            .ok_or_else(|| ClusterError::internal("an upload was finished twice"))?;
        file.into_inner()
            .map_err(|e| e.into_error())
            .and_then(|f| f.sync_all())
            .map_err(|e| ClusterError::internal(format!("cannot receive a component: {e}")))?;
        let sha256 = weir_core::digest_to_hex(&std::mem::take(&mut self.hasher).finalize().into());
        Ok(Received {
            path: std::mem::take(&mut self.path),
            size: self.size,
            sha256,
        })
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        self.file = None;
        if !self.path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Why an upload's bytes were not taken.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// Past the tenant's limit.
    #[error("the upload is larger than the tenant's {what} allows ({limit} bytes)")]
    TooLarge {
        /// The limit.
        limit: u64,
        /// What sets it: `max_component_bytes`, or what is left of `max_disk_bytes`.
        what: &'static str,
    },
    /// The disk refused them (full, say).
    #[error("cannot store the upload: {0}")]
    Io(std::io::Error),
}

/// A complete upload, its file removed when dropped unless kept.
struct Received {
    path: PathBuf,
    size: u64,
    sha256: String,
}

impl Received {
    fn keep_as(mut self, path: &Path) -> std::io::Result<()> {
        let from = std::mem::take(&mut self.path);
        let renamed = std::fs::rename(&from, path);
        if renamed.is_err() {
            let _ = std::fs::remove_file(&from);
        }
        renamed
    }
}

impl Drop for Received {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A counting semaphore for blocking threads.
struct Permits {
    free: Mutex<usize>,
    freed: std::sync::Condvar,
}

impl Permits {
    fn new(n: usize) -> Self {
        Permits {
            free: Mutex::new(n),
            freed: std::sync::Condvar::new(),
        }
    }

    fn acquire(&self) -> Permit<'_> {
        let mut free = self.free.lock().expect("not poisoned");
        while *free == 0 {
            free = self.freed.wait(free).expect("not poisoned");
        }
        *free -= 1;
        Permit(self)
    }
}

struct Permit<'a>(&'a Permits);

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().expect("not poisoned") += 1;
        self.0.freed.notify_one();
    }
}

pub use weir_core::now_ms;

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut n: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        n.sort();
        n
    }

    #[test]
    fn a_failed_write_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        // The rename fails (a directory stands in the way), as a full disk fails the write.
        std::fs::create_dir(dir.path().join("x.json")).unwrap();
        std::fs::write(dir.path().join("x.json/inside"), b"").unwrap();
        assert!(write_atomic(&dir.path().join("x.json"), b"{}").is_err());
        assert_eq!(names(dir.path()), ["x.json"]);
    }

    #[test]
    fn an_upload_leaves_nothing_unless_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = ComponentStore::open(dir.path()).unwrap();
        // Over its limit: refused, and its file goes when it is dropped.
        let mut upload = store
            .begin_upload("t", 10, "max_component_bytes", None)
            .unwrap();
        upload.write(&[0; 8]).unwrap();
        let e = upload.write(&[0; 8]).unwrap_err();
        assert!(
            e.to_string()
                .contains("max_component_bytes allows (10 bytes)"),
            "{e}"
        );
        assert_eq!(names(&dir.path().join("t")).len(), 1);
        drop(upload);
        assert!(names(&dir.path().join("t")).is_empty());
        // Leftovers of a crash are removed when the store opens.
        std::fs::write(dir.path().join("t/.upload-0123"), b"half").unwrap();
        std::fs::write(dir.path().join("t/abc.json.tmp-99"), b"half").unwrap();
        ComponentStore::open(dir.path()).unwrap();
        assert!(names(&dir.path().join("t")).is_empty());
    }
}
