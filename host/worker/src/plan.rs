//! From a job graph to the tasks that run it: operator chaining and edge routing.

use weir_core::{JobGraph, NodeKind, Partitioning};

/// One chained vertex of the execution plan, run as `parallelism` subtasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vertex {
    /// A host source connector at the head, if any.
    pub source: Option<usize>,
    /// Guest operators, chained, upstream first.
    pub guest: Vec<usize>,
    /// A host sink connector at the tail, if any.
    pub sink: Option<usize>,
    /// Parallelism of every node in the vertex.
    pub parallelism: u32,
}

impl Vertex {
    /// Plan indices of every node in the vertex, upstream first.
    pub fn nodes(&self) -> Vec<usize> {
        let mut v: Vec<usize> = self.source.into_iter().collect();
        v.extend(&self.guest);
        v.extend(self.sink);
        v
    }

    /// The first node.
    pub fn head(&self) -> usize {
        self.nodes()[0]
    }

    /// A display name: the chained node names joined by arrows.
    pub fn name(&self, graph: &JobGraph) -> String {
        self.nodes()
            .iter()
            .map(|&n| graph.nodes[n].uid.as_str())
            .collect::<Vec<_>>()
            .join(" -> ")
    }
}

/// Where an edge's records go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Into the sink chained in the same vertex.
    LocalSink,
    /// Into the guest chain of the same vertex (a chained edge; never carries records).
    Chained,
    /// Through an exchange to another vertex.
    Exchange {
        /// Target vertex.
        vertex: usize,
        /// How records pick a subtask.
        partitioning: Partitioning,
    },
}

/// Vertices and the route of every edge.
#[derive(Debug, Clone)]
pub struct ExecutionPlan {
    /// The chained vertices in topological order.
    pub vertices: Vec<Vertex>,
    /// Route of each plan edge, by edge index.
    pub routes: Vec<Route>,
    /// The vertex of each node.
    pub vertex_of: Vec<usize>,
}

fn chainable(graph: &JobGraph, from: usize, to: usize) -> bool {
    let outs: Vec<_> = graph
        .outputs(from)
        .filter(|e| e.side_output.is_none())
        .collect();
    let ins: Vec<_> = graph.inputs(to).collect();
    outs.len() == 1
        && ins.len() == 1
        && outs[0].target == to
        && ins[0].side_output.is_none()
        && ins[0].partitioning == Partitioning::Forward
        && graph.nodes[from].parallelism == graph.nodes[to].parallelism
}

impl ExecutionPlan {
    /// Chains the graph: a host source, then guest operators, then a host sink are chained
    /// into one vertex while each link is a forward edge between nodes of equal parallelism
    /// with no other consumer.
    pub fn new(graph: &JobGraph) -> Self {
        let order = graph.topological_order().expect("the graph was validated");
        let mut vertex_of = vec![usize::MAX; graph.nodes.len()];
        let mut vertices: Vec<Vertex> = Vec::new();
        for &n in &order {
            if vertex_of[n] != usize::MAX {
                continue;
            }
            let node = &graph.nodes[n];
            let mut v = Vertex {
                source: None,
                guest: vec![],
                sink: None,
                parallelism: node.parallelism,
            };
            match node.kind {
                NodeKind::Source(_) => v.source = Some(n),
                NodeKind::Sink(_) => v.sink = Some(n),
                NodeKind::Operator | NodeKind::GuestSource => v.guest.push(n),
            }
            let mut last = n;
            while v.sink.is_none() {
                let next = graph
                    .outputs(last)
                    .find(|e| e.side_output.is_none())
                    .map(|e| e.target);
                let Some(next) = next else { break };
                if !chainable(graph, last, next) || vertex_of[next] != usize::MAX {
                    break;
                }
                match graph.nodes[next].kind {
                    NodeKind::Operator => v.guest.push(next),
                    NodeKind::Sink(_) => v.sink = Some(next),
                    _ => break,
                }
                last = next;
            }
            let id = vertices.len();
            for m in v.nodes() {
                vertex_of[m] = id;
            }
            vertices.push(v);
        }
        let routes = graph
            .edges
            .iter()
            .map(|e| {
                let (from, to) = (vertex_of[e.source], vertex_of[e.target]);
                if from == to {
                    if matches!(graph.nodes[e.target].kind, NodeKind::Sink(_)) {
                        Route::LocalSink
                    } else {
                        Route::Chained
                    }
                } else {
                    Route::Exchange {
                        vertex: to,
                        partitioning: e.partitioning,
                    }
                }
            })
            .collect();
        ExecutionPlan {
            vertices,
            routes,
            vertex_of,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use weir_core::{Connector, Edge, Node};

    use super::*;

    fn node(uid: &str, kind: NodeKind, parallelism: u32) -> Node {
        Node {
            uid: uid.into(),
            name: uid.into(),
            kind,
            parallelism,
            states: vec![],
            watermarks: None,
        }
    }

    fn connector() -> Connector {
        Connector {
            name: "x".into(),
            config: BTreeMap::new(),
        }
    }

    fn edge(source: usize, target: usize, partitioning: Partitioning) -> Edge {
        Edge {
            source,
            target,
            side_output: None,
            partitioning,
        }
    }

    #[test]
    fn forward_edges_of_equal_parallelism_chain() {
        // source -> map -> (hash) -> count -> sink, plus a side output of count.
        let graph = JobGraph {
            name: "t".into(),
            max_parallelism: 128,
            nodes: vec![
                node("source", NodeKind::Source(connector()), 2),
                node("map", NodeKind::Operator, 2),
                node("count", NodeKind::Operator, 2),
                node("sink", NodeKind::Sink(connector()), 2),
                node("late", NodeKind::Sink(connector()), 1),
            ],
            edges: vec![
                edge(0, 1, Partitioning::Forward),
                edge(1, 2, Partitioning::Hash),
                edge(2, 3, Partitioning::Forward),
                Edge {
                    side_output: Some("late".into()),
                    ..edge(2, 4, Partitioning::Rebalance)
                },
            ],
        };
        graph.validate().unwrap();
        let plan = ExecutionPlan::new(&graph);
        let names: Vec<String> = plan.vertices.iter().map(|v| v.name(&graph)).collect();
        assert_eq!(names, ["source -> map", "count -> sink", "late"]);
        assert_eq!(plan.routes[0], Route::Chained);
        assert_eq!(
            plan.routes[1],
            Route::Exchange {
                vertex: 1,
                partitioning: Partitioning::Hash
            }
        );
        assert_eq!(plan.routes[2], Route::LocalSink);
        assert!(matches!(plan.routes[3], Route::Exchange { vertex: 2, .. }));
    }

    #[test]
    fn fan_out_and_unequal_parallelism_break_chains() {
        let graph = JobGraph {
            name: "t".into(),
            max_parallelism: 128,
            nodes: vec![
                node("source", NodeKind::Source(connector()), 1),
                node("a", NodeKind::Operator, 1),
                node("b", NodeKind::Operator, 1),
                node("c", NodeKind::Operator, 3),
            ],
            edges: vec![
                edge(0, 1, Partitioning::Forward),
                edge(0, 2, Partitioning::Forward),
                edge(2, 3, Partitioning::Rebalance),
            ],
        };
        let plan = ExecutionPlan::new(&graph);
        assert_eq!(plan.vertices.len(), 4);
    }
}
