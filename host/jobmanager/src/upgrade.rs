//! The compatibility report of an upgrade (design note 0005): the running job's plan and
//! the new component's, compared before anything stops. A pure function of two graphs.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use weir_core::{JobGraph, Partitioning, StateDescriptor, StateKind};

/// What becomes of one operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OperatorChange {
    /// In both versions.
    Kept,
    /// Only in the new version: its state starts empty.
    Added,
    /// Only in the old version; its state is dropped (needs `allow_non_restored_state` when
    /// it has state).
    Removed,
}

/// What becomes of one state of a kept operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case", tag = "verdict")]
pub enum StateVerdict {
    /// Same kind, version and TTL setting.
    Same,
    /// Only in the new version: starts empty.
    New,
    /// Only in the old version: dropped.
    Dropped,
    /// The new version reads the old values through its migration.
    Migrate {
        /// The old schema version.
        from: u32,
        /// The new one.
        to: u32,
    },
    /// Cannot be carried over.
    Incompatible {
        /// Why, for people.
        reason: String,
    },
}

/// One operator's line of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OperatorLine {
    /// Its uid.
    pub uid: String,
    /// Kept, added or removed.
    pub change: OperatorChange,
    /// Its keyed states, by name (kept operators).
    pub states: Vec<(String, StateVerdict)>,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CompatibilityReport {
    /// Per operator, the old plan's order, then the added ones.
    pub operators: Vec<OperatorLine>,
    /// Why the upgrade cannot go ahead; empty when it can.
    pub refusals: Vec<String>,
}

impl CompatibilityReport {
    /// Whether the upgrade may go ahead.
    pub fn compatible(&self) -> bool {
        self.refusals.is_empty()
    }
}

/// Compares the running plan with the new one. `migrations(uid, state)` lists the old
/// versions the new operator declares it can read (contract 0.3; none before).
pub fn compare(
    old: &JobGraph,
    new: &JobGraph,
    allow_non_restored_state: bool,
    migrations: &dyn Fn(&str, &str) -> Vec<u32>,
) -> CompatibilityReport {
    let mut refusals = Vec::new();
    if old.max_parallelism != new.max_parallelism {
        refusals.push(format!(
            "the max parallelism changes from {} to {}: key groups cannot be redistributed",
            old.max_parallelism, new.max_parallelism
        ));
    }
    let keyed = |g: &JobGraph, i: usize| g.inputs(i).any(|e| e.partitioning == Partitioning::Hash);
    let mut operators = Vec::new();
    for (i, o) in old.nodes.iter().enumerate() {
        let Some(j) = new.node_by_uid(&o.uid) else {
            let has_state = !o.states.is_empty();
            if has_state && !allow_non_restored_state {
                refusals.push(format!(
                    "operator '{}' is removed and has state (allow_non_restored_state drops it)",
                    o.uid
                ));
            }
            operators.push(OperatorLine {
                uid: o.uid.clone(),
                change: OperatorChange::Removed,
                states: Vec::new(),
            });
            continue;
        };
        let n = &new.nodes[j];
        if !o.states.is_empty() && keyed(old, i) && !keyed(new, j) {
            refusals.push(format!(
                "operator '{}' has keyed state but its input is no longer partitioned by key",
                o.uid
            ));
        }
        let mut states = Vec::new();
        for d in &o.states {
            let verdict = match n.states.iter().find(|e| e.name == d.name) {
                None => StateVerdict::Dropped,
                Some(e) => verdict(d, e, &migrations(&o.uid, &d.name)),
            };
            if let StateVerdict::Incompatible { reason } = &verdict {
                refusals.push(format!(
                    "operator '{}', state '{}': {reason}",
                    o.uid, d.name
                ));
            }
            states.push((d.name.clone(), verdict));
        }
        for e in n
            .states
            .iter()
            .filter(|e| !o.states.iter().any(|d| d.name == e.name))
        {
            states.push((e.name.clone(), StateVerdict::New));
        }
        operators.push(OperatorLine {
            uid: o.uid.clone(),
            change: OperatorChange::Kept,
            states,
        });
    }
    for n in new
        .nodes
        .iter()
        .filter(|n| old.node_by_uid(&n.uid).is_none())
    {
        operators.push(OperatorLine {
            uid: n.uid.clone(),
            change: OperatorChange::Added,
            states: Vec::new(),
        });
    }
    CompatibilityReport {
        operators,
        refusals,
    }
}

/// One state, old declaration against new.
fn verdict(old: &StateDescriptor, new: &StateDescriptor, migrations: &[u32]) -> StateVerdict {
    let kind = |k: StateKind| match k {
        StateKind::Value => "value",
        StateKind::List => "list",
        StateKind::Map => "map",
    };
    let incompatible = |reason: String| StateVerdict::Incompatible { reason };
    if old.kind != new.kind {
        return incompatible(format!(
            "the kind changes from {} state to {} state",
            kind(old.kind),
            kind(new.kind)
        ));
    }
    if old.ttl.is_some() != new.ttl.is_some() {
        let how = if new.ttl.is_some() { "on" } else { "off" };
        return incompatible(format!(
            "a TTL is switched {how}: stored values change their layout (use another state name)"
        ));
    }
    match new.version.cmp(&old.version) {
        std::cmp::Ordering::Equal => StateVerdict::Same,
        std::cmp::Ordering::Less => incompatible(format!(
            "the schema version goes down from {} to {}",
            old.version, new.version
        )),
        std::cmp::Ordering::Greater if migrations.contains(&old.version) => StateVerdict::Migrate {
            from: old.version,
            to: new.version,
        },
        std::cmp::Ordering::Greater => incompatible(format!(
            "the schema version goes up from {} to {} with no migration from {}",
            old.version, new.version, old.version
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use weir_core::{Connector, Edge, Node, NodeKind, StateTtl};

    use super::*;

    fn state(name: &str, kind: StateKind, version: u32) -> StateDescriptor {
        StateDescriptor {
            name: name.into(),
            kind,
            version,
            ttl: None,
        }
    }

    /// source → (hash) count [states] → sink, plus `extra` operators after the source.
    fn graph(states: Vec<StateDescriptor>, partitioning: Partitioning, extra: &[&str]) -> JobGraph {
        let node = |uid: &str, kind, states| Node {
            uid: uid.into(),
            name: uid.into(),
            kind,
            parallelism: 2,
            states,
            watermarks: None,
        };
        let c = Connector {
            name: "datagen".into(),
            config: BTreeMap::new(),
        };
        let edge = |source, target, partitioning| Edge {
            source,
            target,
            side_output: None,
            partitioning,
        };
        let mut g = JobGraph {
            name: "j".into(),
            max_parallelism: 128,
            nodes: vec![
                node("source", NodeKind::Source(c.clone()), vec![]),
                node("count", NodeKind::Operator, states),
                node("sink", NodeKind::Sink(c), vec![]),
            ],
            edges: vec![edge(0, 1, partitioning), edge(1, 2, Partitioning::Forward)],
        };
        for uid in extra {
            g.nodes.push(node(uid, NodeKind::Operator, vec![]));
            let i = g.nodes.len() - 1;
            g.edges.push(edge(0, i, Partitioning::Forward));
        }
        g
    }

    fn none(_: &str, _: &str) -> Vec<u32> {
        Vec::new()
    }

    #[test]
    fn the_same_plan_is_compatible() {
        let g = graph(
            vec![state("n", StateKind::Value, 1)],
            Partitioning::Hash,
            &[],
        );
        let r = compare(&g, &g, false, &none);
        assert!(r.compatible(), "{r:?}");
        assert_eq!(r.operators[1].states, [("n".into(), StateVerdict::Same)]);
    }

    #[test]
    fn every_incompatible_change_is_named() {
        let old = graph(
            vec![state("n", StateKind::Value, 2)],
            Partitioning::Hash,
            &[],
        );
        let cases = [
            (
                state("n", StateKind::Map, 2),
                "the kind changes from value state to map state",
            ),
            (
                state("n", StateKind::Value, 1),
                "the schema version goes down from 2 to 1",
            ),
            (
                state("n", StateKind::Value, 3),
                "the schema version goes up from 2 to 3 with no migration from 2",
            ),
            (
                StateDescriptor {
                    ttl: Some(StateTtl {
                        ttl_ms: 1000,
                        refresh_on_read: false,
                    }),
                    ..state("n", StateKind::Value, 2)
                },
                "a TTL is switched on",
            ),
        ];
        for (d, reason) in cases {
            let r = compare(&old, &graph(vec![d], Partitioning::Hash, &[]), false, &none);
            assert_eq!(r.refusals.len(), 1, "{r:?}");
            assert!(
                r.refusals[0].starts_with(&format!("operator 'count', state 'n': {reason}")),
                "{}",
                r.refusals[0]
            );
        }
        let mut bigger = old.clone();
        bigger.max_parallelism = 256;
        let r = compare(&old, &bigger, false, &none);
        assert!(
            r.refusals[0].contains("max parallelism changes from 128 to 256"),
            "{r:?}"
        );
        let rebalanced = graph(
            vec![state("n", StateKind::Value, 2)],
            Partitioning::Rebalance,
            &[],
        );
        let r = compare(&old, &rebalanced, false, &none);
        assert!(
            r.refusals[0].contains("no longer partitioned by key"),
            "{r:?}"
        );
    }

    #[test]
    fn a_declared_migration_makes_a_raised_version_compatible() {
        let old = graph(
            vec![state("n", StateKind::Value, 1)],
            Partitioning::Hash,
            &[],
        );
        let new = graph(
            vec![state("n", StateKind::Value, 2)],
            Partitioning::Hash,
            &[],
        );
        let from_1 = |uid: &str, s: &str| {
            if (uid, s) == ("count", "n") {
                vec![1]
            } else {
                vec![]
            }
        };
        let r = compare(&old, &new, false, &from_1);
        assert!(r.compatible(), "{r:?}");
        assert_eq!(
            r.operators[1].states,
            [("n".into(), StateVerdict::Migrate { from: 1, to: 2 })]
        );
    }

    #[test]
    fn operators_and_states_come_and_go() {
        let old = graph(
            vec![
                state("n", StateKind::Value, 1),
                state("seen", StateKind::Map, 1),
            ],
            Partitioning::Hash,
            &["old-map"],
        );
        let new = graph(
            vec![
                state("n", StateKind::Value, 1),
                state("last", StateKind::List, 1),
            ],
            Partitioning::Hash,
            &["new-map"],
        );
        let r = compare(&old, &new, false, &none);
        assert!(
            r.compatible(),
            "a removed operator without state needs nothing: {r:?}"
        );
        let changes: Vec<(&str, &OperatorChange)> = r
            .operators
            .iter()
            .map(|o| (o.uid.as_str(), &o.change))
            .collect();
        assert_eq!(
            changes,
            [
                ("source", &OperatorChange::Kept),
                ("count", &OperatorChange::Kept),
                ("sink", &OperatorChange::Kept),
                ("old-map", &OperatorChange::Removed),
                ("new-map", &OperatorChange::Added),
            ]
        );
        assert_eq!(
            r.operators[1].states,
            [
                ("n".into(), StateVerdict::Same),
                ("seen".into(), StateVerdict::Dropped),
                ("last".into(), StateVerdict::New),
            ]
        );
        // A removed operator with state needs the user's say-so.
        let without_count = {
            let mut g = new.clone();
            g.nodes[1].uid = "counter".into();
            g
        };
        let r = compare(&old, &without_count, false, &none);
        assert!(
            r.refusals[0].contains("operator 'count' is removed and has state"),
            "{r:?}"
        );
        assert!(compare(&old, &without_count, true, &none).compatible());
    }
}
