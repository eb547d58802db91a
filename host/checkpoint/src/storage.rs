//! Where checkpoints and savepoints live: any `object_store`, opened from a URL.
//!
//! - a plain path or `file:///abs/path`: a local directory (created if missing);
//! - `s3://bucket/prefix`: an S3-compatible store, configured from the usual `AWS_*`
//!   environment variables (`AWS_ENDPOINT`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//!   `AWS_REGION`, `AWS_ALLOW_HTTP` for a local test server).
//!
//! Tasks and the coordinator are threads, not async tasks: the calls here block on a small
//! shared tokio runtime.

use std::sync::{Arc, OnceLock};

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, PutPayload};

/// A storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The URL names no store this build can open.
    #[error("cannot open checkpoint storage '{url}': {message}")]
    Open {
        /// The URL given.
        url: String,
        /// Why.
        message: String,
    },
    /// The object does not exist.
    #[error("{0}: not found")]
    NotFound(String),
    /// The store failed.
    #[error("{location}: {source}")]
    Store {
        /// The object's URL.
        location: String,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("weir-storage")
            .enable_all()
            .build()
            .expect("cannot start the storage runtime")
    })
}

/// A directory in an object store.
#[derive(Clone)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    /// Prefix of this directory inside `store`.
    root: Path,
    /// URL of this directory, for messages.
    url: String,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage").field("url", &self.url).finish()
    }
}

/// A storage travels as its URL (in a job's description sent to a TaskManager); the
/// receiver opens it again.
impl serde::Serialize for Storage {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.url)
    }
}

impl<'de> serde::Deserialize<'de> for Storage {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let url = String::deserialize(d)?;
        Storage::open(&url).map_err(serde::de::Error::custom)
    }
}

impl Storage {
    /// Opens the directory named by `url`.
    pub fn open(url: &str) -> Result<Self, StorageError> {
        let fail = |message: String| StorageError::Open {
            url: url.to_string(),
            message,
        };
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(fail("no bucket in the URL".into()));
            }
            let store = object_store::aws::AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .build()
                .map_err(|e| fail(e.to_string()))?;
            return Ok(Storage {
                store: Arc::new(store),
                root: Path::from(prefix.trim_end_matches('/')),
                url: url.trim_end_matches('/').to_string(),
            });
        }
        let dir = match url.strip_prefix("file://") {
            Some(p) => std::path::PathBuf::from(p),
            None if url.contains("://") => {
                return Err(fail(
                    "unsupported scheme (use a directory, file:// or s3://)".into(),
                ))
            }
            None => std::path::PathBuf::from(url),
        };
        std::fs::create_dir_all(&dir).map_err(|e| fail(e.to_string()))?;
        let dir = dir.canonicalize().map_err(|e| fail(e.to_string()))?;
        // The store is the whole file system, so that `parent` can leave the directory.
        let store = object_store::local::LocalFileSystem::new().with_automatic_cleanup(true);
        let root = Path::from_absolute_path(&dir).map_err(|e| fail(e.to_string()))?;
        Ok(Storage {
            store: Arc::new(store),
            root,
            url: format!("file://{}", dir.display()),
        })
    }

    /// The subdirectory `rel` (`a/b`).
    pub fn child(&self, rel: &str) -> Storage {
        Storage {
            store: self.store.clone(),
            root: self.path(rel),
            url: format!("{}/{}", self.url, rel.trim_matches('/')),
        }
    }

    /// The directory that holds this one.
    pub fn parent(&self) -> Storage {
        let parts: Vec<_> = self.root.parts().collect();
        let root = match parts.len() {
            0 => Path::default(),
            n => Path::from_iter(parts[..n - 1].iter().cloned()),
        };
        let url = match self.url.rsplit_once('/') {
            Some((head, _)) if !head.ends_with('/') => head.to_string(),
            _ => self.url.clone(),
        };
        Storage {
            store: self.store.clone(),
            root,
            url,
        }
    }

    /// This directory's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// URL of `rel` inside this directory.
    pub fn url_of(&self, rel: &str) -> String {
        format!("{}/{}", self.url, rel)
    }

    fn path(&self, rel: &str) -> Path {
        let mut p = self.root.clone();
        for part in rel.split('/').filter(|s| !s.is_empty()) {
            p = p.child(part);
        }
        p
    }

    fn err(&self, rel: &str, source: object_store::Error) -> StorageError {
        match source {
            object_store::Error::NotFound { .. } => StorageError::NotFound(self.url_of(rel)),
            source => StorageError::Store {
                location: self.url_of(rel),
                source,
            },
        }
    }

    /// Writes `rel` (whole, atomically for readers).
    pub fn put(&self, rel: &str, data: Vec<u8>) -> Result<(), StorageError> {
        let path = self.path(rel);
        runtime()
            .block_on(self.store.put(&path, PutPayload::from(data)))
            .map(|_| ())
            .map_err(|e| self.err(rel, e))
    }

    /// Reads `rel`.
    pub fn get(&self, rel: &str) -> Result<Vec<u8>, StorageError> {
        let path = self.path(rel);
        runtime()
            .block_on(async {
                let r = self.store.get(&path).await?;
                r.bytes().await
            })
            .map(|b| b.to_vec())
            .map_err(|e| self.err(rel, e))
    }

    /// Every object under `rel`, as paths relative to this directory.
    pub fn list(&self, rel: &str) -> Result<Vec<String>, StorageError> {
        let prefix = self.path(rel);
        let root = self.root.clone();
        let metas: Vec<_> = runtime()
            .block_on(self.store.list(Some(&prefix)).try_collect::<Vec<_>>())
            .or_else(|e| match e {
                object_store::Error::NotFound { .. } => Ok(Vec::new()),
                e => Err(self.err(rel, e)),
            })?;
        let mut out: Vec<String> = metas
            .into_iter()
            .filter_map(|m| {
                m.location
                    .prefix_match(&root)
                    .map(|parts| parts.map(|p| p.as_ref().to_string()).collect::<Vec<_>>())
                    .map(|parts| parts.join("/"))
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// Deletes the object `rel` (a missing one is no error).
    pub fn delete(&self, rel: &str) -> Result<(), StorageError> {
        let path = self.path(rel);
        match runtime().block_on(self.store.delete(&path)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err(rel, e)),
        }
    }

    /// Deletes every object under `rel`.
    pub fn delete_all(&self, rel: &str) -> Result<(), StorageError> {
        for p in self.list(rel)? {
            self.delete(&p)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_directories_hold_objects() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::open(dir.path().to_str().unwrap()).unwrap();
        let c = s.child("job/chk-1");
        assert_eq!(c.parent().url(), s.child("job").url());
        c.parent().put("shared/x", b"x".to_vec()).unwrap();
        assert_eq!(s.child("job/shared").get("x").unwrap(), b"x");
        s.delete("job/shared/x").unwrap();
        assert!(s.list("job/shared").unwrap().is_empty());
        c.put("a/0.state", b"hello".to_vec()).unwrap();
        c.put("_metadata", b"m".to_vec()).unwrap();
        assert_eq!(c.get("a/0.state").unwrap(), b"hello");
        assert_eq!(
            s.list("job").unwrap(),
            ["job/chk-1/_metadata", "job/chk-1/a/0.state"]
        );
        assert!(matches!(c.get("missing"), Err(StorageError::NotFound(_))));
        s.delete_all("job/chk-1").unwrap();
        assert!(s.list("job").unwrap().is_empty());
        let url = format!("file://{}", dir.path().display());
        assert!(Storage::open(&url).unwrap().list("").unwrap().is_empty());
        assert!(Storage::open("ftp://x/y").is_err());
    }
}
