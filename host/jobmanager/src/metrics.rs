//! `GET /metrics`: per job and operator counts, rates and watermark lag, checkpoint
//! figures, and the process' memory, in the OpenMetrics text format Prometheus scrapes.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::components::now_ms;
use crate::job::{CheckpointStats, JobState, OperatorStatus};

/// What the metrics of one job are made from.
pub struct JobMetrics<'a> {
    /// Job id.
    pub id: &'a str,
    /// Job name.
    pub name: &'a str,
    /// Owner.
    pub tenant: &'a str,
    /// State.
    pub state: JobState,
    /// Restarts.
    pub restarts: u32,
    /// Latest sample per operator.
    pub operators: &'a [OperatorStatus],
    /// Checkpoint figures.
    pub checkpoints: &'a CheckpointStats,
    /// Time its guests ran code, all attempts.
    pub guest_time: std::time::Duration,
    /// Guest linear memory held now.
    pub guest_memory_bytes: u64,
}

type Labels = Vec<(String, String)>;

/// A label value as the text format needs it: names and uids come from guests, and a quote,
/// backslash or newline must not end the value (the encoder writes values as they are).
fn label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}
/// A metric family: name, help, and a value per label set.
type Family<T> = (&'static str, &'static str, Vec<(Labels, T)>);

/// One scrape's figures, owned (a collector lives as long as the registry).
#[derive(Debug, Default)]
struct Scrape {
    counters: Vec<Family<u64>>,
    gauges: Vec<Family<f64>>,
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        for (name, help, values) in &self.counters {
            let mut family = encoder.encode_descriptor(
                name,
                help,
                None,
                prometheus_client::metrics::MetricType::Counter,
            )?;
            for (labels, v) in values {
                ConstCounter::new(*v).encode(family.encode_family(labels)?)?;
            }
        }
        for (name, help, values) in &self.gauges {
            let mut family = encoder.encode_descriptor(
                name,
                help,
                None,
                prometheus_client::metrics::MetricType::Gauge,
            )?;
            for (labels, v) in values {
                ConstGauge::new(*v).encode(family.encode_family(labels)?)?;
            }
        }
        Ok(())
    }
}

/// Renders the figures of `jobs` and of the cluster.
pub fn render<'a>(
    jobs: impl Iterator<Item = JobMetrics<'a>>,
    tenants: impl Iterator<Item = (&'a str, std::time::Duration, u64)>,
    slots_total: u32,
    slots_used: u32,
    process: bool,
) -> String {
    let mut records_in = Vec::new();
    let mut records_out = Vec::new();
    let mut rate_in = Vec::new();
    let mut rate_out = Vec::new();
    let mut lag = Vec::new();
    let mut restarts = Vec::new();
    let mut state = Vec::new();
    let mut chk_completed = Vec::new();
    let mut chk_failed = Vec::new();
    let mut chk_duration = Vec::new();
    let mut chk_size = Vec::new();
    let mut backpressure = Vec::new();
    let mut job_cpu = Vec::new();
    let mut job_memory = Vec::new();
    let mut tenant_cpu = Vec::new();
    let mut tenant_memory = Vec::new();
    for (t, cpu, memory) in tenants {
        let l: Labels = vec![("tenant".into(), label(t))];
        tenant_cpu.push((l.clone(), cpu.as_secs_f64()));
        tenant_memory.push((l, memory as f64));
    }
    let now = now_ms();
    for j in jobs {
        let job: Labels = vec![
            ("job_id".into(), label(j.id)),
            ("job_name".into(), label(j.name)),
            ("tenant".into(), label(j.tenant)),
        ];
        for s in JobState::ALL {
            let mut l = job.clone();
            l.push(("state".into(), s.name().into()));
            state.push((l, if s == j.state { 1.0 } else { 0.0 }));
        }
        restarts.push((job.clone(), u64::from(j.restarts)));
        job_cpu.push((job.clone(), j.guest_time.as_secs_f64()));
        job_memory.push((job.clone(), j.guest_memory_bytes as f64));
        chk_completed.push((job.clone(), j.checkpoints.completed));
        chk_failed.push((job.clone(), j.checkpoints.failed));
        if let Some(c) = &j.checkpoints.latest {
            chk_duration.push((job.clone(), c.duration_ms as f64 / 1000.0));
            chk_size.push((job.clone(), c.state_bytes as f64));
        }
        for o in j.operators {
            let mut l = job.clone();
            l.push(("operator".into(), label(&o.uid)));
            records_in.push((l.clone(), o.records_in));
            records_out.push((l.clone(), o.records_out));
            rate_in.push((l.clone(), o.records_in_per_second));
            rate_out.push((l.clone(), o.records_out_per_second));
            backpressure.push((l.clone(), o.backpressure));
            if let Some(w) = o.watermark.filter(|_| !j.state.is_terminal()) {
                lag.push((l, (now.saturating_sub(w)) as f64 / 1000.0));
            }
        }
    }
    let scrape = Scrape {
        counters: vec![
            (
                "weir_operator_records_in",
                "Records an operator took in (current attempt).",
                records_in,
            ),
            (
                "weir_operator_records_out",
                "Records an operator sent on (current attempt).",
                records_out,
            ),
            (
                "weir_job_restarts",
                "Restarts after task failures.",
                restarts,
            ),
            (
                "weir_checkpoints_completed",
                "Completed checkpoints.",
                chk_completed,
            ),
            (
                "weir_checkpoints_failed",
                "Failed or expired checkpoints and savepoints.",
                chk_failed,
            ),
        ],
        gauges: vec![
            (
                "weir_operator_records_in_per_second",
                "Records in per second, last interval.",
                rate_in,
            ),
            (
                "weir_operator_records_out_per_second",
                "Records out per second, last interval.",
                rate_out,
            ),
            (
                "weir_operator_watermark_lag_seconds",
                "Wall clock minus the operator's input watermark.",
                lag,
            ),
            ("weir_job_state", "1 for the job's current state.", state),
            (
                "weir_operator_backpressure_ratio",
                "Share of the last interval the operator's subtasks were blocked on full channels.",
                backpressure,
            ),
            (
                "weir_job_guest_cpu_seconds",
                "Time the job's guests ran code, all attempts.",
                job_cpu,
            ),
            (
                "weir_job_guest_memory_bytes",
                "Linear memory the job's guest instances hold.",
                job_memory,
            ),
            (
                "weir_tenant_guest_cpu_seconds",
                "Time the tenant's guests ran code since the server started.",
                tenant_cpu,
            ),
            (
                "weir_tenant_guest_memory_bytes",
                "Linear memory the tenant's running guest instances hold.",
                tenant_memory,
            ),
            (
                "weir_checkpoint_last_duration_seconds",
                "Duration of the latest completed checkpoint.",
                chk_duration,
            ),
            (
                "weir_checkpoint_last_size_bytes",
                "State bytes of the latest completed checkpoint.",
                chk_size,
            ),
            (
                "weir_slots_total",
                "Task slots of the cluster (a tenant's view: those it may use).",
                vec![(Vec::new(), f64::from(slots_total))],
            ),
            (
                "weir_slots_used",
                "Task slots held by jobs (a tenant's view: by its jobs).",
                vec![(Vec::new(), f64::from(slots_used))],
            ),
            (
                "weir_process_resident_memory_bytes",
                "Resident memory of the server process (the admin's view only).",
                if process {
                    vec![(Vec::new(), rss_bytes() as f64)]
                } else {
                    Vec::new()
                },
            ),
        ],
    };
    let mut registry = Registry::default();
    registry.register_collector(Box::new(scrape));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry).expect("writing to a String");
    out
}

/// Resident memory of this process in bytes (0 where unknown).
pub fn rss_bytes() -> u64 {
    let Ok(statm) = std::fs::read_to_string("/proc/self/statm") else {
        return 0;
    };
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_names_cannot_break_or_forge_lines() {
        let operators = [OperatorStatus {
            uid: "op\"} 1\nweir_slots_used 0\n#".into(),
            ..OperatorStatus::default()
        }];
        let checkpoints = CheckpointStats::default();
        let text = render(
            std::iter::once(JobMetrics {
                id: "j1",
                name: "evil\\\"name",
                tenant: "acme",
                state: JobState::Running,
                restarts: 0,
                operators: &operators,
                checkpoints: &checkpoints,
                guest_time: std::time::Duration::ZERO,
                guest_memory_bytes: 0,
            }),
            std::iter::empty(),
            8,
            2,
            true,
        );
        // One sample of weir_slots_used, the real one.
        let used: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("weir_slots_used"))
            .collect();
        assert_eq!(used, ["weir_slots_used{} 2.0"], "{text}");
        assert!(text.contains(r#"job_name="evil\\\"name""#), "{text}");
        assert!(
            text.contains(r#"operator="op\"} 1\nweir_slots_used 0\n#""#),
            "{text}"
        );
    }
}
