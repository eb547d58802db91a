//! Uploaded components: `<data_dir>/components/<tenant>/<id>.wasm`, with a JSON sidecar
//! (`<id>.json`) describing it. Ids are scoped by tenant: another tenant's id is unknown.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
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
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
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
        })
    }

    /// Checks and stores `bytes` for `tenant`: it must be a job component of a supported WIT
    /// version whose plan can be asked for. Uploading the same bytes again answers the
    /// component already stored.
    pub fn add(
        &self,
        runtime: &Runtime,
        tenant: &str,
        name: Option<String>,
        bytes: &[u8],
        limits: &weir_runtime::RuntimeConfig,
    ) -> Result<(ComponentInfo, bool), ClusterError> {
        let component = runtime
            .load(bytes)
            .map_err(|e| ClusterError::invalid_component(e.to_string()))?;
        let sha256 = component.digest();
        // Its plan runs in the tenant's sandbox; a component refused is not kept compiled.
        let component = component.with_limits(limits.clone());
        let refuse = |e: String| {
            if self.list(None).iter().all(|c| c.sha256 != sha256) {
                runtime.evict(&sha256);
            }
            ClusterError::invalid_component(e)
        };
        let id = sha256[..16].to_string();
        if let Some(info) = self.get(tenant, &id) {
            return Ok((info, false));
        }
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
            size: bytes.len() as u64,
            uploaded_ms: now_ms(),
            plan,
            plan_note,
        };
        let dir = self.dir.join(tenant);
        let io =
            |e: std::io::Error| ClusterError::internal(format!("cannot store a component: {e}"));
        std::fs::create_dir_all(&dir).map_err(io)?;
        // Bytes first, the record last: a record always has its bytes.
        write_atomic(&dir.join(format!("{id}.wasm")), bytes).map_err(io)?;
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
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// Wall-clock time, ms since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
