//! Where a tenant's jobs may read and write: file connector paths are resolved (symlinks and
//! `..`) and must lie under one of the tenant's allowed directories.

use std::path::{Component, Path, PathBuf};

/// `path` with symlinks and `..` resolved, for a path that may not exist yet: the longest
/// existing prefix is canonicalized and the rest (plain names only) appended.
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

/// Whether `path` (resolved) lies under one of `allowed` (resolved as well).
pub fn check_allowed(path: &Path, allowed: &[PathBuf]) -> Result<PathBuf, String> {
    let resolved = resolve(path)?;
    let inside = allowed.iter().any(|a| {
        let a = resolve(a).unwrap_or_else(|_| a.clone());
        resolved.starts_with(&a)
    });
    if inside {
        Ok(resolved)
    } else {
        Err(format!(
            "path '{}' is outside the tenant's allowed paths{}",
            path.display(),
            if resolved != path {
                format!(" (it resolves to '{}')", resolved.display())
            } else {
                String::new()
            }
        ))
    }
}

/// Checks every file connector of `graph` (its `path`) against `allowed`; the error names
/// the connector and the operator.
pub fn check_graph(graph: &weir_core::JobGraph, allowed: &[PathBuf]) -> Result<(), String> {
    for n in &graph.nodes {
        if let weir_core::NodeKind::Source(c) | weir_core::NodeKind::Sink(c) = &n.kind {
            if let Some(path) = c.get("path") {
                check_allowed(Path::new(path), allowed)
                    .map_err(|e| format!("{} '{}': {e}", c.name, n.uid))?;
            }
        }
    }
    Ok(())
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
        let ok = |p: PathBuf| check_allowed(&p, std::slice::from_ref(&allowed));
        assert!(ok(allowed.join("in.txt")).is_ok());
        assert!(
            ok(allowed.join("new/dir/out")).is_ok(),
            "need not exist yet"
        );
        assert!(ok(allowed.join("./x")).is_ok());
        let e = ok(allowed.join("../other/in.txt")).unwrap_err();
        assert!(e.contains("outside the tenant's allowed paths"), "{e}");
        let e = ok(allowed.join("link/in.txt")).unwrap_err();
        assert!(e.contains("resolves to"), "{e}");
        assert!(ok(allowed.join("missing/../../other")).is_err());
        assert!(ok(PathBuf::from("relative/in.txt")).is_err());
        assert!(
            ok(root.join("acme-evil/x")).is_err(),
            "a prefix of the name is not inside"
        );
    }
}
