//! The channels of an attempt: every subtask of a vertex to every subtask of each vertex
//! downstream of it, bounded (a slow consumer backpressures its producers).

use std::collections::BTreeSet;

use crossbeam_channel::Receiver;
use weir_core::JobGraph;

use crate::exchange::{Downstream, Message};
use crate::plan::{ExecutionPlan, Route};

/// One input channel, and whether its sender will never send a record (a source subtask
/// with nothing to read: it does not hold the watermark back).
type Input = (Receiver<Message>, bool);

/// Per vertex, per subtask.
pub(super) type BySubtask<T> = Vec<Vec<T>>;

/// Every subtask's source reader (`None`: the subtask reads no host source).
pub(super) type Readers = BySubtask<Option<Box<dyn crate::connectors::SourceReader>>>;

/// Channels made and not yet handed to their tasks, by vertex and subtask.
pub(super) struct Wiring {
    outputs: BySubtask<Vec<Downstream>>,
    inputs: BySubtask<Vec<Input>>,
}

impl Wiring {
    pub fn new(graph: &JobGraph, plan: &ExecutionPlan, readers: &Readers, capacity: usize) -> Self {
        let mut outputs: BySubtask<Vec<Downstream>> = plan
            .vertices
            .iter()
            .map(|v| (0..v.parallelism).map(|_| Vec::new()).collect())
            .collect();
        let mut inputs: BySubtask<Vec<Input>> = plan
            .vertices
            .iter()
            .map(|v| (0..v.parallelism).map(|_| Vec::new()).collect())
            .collect();
        for (vi, v) in plan.vertices.iter().enumerate() {
            let nodes = v.nodes();
            let targets: BTreeSet<usize> = graph
                .edges
                .iter()
                .enumerate()
                .filter(|(_, e)| nodes.contains(&e.source))
                .filter_map(|(k, _)| match plan.routes[k] {
                    Route::Exchange { vertex, .. } => Some(vertex),
                    _ => None,
                })
                .collect();
            for d in targets {
                let dp = plan.vertices[d].parallelism;
                for i in 0..v.parallelism {
                    let silent = readers[vi][i as usize]
                        .as_ref()
                        .is_some_and(|r| r.is_empty());
                    let mut txs = Vec::with_capacity(dp as usize);
                    for j in 0..dp {
                        let (tx, rx) = crossbeam_channel::bounded(capacity);
                        txs.push(tx);
                        inputs[d][j as usize].push((rx, silent));
                    }
                    outputs[vi][i as usize].push(Downstream::new(d, txs));
                }
            }
        }
        Wiring { outputs, inputs }
    }

    /// Subtask `i` of vertex `v`'s input channels, and which of them stay silent.
    pub fn take_inputs(&mut self, v: usize, i: u32) -> (Vec<Receiver<Message>>, Vec<bool>) {
        std::mem::take(&mut self.inputs[v][i as usize])
            .into_iter()
            .unzip()
    }

    /// Subtask `i` of vertex `v`'s output channels.
    pub fn take_outputs(&mut self, v: usize, i: u32) -> Vec<Downstream> {
        std::mem::take(&mut self.outputs[v][i as usize])
    }
}
