//! Bad input gets a clear error and a non-zero exit, never a host panic: files that are not
//! components, components of another WIT version, invalid plans, guests that fail mid-stream.

mod common;

use std::path::Path;

use common::{guest, weir};

/// Runs `weir` expecting failure; returns its stderr.
fn fails(args: &[&str]) -> String {
    let out = weir(args);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success(),
        "weir {args:?} should fail; stderr:\n{stderr}"
    );
    assert_ne!(out.status.code(), Some(101), "weir panicked:\n{stderr}");
    assert!(
        !stderr.contains("thread '"),
        "a host thread panicked:\n{stderr}"
    );
    stderr
}

fn assert_says(stderr: &str, needles: &[&str]) {
    for n in needles {
        assert!(stderr.contains(n), "expected {n:?} in:\n{stderr}");
    }
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p.to_str().unwrap().to_string()
}

#[test]
fn a_file_that_is_not_wasm() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "job.wasm", b"#!/bin/sh\necho not wasm\n");
    assert_says(&fails(&["run", &f]), &["not a WebAssembly file"]);
}

#[test]
fn a_missing_file() {
    assert_says(
        &fails(&["run", "/nonexistent/job.wasm"]),
        &["cannot read /nonexistent/job.wasm"],
    );
}

#[test]
fn a_core_module_instead_of_a_component() {
    let dir = tempfile::tempdir().unwrap();
    let module = wat::parse_str("(module (func (export \"f\")))").unwrap();
    let f = write(dir.path(), "core.wasm", &module);
    assert_says(
        &fails(&["run", &f]),
        &["core WebAssembly module, not a component", "wasm32-wasip2"],
    );
}

#[test]
fn a_truncated_component() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(guest("word_count")).unwrap();
    let f = write(dir.path(), "cut.wasm", &bytes[..bytes.len() / 2]);
    assert_says(&fails(&["run", &f]), &["invalid component"]);
}

#[test]
fn a_component_of_another_wit_version() {
    let dir = tempfile::tempdir().unwrap();
    let component = wat::parse_str(
        r#"(component
            (core module $m (func (export "f")))
            (core instance $i (instantiate $m))
            (func $f (canon lift (core func $i "f")))
            (instance $job (export "plan" (func $f)))
            (export "weir:stream/job@0.3.0" (instance $job)))"#,
    )
    .unwrap();
    let f = write(dir.path(), "v2.wasm", &component);
    assert_says(
        &fails(&["run", &f]),
        &["targets weir:stream@0.3.0", "supports weir:stream@0.2.0"],
    );
}

#[test]
fn a_component_that_is_not_a_job() {
    let dir = tempfile::tempdir().unwrap();
    let component = wat::parse_str(
        r#"(component
            (core module $m (func (export "f")))
            (core instance $i (instantiate $m))
            (func $f (canon lift (core func $i "f")))
            (export "run" (func $f)))"#,
    )
    .unwrap();
    let f = write(dir.path(), "other.wasm", &component);
    assert_says(&fails(&["run", &f]), &["does not export a weir job", "run"]);
}

fn raw_plan(plan: &str) -> String {
    let wasm = guest("raw_plan");
    fails(&[
        "run",
        wasm.to_str().unwrap(),
        "--arg",
        &format!("plan={plan}"),
    ])
}

#[test]
fn a_plan_with_a_cycle() {
    assert_says(&raw_plan("cycle"), &["invalid plan", "cycle"]);
}

#[test]
fn a_plan_with_an_edge_to_nowhere() {
    assert_says(
        &raw_plan("unknown-edge"),
        &["invalid plan", "refers to node 7"],
    );
}

#[test]
fn a_plan_with_zero_parallelism() {
    assert_says(
        &raw_plan("zero-parallelism"),
        &["operator 'a' has parallelism 0"],
    );
}

#[test]
fn a_plan_with_state_on_an_unkeyed_input() {
    assert_says(
        &raw_plan("state-without-key"),
        &["'a' declares keyed state", "key_by"],
    );
}

#[test]
fn a_plan_that_fails() {
    assert_says(&raw_plan("plan-error"), &["this job refuses to plan"]);
}

fn faulty(mode: &str, extra: &[&str]) -> String {
    let wasm = guest("faulty");
    let mode = format!("mode={mode}");
    let mut args = vec!["run", wasm.to_str().unwrap(), "--arg", &mode];
    args.extend_from_slice(extra);
    fails(&args)
}

#[test]
fn a_plan_with_duplicate_uids() {
    assert_says(
        &faulty("duplicate-uid", &[]),
        &["duplicate operator uid 'same'"],
    );
}

#[test]
fn a_guest_that_panics_mid_stream() {
    assert_says(
        &faulty("panic", &["--parallelism", "2"]),
        &[
            "operator 'faulty-map' trapped: panicked",
            "boom at record 5000",
        ],
    );
}

#[test]
fn a_guest_that_returns_an_error() {
    assert_says(
        &faulty("error", &[]),
        &["operator 'failing-process' failed", "refusing record 5000"],
    );
}

#[test]
fn a_guest_that_loops_forever() {
    assert_says(
        &faulty("loop", &["--call-timeout", "0.5"]),
        &["faulty-map", "exceeded the call deadline of 500ms"],
    );
}

#[test]
fn a_guest_that_returns_giant_output_from_one_call() {
    assert_says(
        &faulty("giant", &["--max-call-output-mib", "8"]),
        &["giant", "over the limit of 8388608 bytes per call"],
    );
}

#[test]
fn a_guest_that_allocates_without_bound() {
    assert_says(
        &faulty("alloc", &["--max-memory-mib", "64"]),
        &["faulty-map", "exceeded the memory limit of 67108864 bytes"],
    );
}

#[test]
fn a_guest_that_overflows_its_stack() {
    assert_says(&faulty("stack", &[]), &["faulty-map", "stack overflows"]);
}

#[test]
fn a_well_behaved_run_of_the_same_guest_succeeds() {
    let wasm = guest("faulty");
    common::run_ok(&["run", wasm.to_str().unwrap(), "--arg", "mode=none"]);
}

#[test]
fn a_missing_job_argument() {
    let wasm = guest("word_count");
    assert_says(
        &fails(&["run", wasm.to_str().unwrap()]),
        &["missing job argument 'input'"],
    );
}

#[test]
fn a_malformed_arg_flag() {
    let wasm = guest("word_count");
    let out = weir(&["run", wasm.to_str().unwrap(), "--arg", "no-equals-sign"]);
    assert_eq!(out.status.code(), Some(2));
    assert_says(
        &String::from_utf8_lossy(&out.stderr),
        &["expected KEY=VALUE"],
    );
}

#[test]
fn malformed_json_input_names_the_operator() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(
        dir.path(),
        "events.jsonl",
        b"{\"key\":\"a\",\"value\":1,\"ts\":5}\n{\"key\":\"a\",\"value\":oops}\n",
    );
    let wasm = guest("windowed_sum");
    let stderr = fails(&[
        "run",
        wasm.to_str().unwrap(),
        "--arg",
        &format!("input={input}"),
        "--arg",
        &format!("output={}", dir.path().join("out").display()),
    ]);
    assert_says(&stderr, &["timestamps", "invalid JSON record", "oops"]);
}

#[test]
fn a_missing_input_file() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = guest("word_count");
    let stderr = fails(&[
        "run",
        wasm.to_str().unwrap(),
        "--arg",
        "input=/nonexistent/words.txt",
        "--arg",
        &format!("output={}", dir.path().display()),
    ]);
    assert_says(&stderr, &["/nonexistent/words.txt", "No such file"]);
}

#[test]
fn a_cancelled_job_commits_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let wasm = guest("faulty");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args([
            "run",
            wasm.to_str().unwrap(),
            "--arg",
            "mode=unbounded",
            "--arg",
        ])
        .arg(format!("output={}", out.display()))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the sink has started writing, then press Ctrl-C.
    let started = std::time::Instant::now();
    while !out.join(".part-0-0.jsonl.inprogress").exists() {
        assert!(
            started.elapsed().as_secs() < 60,
            "the job never started writing"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    let kill = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "a cancelled job exits with 130");
    let visible: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert!(
        visible.is_empty(),
        "cancelled output was committed: {visible:?}"
    );
}
