//! The job graph: what a component's `plan` export describes, checked by [`JobGraph::validate`].

use std::collections::{BTreeMap, HashSet};

/// How records travel from a node's subtasks to the next node's subtasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Partitioning {
    /// Subtask i to subtask i; requires equal parallelism.
    Forward,
    /// By key group of the record's key.
    Hash,
    /// Round robin.
    Rebalance,
    /// To every downstream subtask.
    Broadcast,
}

/// What a piece of keyed state holds for one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StateKind {
    /// One value, prefetched with each batch.
    Value,
    /// A list of values.
    List,
    /// A map of user keys to values.
    Map,
}

/// A declared piece of keyed state.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StateDescriptor {
    /// Name, unique within its operator.
    pub name: String,
    /// Value, list or map.
    pub kind: StateKind,
    /// Schema version chosen by the job author.
    pub version: u32,
    /// Time to live (design note 0003).
    pub ttl: Option<StateTtl>,
}

/// How long keyed state lives after its last write (or read).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StateTtl {
    /// Milliseconds of processing time.
    pub ttl_ms: u64,
    /// Reads restart the clock too.
    pub refresh_on_read: bool,
}

/// How a source or timestamp assigner generates watermarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WatermarkStrategy {
    /// watermark = max timestamp - max_out_of_orderness_ms - 1.
    pub max_out_of_orderness_ms: i64,
    /// After this long without records (processing time) the input is idle.
    pub idle_timeout_ms: Option<i64>,
}

/// A host connector with its configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connector {
    /// Connector name (`datagen`, `file`, `print`, `blackhole`).
    pub name: String,
    /// Key/value configuration, as the guest gave it.
    pub config: BTreeMap<String, String>,
}

impl Connector {
    /// A configuration value.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.config.get(key).map(String::as_str)
    }
}

/// The role of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeKind {
    /// A host connector that produces records.
    Source(Connector),
    /// A host connector that consumes records.
    Sink(Connector),
    /// Guest code.
    Operator,
    /// A source written in the guest.
    GuestSource,
}

/// One node of the graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Stable identity.
    pub uid: String,
    /// Display name.
    pub name: String,
    /// What the node is.
    pub kind: NodeKind,
    /// Number of parallel subtasks (resolved: never zero after validation).
    pub parallelism: u32,
    /// Declared keyed state.
    pub states: Vec<StateDescriptor>,
    /// Watermark strategy, on sources and timestamp assigners.
    pub watermarks: Option<WatermarkStrategy>,
}

impl Node {
    /// Whether the node is any kind of source.
    pub fn is_source(&self) -> bool {
        matches!(self.kind, NodeKind::Source(_) | NodeKind::GuestSource)
    }

    /// Whether the node runs guest code.
    pub fn is_guest(&self) -> bool {
        matches!(self.kind, NodeKind::Operator | NodeKind::GuestSource)
    }
}

/// A connection between two nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    /// Sending node index.
    pub source: usize,
    /// Receiving node index.
    pub target: usize,
    /// Side output name, or `None` for the main output.
    pub side_output: Option<String>,
    /// How records are distributed.
    pub partitioning: Partitioning,
}

/// A job's dataflow graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobGraph {
    /// Job name.
    pub name: String,
    /// Nodes, referenced by index.
    pub nodes: Vec<Node>,
    /// Edges, referenced by index in record frames.
    pub edges: Vec<Edge>,
    /// Number of key groups.
    pub max_parallelism: u32,
}

/// The longest uid or name of a node.
pub const MAX_NAME_BYTES: usize = 256;

/// Why a plan cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The plan has no nodes.
    #[error("the plan has no nodes")]
    Empty,
    /// Two nodes share a uid.
    #[error("duplicate operator uid '{0}': every node needs its own uid")]
    DuplicateUid(String),
    /// A uid or name has control characters or is too long.
    #[error(
        "node {0}'s uid or name has control characters or is longer than {MAX_NAME_BYTES} bytes"
    )]
    UnprintableName(usize),
    /// A uid is empty.
    #[error("node {0} has an empty uid")]
    EmptyUid(usize),
    /// An edge points at a node that does not exist.
    #[error("edge {edge} refers to node {node}, but the plan has {count} nodes")]
    UnknownNode {
        /// Edge index.
        edge: usize,
        /// The missing node index.
        node: usize,
        /// Number of nodes.
        count: usize,
    },
    /// The graph has a cycle.
    #[error("the plan has a cycle through operator '{0}'")]
    Cycle(String),
    /// Parallelism is zero.
    #[error("operator '{0}' has parallelism 0; it must be at least 1")]
    ZeroParallelism(String),
    /// Parallelism exceeds the number of key groups.
    #[error("operator '{uid}' has parallelism {parallelism}, above the max parallelism {max}")]
    ParallelismAboveMax {
        /// Operator uid.
        uid: String,
        /// Its parallelism.
        parallelism: u32,
        /// The job's max parallelism.
        max: u32,
    },
    /// A forward edge joins nodes of different parallelism.
    #[error(
        "forward edge from '{from}' (parallelism {from_p}) to '{to}' (parallelism {to_p}) needs \
         equal parallelism; use rebalance() or key_by()"
    )]
    ForwardParallelism {
        /// Upstream uid.
        from: String,
        /// Upstream parallelism.
        from_p: u32,
        /// Downstream uid.
        to: String,
        /// Downstream parallelism.
        to_p: u32,
    },
    /// A node is wired in a way its kind forbids.
    #[error("operator '{uid}': {reason}")]
    BadWiring {
        /// Operator uid.
        uid: String,
        /// What is wrong.
        reason: String,
    },
    /// A node declares keyed state but its input is not keyed.
    #[error("operator '{0}' declares keyed state but its input is not keyed (use key_by)")]
    StateWithoutKey(String),
    /// Two states of one operator share a name.
    #[error("operator '{uid}' declares state '{name}' twice")]
    DuplicateState {
        /// Operator uid.
        uid: String,
        /// State name.
        name: String,
    },
}

impl JobGraph {
    /// Checks that the graph can run: uids unique and non-empty, edges valid, acyclic,
    /// parallelism within bounds, sources without inputs, sinks without outputs, keyed state
    /// only behind `key_by`.
    pub fn validate(&self) -> Result<(), PlanError> {
        if self.nodes.is_empty() {
            return Err(PlanError::Empty);
        }
        let mut uids = HashSet::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if n.uid.is_empty() {
                return Err(PlanError::EmptyUid(i));
            }
            // Uids and names appear in logs, metrics and errors: one printable line each.
            let printable = |s: &str| s.len() <= MAX_NAME_BYTES && !s.chars().any(char::is_control);
            if !printable(&n.uid) || !printable(&n.name) {
                return Err(PlanError::UnprintableName(i));
            }
            if !uids.insert(n.uid.as_str()) {
                return Err(PlanError::DuplicateUid(n.uid.clone()));
            }
            if n.parallelism == 0 {
                return Err(PlanError::ZeroParallelism(n.uid.clone()));
            }
            if n.parallelism > self.max_parallelism {
                return Err(PlanError::ParallelismAboveMax {
                    uid: n.uid.clone(),
                    parallelism: n.parallelism,
                    max: self.max_parallelism,
                });
            }
            let mut names = HashSet::new();
            for s in &n.states {
                if !names.insert(s.name.as_str()) {
                    return Err(PlanError::DuplicateState {
                        uid: n.uid.clone(),
                        name: s.name.clone(),
                    });
                }
            }
        }
        let count = self.nodes.len();
        for (i, e) in self.edges.iter().enumerate() {
            for node in [e.source, e.target] {
                if node >= count {
                    return Err(PlanError::UnknownNode {
                        edge: i,
                        node,
                        count,
                    });
                }
            }
            let (from, to) = (&self.nodes[e.source], &self.nodes[e.target]);
            if e.partitioning == Partitioning::Forward && from.parallelism != to.parallelism {
                return Err(PlanError::ForwardParallelism {
                    from: from.uid.clone(),
                    from_p: from.parallelism,
                    to: to.uid.clone(),
                    to_p: to.parallelism,
                });
            }
            if to.is_source() {
                return Err(PlanError::BadWiring {
                    uid: to.uid.clone(),
                    reason: "a source cannot have inputs".into(),
                });
            }
            if matches!(from.kind, NodeKind::Sink(_)) {
                return Err(PlanError::BadWiring {
                    uid: from.uid.clone(),
                    reason: "a sink cannot have outputs".into(),
                });
            }
        }
        for (i, n) in self.nodes.iter().enumerate() {
            let inputs: Vec<&Edge> = self.inputs(i).collect();
            if !n.is_source() && inputs.is_empty() {
                return Err(PlanError::BadWiring {
                    uid: n.uid.clone(),
                    reason: "it has no input".into(),
                });
            }
            if !n.states.is_empty()
                && (inputs.is_empty()
                    || inputs.iter().any(|e| e.partitioning != Partitioning::Hash))
            {
                return Err(PlanError::StateWithoutKey(n.uid.clone()));
            }
        }
        self.topological_order().map(|_| ())
    }

    /// Node indices in an order where every edge goes forward; an error names a node on a cycle.
    pub fn topological_order(&self) -> Result<Vec<usize>, PlanError> {
        let n = self.nodes.len();
        let mut indegree = vec![0usize; n];
        for e in &self.edges {
            indegree[e.target] += 1;
        }
        let mut ready: Vec<usize> = (0..n).filter(|&i| indegree[i] == 0).rev().collect();
        let mut order = Vec::with_capacity(n);
        while let Some(i) = ready.pop() {
            order.push(i);
            for e in self.outputs(i) {
                indegree[e.target] -= 1;
                if indegree[e.target] == 0 {
                    ready.push(e.target);
                }
            }
        }
        if order.len() < n {
            let stuck = (0..n).find(|&i| indegree[i] > 0).unwrap_or(0);
            return Err(PlanError::Cycle(self.nodes[stuck].uid.clone()));
        }
        Ok(order)
    }

    /// Edges into node `i`.
    pub fn inputs(&self, i: usize) -> impl Iterator<Item = &Edge> {
        self.edges.iter().filter(move |e| e.target == i)
    }

    /// Edges out of node `i`.
    pub fn outputs(&self, i: usize) -> impl Iterator<Item = &Edge> {
        self.edges.iter().filter(move |e| e.source == i)
    }

    /// Index of the node with this uid.
    pub fn node_by_uid(&self, uid: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.uid == uid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(uid: &str, kind: NodeKind) -> Node {
        Node {
            uid: uid.into(),
            name: uid.into(),
            kind,
            parallelism: 1,
            states: vec![],
            watermarks: None,
        }
    }

    fn source(uid: &str) -> Node {
        node(
            uid,
            NodeKind::Source(Connector {
                name: "datagen".into(),
                config: BTreeMap::new(),
            }),
        )
    }

    fn edge(source: usize, target: usize) -> Edge {
        Edge {
            source,
            target,
            side_output: None,
            partitioning: Partitioning::Forward,
        }
    }

    fn graph(nodes: Vec<Node>, edges: Vec<Edge>) -> JobGraph {
        JobGraph {
            name: "t".into(),
            nodes,
            edges,
            max_parallelism: 128,
        }
    }

    #[test]
    fn a_linear_graph_is_valid() {
        let g = graph(
            vec![source("s"), node("m", NodeKind::Operator)],
            vec![edge(0, 1)],
        );
        g.validate().unwrap();
        assert_eq!(g.topological_order().unwrap(), vec![0, 1]);
    }

    #[test]
    fn uids_and_names_are_one_printable_line() {
        for bad in [
            "a\nINFO forged",
            "\u{1b}[2K",
            &"x".repeat(MAX_NAME_BYTES + 1),
        ] {
            let g = graph(
                vec![source("s"), node(bad, NodeKind::Operator)],
                vec![edge(0, 1)],
            );
            assert_eq!(g.validate(), Err(PlanError::UnprintableName(1)), "{bad:?}");
        }
    }

    #[test]
    fn cycles_are_named() {
        let g = graph(
            vec![
                source("s"),
                node("a", NodeKind::Operator),
                node("b", NodeKind::Operator),
            ],
            vec![edge(0, 1), edge(1, 2), edge(2, 1)],
        );
        assert!(matches!(g.validate(), Err(PlanError::Cycle(_))));
    }

    #[test]
    fn duplicate_uids_are_refused() {
        let g = graph(
            vec![source("x"), node("x", NodeKind::Operator)],
            vec![edge(0, 1)],
        );
        assert_eq!(g.validate(), Err(PlanError::DuplicateUid("x".into())));
    }

    #[test]
    fn state_needs_a_keyed_input() {
        let mut op = node("count", NodeKind::Operator);
        op.states.push(StateDescriptor {
            name: "n".into(),
            kind: StateKind::Value,
            version: 1,
            ttl: None,
        });
        let g = graph(vec![source("s"), op], vec![edge(0, 1)]);
        assert_eq!(
            g.validate(),
            Err(PlanError::StateWithoutKey("count".into()))
        );
    }

    #[test]
    fn forward_needs_equal_parallelism() {
        let mut op = node("m", NodeKind::Operator);
        op.parallelism = 2;
        let g = graph(vec![source("s"), op], vec![edge(0, 1)]);
        assert!(matches!(
            g.validate(),
            Err(PlanError::ForwardParallelism { .. })
        ));
    }
}
