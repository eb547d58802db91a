//! A component written against the WIT directly (no SDK) that returns plans the SDK would
//! never produce, chosen by `--arg plan=...`: `cycle`, `unknown-edge`, `zero-parallelism`,
//! `state-without-key`, `plan-error`, `wide` (`--arg ops=N` operators, none chainable).

wit_bindgen::generate!({
    path: "../../../wit",
    world: "job-component",
});

use exports::weir::stream::job::{Guest, GuestChain};
use weir::stream::types::*;

struct Raw;

fn node(uid: &str, kind: NodeKind) -> Node {
    Node {
        uid: uid.into(),
        name: uid.into(),
        kind,
        parallelism: None,
        states: vec![],
        watermarks: None,
    }
}

fn edge(source: u32, target: u32) -> Edge {
    Edge {
        source,
        target,
        side_output: None,
        partitioning: Partitioning::Forward,
    }
}

impl Guest for Raw {
    type Chain = RawChain;

    fn plan(args: Vec<(String, String)>) -> Result<JobPlan, String> {
        let which = args
            .iter()
            .find(|(k, _)| k == "plan")
            .map(|(_, v)| v.as_str())
            .unwrap_or("cycle");
        let source = node(
            "source",
            NodeKind::Source(Connector {
                name: "datagen".into(),
                config: vec![("count".into(), "10".into())],
            }),
        );
        let mut nodes = vec![
            source,
            node("a", NodeKind::Operator),
            node("b", NodeKind::Operator),
        ];
        let mut edges = vec![edge(0, 1), edge(1, 2)];
        match which {
            "cycle" => edges.push(edge(2, 1)),
            "unknown-edge" => edges.push(edge(2, 7)),
            "zero-parallelism" => nodes[1].parallelism = Some(0),
            "state-without-key" => nodes[1].states.push(StateDescriptor {
                name: "s".into(),
                kind: StateKind::Value,
                version: 1,
                ttl: None,
            }),
            "plan-error" => return Err("this job refuses to plan".into()),
            "wide" => {
                let ops: u32 = args
                    .iter()
                    .find(|(k, _)| k == "ops")
                    .and_then(|(_, v)| v.parse().ok())
                    .unwrap_or(1500);
                nodes.truncate(1);
                edges.clear();
                for i in 1..=ops {
                    nodes.push(node(&format!("op-{i}"), NodeKind::Operator));
                    edges.push(Edge {
                        partitioning: Partitioning::Rebalance,
                        ..edge(0, i)
                    });
                }
            }
            _ => {}
        }
        Ok(JobPlan {
            name: "raw".into(),
            nodes,
            edges,
            max_parallelism: 0,
        })
    }
}

struct RawChain;

impl GuestChain for RawChain {
    fn open(_info: TaskInfo) -> Result<exports::weir::stream::job::Chain, OperatorError> {
        Err(OperatorError {
            operator: "a".into(),
            message: "raw-plan has no operators".into(),
        })
    }

    fn poll(&self, _max: u32, _ctx: CallContext) -> Result<PollResult, OperatorError> {
        unreachable!()
    }

    fn process(&self, _frame: Vec<u8>, _ctx: CallContext) -> Result<BatchResult, OperatorError> {
        unreachable!()
    }

    fn on_timers(&self, _frame: Vec<u8>, _ctx: CallContext) -> Result<BatchResult, OperatorError> {
        unreachable!()
    }

    fn finish(&self, _ctx: CallContext) -> Result<BatchResult, OperatorError> {
        unreachable!()
    }

    fn metrics(&self) -> Vec<u64> {
        unreachable!()
    }
}

export!(Raw);
