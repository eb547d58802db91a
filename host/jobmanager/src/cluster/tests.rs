//! Admission and scheduling, without a job running.

use super::submit::{admit, admit_jobs, read_request, TenantLoad};
use super::*;
use crate::taskmanager::{ComponentRef, DeployedStateLimits, Sandbox};

fn tenant(name: &str) -> Arc<TenantConfig> {
    Arc::new(
        toml::from_str(&format!(
            "name = '{name}'\ntoken_sha256 = '{}'\nmax_jobs = 2\nmax_slots = 4\nmax_tasks = 10",
            "ab".repeat(32)
        ))
        .unwrap(),
    )
}

/// A job waiting for `slots` slots.
fn waiting(id: &str, tenant: &Arc<TenantConfig>, slots: u32) -> JobRecord {
    let deployment = Deployment {
        job: id.into(),
        tenant: tenant.name.clone(),
        component: ComponentRef {
            sha256: "00".repeat(32),
            sandbox: Sandbox {
                max_instance_memory_bytes: 1 << 20,
                call_timeout_ms: 1000,
                max_call_output_bytes: 1 << 20,
            },
        },
        options: weir_worker::JobOptions::new(slots),
        state_limits: DeployedStateLimits {
            job_bytes: 1,
            tenant_bytes: 1,
            value_bytes: 1,
        },
    };
    JobRecord {
        id: id.into(),
        tenant: tenant.clone(),
        name: id.into(),
        request: serde_json::from_str(r#"{"component": "c"}"#).unwrap(),
        state: JobState::Scheduled,
        timestamps: Vec::new(),
        slots,
        tasks: slots,
        holds_slots: false,
        start_ms: 0,
        end_ms: None,
        restarts: 0,
        failure: None,
        quota_failure: None,
        exceptions: VecDeque::new(),
        checkpoints: CheckpointStats::default(),
        plan: PlanSummary::default(),
        operators: Vec::new(),
        last_sample: None,
        savepoint: None,
        guest_time_before: Duration::ZERO,
        usage: weir_worker::JobUsage::default(),
        triggers: Vec::new(),
        deployment: Some(Box::new(deployment)),
        guest_source: false,
        restored_from: None,
        sha256: "00".repeat(32),
    }
}

fn queue(jobs: &mut Jobs, record: JobRecord) {
    jobs.waiting.push_back(record.id.clone());
    jobs.by_id.insert(record.id.clone(), record);
}

fn ids(deployed: &[Deployment]) -> Vec<&str> {
    deployed.iter().map(|d| d.job.as_str()).collect()
}

#[test]
fn admission_names_the_quota_it_refuses() {
    let t = tenant("t");
    assert!(admit_jobs(&t, 1).is_ok());
    let e = admit_jobs(&t, 2).unwrap_err();
    assert_eq!(e.code, "quota_exceeded");
    assert!(e.message.contains("max_jobs"), "{e}");
    let load = |jobs, tasks, slots| TenantLoad { jobs, tasks, slots };
    // Jobs, tasks, the tenant's slots, the cluster's free slots, in that order.
    assert!(admit(&t, load(1, 6, 2), 2, 4, 2, 8, false).is_ok());
    let e = admit(&t, load(1, 6, 2), 2, 5, 2, 8, false).unwrap_err();
    assert!(e.message.contains("runs 6 of its 10 (max_tasks)"), "{e}");
    assert!(admit(&t, load(0, u32::MAX, 0), 1, 1, 8, 8, false).is_err());
    let e = admit(&t, load(1, 0, 3), 2, 2, 8, 8, false).unwrap_err();
    assert!(e.message.contains("holds 3 of its 4 (max_slots)"), "{e}");
    let e = admit(&t, load(0, 0, 0), 3, 3, 2, 8, false).unwrap_err();
    assert_eq!(e.code, "no_slots");
    assert!(e.message.contains("2 of 8 are free"), "{e}");
    // Waiting: slots are not a reason to refuse, jobs and tasks still are.
    assert!(admit(&t, load(1, 0, 3), 3, 3, 0, 8, true).is_ok());
    assert!(admit(&t, load(2, 0, 0), 1, 1, 8, 8, true).is_err());
}

#[test]
fn requests_are_read_before_any_guest_code_runs() {
    let read = |json: &str| read_request(&serde_json::from_str(json).unwrap());
    let r = read(r#"{"component": "c", "args": {"b": "2", "a": "1"}, "state_backend": "rocksdb"}"#)
        .unwrap();
    assert_eq!(r.parallelism, 1);
    assert!(r.rocksdb);
    assert_eq!(r.args, [("a".into(), "1".into()), ("b".into(), "2".into())]);
    for (json, says) in [
        (r#"{"component": "c", "parallelism": 0}"#, "at least 1"),
        (r#"{"component": "c", "state_backend": "disk"}"#, "'disk'"),
        (
            r#"{"component": "c", "checkpoint_interval_ms": 5}"#,
            "at least 10",
        ),
        (
            r#"{"component": "c", "args": {"weir.attempt": "3"}}"#,
            "are the host's",
        ),
    ] {
        let e = read(json).unwrap_err();
        assert_eq!(e.code, "bad_request", "{json}");
        assert!(e.message.contains(says), "{json}: {e}");
    }
}

#[test]
fn scheduling_deploys_in_order_what_fits() {
    let (a, b) = (tenant("a"), tenant("b"));
    let mut jobs = Jobs::default();
    queue(&mut jobs, waiting("a1", &a, 3));
    queue(&mut jobs, waiting("a2", &a, 2));
    queue(&mut jobs, waiting("b1", &b, 2));
    queue(&mut jobs, waiting("b2", &b, 1));
    // 6 slots: a1 (3) fits; a2 would take tenant a past its 4; b1 fits; b2 fits.
    let deployed = jobs.take_deployable(6);
    assert_eq!(ids(&deployed), ["a1", "b1", "b2"]);
    assert_eq!(jobs.slots_used, 6);
    assert_eq!(jobs.waiting, ["a2"]);
    assert!(jobs.by_id["a1"].holds_slots && !jobs.by_id["a2"].holds_slots);
    assert!(jobs.by_id["a1"].deployment.is_none(), "sent once");
    assert_eq!(jobs.load_of("a").slots, 3);
    assert_eq!(jobs.load_of("a").jobs, 2);
    // Nothing changes until slots are given back.
    assert!(jobs.take_deployable(6).is_empty());
    jobs.slots_used -= 3;
    jobs.by_id.get_mut("a1").unwrap().holds_slots = false;
    jobs.by_id.get_mut("a1").unwrap().state = JobState::Finished;
    assert_eq!(ids(&jobs.take_deployable(6)), ["a2"]);
    assert!(jobs.waiting.is_empty());
    // A job forgotten while it waited leaves the queue.
    jobs.waiting.push_back("gone".into());
    assert!(jobs.take_deployable(6).is_empty());
    assert!(jobs.waiting.is_empty());
}
