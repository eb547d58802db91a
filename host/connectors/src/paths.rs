//! Where a tenant's jobs may read and write, and how their files are opened.
//!
//! A file connector's path is resolved (symlinks and `..`) and must lie under one of the
//! tenant's allowed directories: checked at submission and again at every start of the job's
//! tasks. The connectors then open their files through an [`Anchored`] path: relative to a
//! handle on the allowed directory, never following a symlink nor climbing `..` (Linux
//! `openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, or a walk one component at a time
//! with `O_NOFOLLOW` where `openat2` is missing). A path swapped for a symlink after the check
//! — while earlier files are being read, say — is then refused instead of followed.
//!
//! A tenant is told only that a path is not allowed: the same answer whether it exists or
//! not, without where a symlink leads or any server path it did not send itself. The details
//! go to the server's log.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// Why a path cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    /// Outside the tenant's directories, or leading out of them (through a symlink or `..`),
    /// or not resolvable: deliberately one answer for all.
    #[error("path '{0}' is not allowed: it leads outside the tenant's allowed paths")]
    NotAllowed(String),
    /// Paths must be absolute.
    #[error("'{0}' is not an absolute path")]
    NotAbsolute(String),
    /// A local run's path cannot be resolved (a tenant's gets [`PathError::NotAllowed`]).
    #[error("'{path}': {reason}")]
    Unresolvable {
        /// The path as given.
        path: String,
        /// Why.
        reason: String,
    },
    /// Opening or reading failed.
    #[error("{path}: {source}")]
    Io {
        /// The path as given (with the name opened beneath it).
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// `path` with symlinks and `..` resolved, for a path that may not exist yet: the longest
/// existing prefix is canonicalized and the rest (plain names only) appended. Its errors
/// carry details for the server's log, not for a tenant.
pub fn resolve(path: &Path) -> Result<PathBuf, String> {
    if !path.is_absolute() {
        return Err(format!("'{}' is not an absolute path", path.display()));
    }
    let mut existing = PathBuf::new();
    let mut rest: Vec<&std::ffi::OsStr> = Vec::new();
    for c in path.components() {
        if !rest.is_empty() {
            match c {
                Component::Normal(name) => rest.push(name),
                Component::CurDir => {}
                _ => {
                    return Err(format!(
                        "'{}' climbs out of a directory that does not exist",
                        path.display()
                    ))
                }
            }
            continue;
        }
        let next = existing.join(c.as_os_str());
        if c == Component::ParentDir || next.symlink_metadata().is_ok() {
            existing = next;
        } else if let Component::Normal(name) = c {
            rest.push(name);
        }
    }
    let mut resolved = existing
        .canonicalize()
        .map_err(|e| format!("'{}': {e}", path.display()))?;
    resolved.extend(rest);
    Ok(resolved)
}

/// The allowed directory (resolved) that `resolved` lies under, if any.
fn root_of(resolved: &Path, allowed: &[PathBuf]) -> Option<PathBuf> {
    allowed
        .iter()
        .map(|a| resolve(a).unwrap_or_else(|_| a.clone()))
        .find(|a| resolved.starts_with(a))
}

/// `path` resolved, if it lies under one of `allowed` (resolved as well) and is absolute;
/// otherwise [`PathError::NotAllowed`], whatever the reason, with the reason logged.
fn allowed_root(path: &Path, allowed: &[PathBuf]) -> Result<(PathBuf, PathBuf), PathError> {
    if !path.is_absolute() {
        return Err(PathError::NotAbsolute(path.display().to_string()));
    }
    let resolved = resolve(path);
    match resolved
        .as_ref()
        .ok()
        .and_then(|r| root_of(r, allowed).map(|root| (r.clone(), root)))
    {
        Some(inside) => Ok(inside),
        None => {
            tracing::warn!(
                path = %path.display(),
                resolved = ?resolved,
                "refused a path outside the tenant's allowed paths"
            );
            Err(PathError::NotAllowed(path.display().to_string()))
        }
    }
}

/// Whether `path` (resolved) lies under one of `allowed` (resolved as well); answers the
/// resolved path.
pub fn check_allowed(path: &Path, allowed: &[PathBuf]) -> Result<PathBuf, String> {
    allowed_root(path, allowed)
        .map(|(resolved, _)| resolved)
        .map_err(|e| e.to_string())
}

/// Checks every file connector of `graph` (its `path`) against `allowed`, and that a
/// source's path, if it exists, is a regular file or a directory (a FIFO or a device would
/// block or never end); the error names the connector and the operator.
pub fn check_graph(graph: &weir_core::JobGraph, allowed: &[PathBuf]) -> Result<(), String> {
    for n in &graph.nodes {
        let (c, source) = match &n.kind {
            weir_core::NodeKind::Source(c) => (c, true),
            weir_core::NodeKind::Sink(c) => (c, false),
            _ => continue,
        };
        let Some(path) = c.get("path") else {
            continue;
        };
        let named = |e: String| format!("{} '{}': {e}", c.name, n.uid);
        let resolved = check_allowed(Path::new(path), allowed).map_err(named)?;
        if source {
            if let Ok(meta) = resolved.symlink_metadata() {
                if !meta.is_file() && !meta.is_dir() {
                    return Err(named(not_regular(Path::new(path))));
                }
            }
        }
    }
    Ok(())
}

/// The message for a source path that is neither a regular file nor a directory.
pub fn not_regular(path: &Path) -> String {
    format!(
        "path '{}' is not a regular file or a directory",
        path.display()
    )
}

/// A file connector's path, held beneath the allowed directory it lies in. Whatever is
/// opened through it is opened relative to that directory's handle, with no symlink followed
/// and no `..` climbed: what was checked is what is opened, however the path changes later.
#[derive(Clone)]
pub struct Anchored {
    root: Arc<OwnedFd>,
    /// The path's place beneath `root`, symlinks resolved when it was anchored.
    beneath: PathBuf,
    /// The allowed directory (resolved), for [`Anchored::resolved`].
    root_path: PathBuf,
    /// The path as the job gave it: messages name only this.
    shown: PathBuf,
}

impl Anchored {
    /// Anchors `path` beneath the one of `allowed` it lies in; with no `allowed` (a local
    /// run), beneath `/` as it resolves now.
    pub fn new(path: &Path, allowed: Option<&[PathBuf]>) -> Result<Self, PathError> {
        let (resolved, root_path) = match allowed {
            Some(allowed) => allowed_root(path, allowed)?,
            None => {
                let resolved = resolve(path).map_err(|reason| PathError::Unresolvable {
                    path: path.display().to_string(),
                    reason,
                })?;
                (resolved, PathBuf::from("/"))
            }
        };
        let io = |source: Errno| PathError::Io {
            path: path.display().to_string(),
            source: source.into(),
        };
        // The allowed directory itself is the operator's, trusted as configured.
        let root = rustix::fs::open(&root_path, dir_flags(), Mode::empty()).map_err(io)?;
        let beneath = resolved
            .strip_prefix(&root_path)
            .expect("a resolved path lies under its root")
            .to_path_buf();
        Ok(Anchored {
            root: Arc::new(root),
            beneath,
            root_path,
            shown: path.to_path_buf(),
        })
    }

    /// Anchors a path weir resolved (and checked) earlier, beneath `/` as it is, not
    /// resolved again: a symlink on it now is refused rather than followed.
    pub fn as_resolved(path: &Path) -> Result<Self, PathError> {
        let beneath = path.strip_prefix("/").ok().filter(|b| plain(b));
        let Some(beneath) = beneath else {
            tracing::warn!(path = %path.display(), "refused a recorded path that is not plain");
            return Err(PathError::NotAllowed(path.display().to_string()));
        };
        let root =
            rustix::fs::open("/", dir_flags(), Mode::empty()).map_err(|e| PathError::Io {
                path: path.display().to_string(),
                source: e.into(),
            })?;
        Ok(Anchored {
            root: Arc::new(root),
            beneath: beneath.to_path_buf(),
            root_path: PathBuf::from("/"),
            shown: path.to_path_buf(),
        })
    }

    /// The path as the job gave it.
    pub fn shown(&self) -> &Path {
        &self.shown
    }

    /// The path as it resolved when anchored.
    pub fn resolved(&self) -> PathBuf {
        join(&self.root_path, &self.beneath)
    }

    /// Opens `sub` (plain names; empty for the path itself) beneath the path with `flags`
    /// (and `mode`, when creating).
    pub fn open(&self, sub: &Path, flags: OFlags, mode: Mode) -> Result<OwnedFd, PathError> {
        let shown = self.shown_at(sub);
        if !plain(sub) {
            tracing::warn!(path = %shown.display(), "refused a name that is not plain");
            return Err(PathError::NotAllowed(shown.display().to_string()));
        }
        open_beneath(self.root.as_fd(), &join(&self.beneath, sub), flags, mode)
            .map_err(|e| self.error(&shown, e))
    }

    /// `sub` beneath the path as the job gave it.
    pub fn shown_at(&self, sub: &Path) -> PathBuf {
        join(&self.shown, sub)
    }

    /// Creates the path as a directory, and its missing parents, each beneath the one
    /// before; an existing symlink on the way is refused, not followed.
    pub fn create_dir_all(&self) -> Result<(), PathError> {
        let err = |e| self.error(&self.shown, e);
        let mut dir = open_beneath(self.root.as_fd(), Path::new(""), dir_flags(), Mode::empty())
            .map_err(err)?;
        for name in self.beneath.iter() {
            match rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(0o777)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(err(e)),
            }
            dir = open_beneath(dir.as_fd(), Path::new(name), dir_flags(), Mode::empty())
                .map_err(err)?;
        }
        Ok(())
    }

    /// Symlinks met (or `..` leading out) are "not allowed", with the details logged;
    /// other errors are I/O errors on the path as given.
    fn error(&self, shown: &Path, e: Errno) -> PathError {
        if e == Errno::LOOP || e == Errno::XDEV {
            tracing::warn!(
                path = %shown.display(),
                beneath = %self.resolved().display(),
                error = %e,
                "refused a path that leads through a symlink"
            );
            PathError::NotAllowed(shown.display().to_string())
        } else {
            PathError::Io {
                path: shown.display().to_string(),
                source: e.into(),
            }
        }
    }
}

/// `base` and then `sub`; `base` itself for an empty `sub` (`join` would add a `/`, which
/// only a directory satisfies).
fn join(base: &Path, sub: &Path) -> PathBuf {
    if sub.as_os_str().is_empty() {
        base.to_path_buf()
    } else {
        base.join(sub)
    }
}

/// Flags to open a directory to list it or to open files beneath it.
pub fn dir_flags() -> OFlags {
    OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC
}

/// Only plain names: no root, no `..` (`.` is harmless).
fn plain(sub: &Path) -> bool {
    sub.components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

/// Set once `openat2` turned out to be missing (Linux before 5.6, or refused by a seccomp
/// filter): the walk is used from then on.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// Opens `rel` beneath `root`, following no symlink and leaving `root` by no `..`.
fn open_beneath(
    root: BorrowedFd<'_>,
    rel: &Path,
    flags: OFlags,
    mode: Mode,
) -> Result<OwnedFd, Errno> {
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    if !NO_OPENAT2.load(Ordering::Relaxed) {
        match rustix::fs::openat2(
            root,
            rel,
            flags | OFlags::CLOEXEC,
            mode,
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS,
        ) {
            // Old Docker seccomp profiles answer EPERM rather than ENOSYS.
            Err(Errno::NOSYS) | Err(Errno::PERM) => NO_OPENAT2.store(true, Ordering::Relaxed),
            other => return other,
        }
    }
    open_walking(root, rel, flags, mode)
}

/// [`open_beneath`] without `openat2`: one `openat` per component, each directory opened with
/// `O_NOFOLLOW | O_DIRECTORY` relative to the one before, the last with `O_NOFOLLOW`.
fn open_walking(
    root: BorrowedFd<'_>,
    rel: &Path,
    flags: OFlags,
    mode: Mode,
) -> Result<OwnedFd, Errno> {
    let mut names: Vec<&OsStr> = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(name) => names.push(name),
            Component::CurDir => {}
            _ => return Err(Errno::XDEV),
        }
    }
    let Some((last, dirs)) = names.split_last() else {
        return rustix::fs::openat(root, ".", flags | OFlags::CLOEXEC, mode);
    };
    let mut dir: Option<OwnedFd> = None;
    for name in dirs {
        let at = dir.as_ref().map_or(root, |d| d.as_fd());
        dir = Some(
            match rustix::fs::openat(at, *name, dir_flags() | OFlags::NOFOLLOW, Mode::empty()) {
                // `O_DIRECTORY` answers ENOTDIR for a symlink: it is one, as openat2 says.
                Err(Errno::NOTDIR)
                    if rustix::fs::statat(at, *name, AtFlags::SYMLINK_NOFOLLOW)
                        .is_ok_and(|st| FileType::from_raw_mode(st.st_mode).is_symlink()) =>
                {
                    return Err(Errno::LOOP)
                }
                other => other?,
            },
        );
    }
    let at = dir.as_ref().map_or(root, |d| d.as_fd());
    rustix::fs::openat(at, *last, flags | OFlags::NOFOLLOW | OFlags::CLOEXEC, mode)
}

/// The entries of an open directory (not `.` and `..`) with their types, symlinks not
/// followed.
pub fn entries(dir: BorrowedFd<'_>) -> std::io::Result<Vec<(OsString, FileType)>> {
    use std::os::unix::ffi::OsStrExt;
    let mut out = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        let kind = match entry.file_type() {
            // Some filesystems do not say in the listing.
            FileType::Unknown => {
                let st = rustix::fs::statat(dir, entry.file_name(), AtFlags::SYMLINK_NOFOLLOW)?;
                FileType::from_raw_mode(st.st_mode)
            }
            kind => kind,
        };
        out.push((OsStr::from_bytes(name).to_os_string(), kind));
    }
    Ok(out)
}

/// What an open file is.
pub fn file_type(fd: BorrowedFd<'_>) -> std::io::Result<FileType> {
    Ok(FileType::from_raw_mode(rustix::fs::fstat(fd)?.st_mode))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_dot_and_symlinks_cannot_escape() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path().canonicalize().unwrap();
        let allowed = root.join("acme");
        let other = root.join("other");
        std::fs::create_dir_all(&allowed).unwrap();
        std::fs::create_dir_all(&other).unwrap();
        std::os::unix::fs::symlink(&other, allowed.join("link")).unwrap();
        std::os::unix::fs::symlink(root.join("nowhere"), allowed.join("dangling")).unwrap();
        let ok = |p: PathBuf| check_allowed(&p, std::slice::from_ref(&allowed));
        assert!(ok(allowed.join("in.txt")).is_ok());
        assert!(
            ok(allowed.join("new/dir/out")).is_ok(),
            "need not exist yet"
        );
        assert!(ok(allowed.join("./x")).is_ok());
        let e = ok(allowed.join("../other/in.txt")).unwrap_err();
        assert!(e.contains("outside the tenant's allowed paths"), "{e}");
        assert!(ok(allowed.join("missing/../../other")).is_err());
        assert!(ok(PathBuf::from("relative/in.txt")).is_err());
        assert!(
            ok(root.join("acme-evil/x")).is_err(),
            "a prefix of the name is not inside"
        );
        // One answer, naming only what was sent: whether the path exists, and where a
        // symlink leads, stay unsaid.
        let shape = |p: PathBuf| {
            ok(p.clone())
                .unwrap_err()
                .replace(&*p.to_string_lossy(), "P")
        };
        let cases = [
            allowed.join("link/in.txt"),
            allowed.join("dangling/x"),
            allowed.join("missing/../../other"),
            other.join("in.txt"),
            PathBuf::from("/nonexistent/x"),
        ];
        for p in &cases {
            let e = shape(p.clone());
            assert_eq!(e, shape(cases[0].clone()), "{}", p.display());
            assert!(!e.contains("other") && !e.contains("nowhere") && !e.contains("exist"));
        }
    }

    /// Opens `rel` beneath `root` by both ways: `openat2`, and the walk.
    fn both(root: &Path, rel: &str) -> [Result<OwnedFd, Errno>; 2] {
        let root = rustix::fs::open(root, dir_flags(), Mode::empty()).unwrap();
        let flags = OFlags::RDONLY | OFlags::NONBLOCK;
        [
            open_beneath(root.as_fd(), Path::new(rel), flags, Mode::empty()),
            open_walking(root.as_fd(), Path::new(rel), flags, Mode::empty()),
        ]
    }

    #[test]
    fn opening_beneath_follows_no_symlink_and_climbs_no_dot_dot() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("a/b/f"), b"inside").unwrap();
        std::fs::write(dir.path().join("secret"), b"secret").unwrap();
        std::os::unix::fs::symlink(root.join("a"), root.join("mid")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), root.join("a/last")).unwrap();
        std::os::unix::fs::symlink("b/f", root.join("a/inner")).unwrap();
        for r in both(&root, "a/b/f").into_iter().chain(both(&root, "")) {
            assert!(r.is_ok(), "{r:?}");
        }
        for rel in [
            "mid/b/f",   // a symlink in the middle, even one that stays inside
            "a/last",    // a symlinked last component
            "a/inner",   // a relative symlink that stays inside
            "../secret", // climbing out
            "a/../../secret",
            "/etc/passwd", // absolute
        ] {
            for r in both(&root, rel) {
                let e = r.expect_err(rel);
                assert!(e == Errno::LOOP || e == Errno::XDEV, "{rel}: {e}");
            }
        }
        // Through an anchored path: "not allowed", naming only the path as given.
        let allowed = [root.clone()];
        let a = Anchored::new(&root.join("a"), Some(&allowed)).unwrap();
        assert!(a
            .open(Path::new("b/f"), OFlags::RDONLY, Mode::empty())
            .is_ok());
        for sub in ["last", "../mid/b/f", "inner"] {
            let e = a
                .open(Path::new(sub), OFlags::RDONLY, Mode::empty())
                .expect_err(sub);
            assert!(matches!(e, PathError::NotAllowed(_)), "{sub}: {e}");
            assert!(!e.to_string().contains("secret"), "{e}");
        }
        // A directory swapped for a symlink after anchoring is refused, not followed.
        let swap = root.join("swap");
        std::fs::create_dir_all(&swap).unwrap();
        std::fs::write(swap.join("f"), b"inside").unwrap();
        let s = Anchored::new(&swap, Some(&allowed)).unwrap();
        assert!(s
            .open(Path::new("f"), OFlags::RDONLY, Mode::empty())
            .is_ok());
        std::fs::rename(&swap, root.join("swap.old")).unwrap();
        std::fs::create_dir_all(dir.path().join("elsewhere")).unwrap();
        std::fs::write(dir.path().join("elsewhere/f"), b"secret").unwrap();
        std::os::unix::fs::symlink(dir.path().join("elsewhere"), &swap).unwrap();
        let e = s
            .open(Path::new("f"), OFlags::RDONLY, Mode::empty())
            .unwrap_err();
        assert!(matches!(e, PathError::NotAllowed(_)), "{e}");
        // Creating directories beneath: a symlink put on the way after anchoring is refused.
        let out = Anchored::new(&root.join("made/new"), Some(&allowed)).unwrap();
        std::os::unix::fs::symlink(dir.path(), root.join("made")).unwrap();
        let e = out.create_dir_all().unwrap_err();
        assert!(matches!(e, PathError::NotAllowed(_)), "{e}");
        assert!(!dir.path().join("new").exists());
    }
}
