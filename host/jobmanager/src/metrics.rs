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
    let mut families = Families::default();
    for (t, cpu, memory) in tenants {
        let l: Labels = vec![("tenant".into(), label(t))];
        families.tenant_cpu.push((l.clone(), cpu.as_secs_f64()));
        families.tenant_memory.push((l, memory as f64));
    }
    let now = now_ms();
    for j in jobs {
        families.add_job(j, now);
    }
    let mut registry = Registry::default();
    registry.register_collector(Box::new(families.scrape(slots_total, slots_used, process)));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry).expect("writing to a String");
    out
}

/// The samples of every metric family, gathered job by job.
#[derive(Default)]
struct Families {
    records_in: Vec<(Labels, u64)>,
    records_out: Vec<(Labels, u64)>,
    rate_in: Vec<(Labels, f64)>,
    rate_out: Vec<(Labels, f64)>,
    lag: Vec<(Labels, f64)>,
    restarts: Vec<(Labels, u64)>,
    state: Vec<(Labels, f64)>,
    chk_completed: Vec<(Labels, u64)>,
    chk_failed: Vec<(Labels, u64)>,
    chk_duration: Vec<(Labels, f64)>,
    chk_size: Vec<(Labels, f64)>,
    backpressure: Vec<(Labels, f64)>,
    job_cpu: Vec<(Labels, f64)>,
    job_memory: Vec<(Labels, f64)>,
    tenant_cpu: Vec<(Labels, f64)>,
    tenant_memory: Vec<(Labels, f64)>,
}

impl Families {
    /// One job's samples (`now`: for the watermark lag).
    fn add_job(&mut self, j: JobMetrics<'_>, now: i64) {
        let job: Labels = vec![
            ("job_id".into(), label(j.id)),
            ("job_name".into(), label(j.name)),
            ("tenant".into(), label(j.tenant)),
        ];
        for s in JobState::ALL {
            let mut l = job.clone();
            l.push(("state".into(), s.name().into()));
            self.state.push((l, if s == j.state { 1.0 } else { 0.0 }));
        }
        self.restarts.push((job.clone(), u64::from(j.restarts)));
        self.job_cpu.push((job.clone(), j.guest_time.as_secs_f64()));
        self.job_memory
            .push((job.clone(), j.guest_memory_bytes as f64));
        self.chk_completed
            .push((job.clone(), j.checkpoints.completed));
        self.chk_failed.push((job.clone(), j.checkpoints.failed));
        if let Some(c) = &j.checkpoints.latest {
            self.chk_duration
                .push((job.clone(), c.duration_ms as f64 / 1000.0));
            self.chk_size.push((job.clone(), c.state_bytes as f64));
        }
        for o in j.operators {
            let mut l = job.clone();
            l.push(("operator".into(), label(&o.uid)));
            self.records_in.push((l.clone(), o.records_in));
            self.records_out.push((l.clone(), o.records_out));
            self.rate_in.push((l.clone(), o.records_in_per_second));
            self.rate_out.push((l.clone(), o.records_out_per_second));
            self.backpressure.push((l.clone(), o.backpressure));
            if let Some(w) = o.watermark.filter(|_| !j.state.is_terminal()) {
                self.lag.push((l, (now.saturating_sub(w)) as f64 / 1000.0));
            }
        }
    }

    /// The families with their help texts, and the cluster's own figures.
    fn scrape(self, slots_total: u32, slots_used: u32, process: bool) -> Scrape {
        Scrape {
            counters: vec![
                (
                    "weir_operator_records_in",
                    "Records an operator took in (current attempt).",
                    self.records_in,
                ),
                (
                    "weir_operator_records_out",
                    "Records an operator sent on (current attempt).",
                    self.records_out,
                ),
                (
                    "weir_job_restarts",
                    "Restarts after task failures.",
                    self.restarts,
                ),
                (
                    "weir_checkpoints_completed",
                    "Completed checkpoints.",
                    self.chk_completed,
                ),
                (
                    "weir_checkpoints_failed",
                    "Failed or expired checkpoints and savepoints.",
                    self.chk_failed,
                ),
            ],
            gauges: vec![
                (
                    "weir_operator_records_in_per_second",
                    "Records in per second, last interval.",
                    self.rate_in,
                ),
                (
                    "weir_operator_records_out_per_second",
                    "Records out per second, last interval.",
                    self.rate_out,
                ),
                (
                    "weir_operator_watermark_lag_seconds",
                    "Wall clock minus the operator's input watermark.",
                    self.lag,
                ),
                ("weir_job_state", "1 for the job's current state.", self.state),
                (
                    "weir_operator_backpressure_ratio",
                    "Share of the last interval the operator's subtasks were blocked on full channels.",
                    self.backpressure,
                ),
                (
                    "weir_job_guest_cpu_seconds",
                    "Time the job's guests ran code, all attempts.",
                    self.job_cpu,
                ),
                (
                    "weir_job_guest_memory_bytes",
                    "Linear memory the job's guest instances hold.",
                    self.job_memory,
                ),
                (
                    "weir_tenant_guest_cpu_seconds",
                    "Time the tenant's guests ran code since the server started.",
                    self.tenant_cpu,
                ),
                (
                    "weir_tenant_guest_memory_bytes",
                    "Linear memory the tenant's running guest instances hold.",
                    self.tenant_memory,
                ),
                (
                    "weir_checkpoint_last_duration_seconds",
                    "Duration of the latest completed checkpoint.",
                    self.chk_duration,
                ),
                (
                    "weir_checkpoint_last_size_bytes",
                    "State bytes of the latest completed checkpoint.",
                    self.chk_size,
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
        }
    }
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
