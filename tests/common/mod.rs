//! Shared helpers of the integration tests: build the guest components, run `weir`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn wasm_target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
        .join("wasm")
}

/// Builds the guest crate or workspace at `manifest` for wasm32-wasip2 (release) into the
/// shared wasm target directory; returns the directory holding the `.wasm` files.
pub fn build_guest(manifest: &Path) -> PathBuf {
    let target = wasm_target_dir();
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--manifest-path",
        ])
        .arg(manifest)
        .arg("--target-dir")
        .arg(&target)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .output()
        .expect("cannot run cargo to build a guest");
    assert!(
        out.status.success(),
        "building {} for wasm32-wasip2 failed (run scripts/setup.sh first):\n{}",
        manifest.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    target.join("wasm32-wasip2/release")
}

/// Builds every guest workspace once per test binary (cargo makes repeated builds no-ops)
/// and returns the directory holding the `.wasm` files.
pub fn guest_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        build_guest(&root().join("tests/guests/Cargo.toml"));
        build_guest(&root().join("guest-examples/Cargo.toml"))
    })
}

/// Path of a guest component, e.g. `guest("word_count")`.
pub fn guest(name: &str) -> PathBuf {
    let p = guest_dir().join(format!("{name}.wasm"));
    assert!(p.exists(), "{} was not built", p.display());
    p
}

/// Runs the `weir` binary.
pub fn weir(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .env("WEIR_LOG", "warn")
        .output()
        .expect("cannot run weir")
}

/// Runs `weir run` and asserts success.
pub fn run_ok(args: &[&str]) -> Output {
    let out = weir(args);
    assert!(
        out.status.success(),
        "weir {:?} failed with {}:\n{}",
        args,
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Every JSON line of the visible files (not starting with `.`) under `dir`.
pub fn read_json_lines(dir: &Path) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for f in files {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        assert!(
            !name.starts_with('.'),
            "unfinished file left behind: {}",
            f.display()
        );
        for line in std::fs::read_to_string(&f).unwrap().lines() {
            out.push(serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}")));
        }
    }
    out
}

/// A small deterministic PRNG (SplitMix64), so inputs are reproducible without crates.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Lowercase hex SHA-256 of a token, as `weir.toml` stores it.
pub fn sha256_hex(s: impl AsRef<[u8]>) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(s.as_ref())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
