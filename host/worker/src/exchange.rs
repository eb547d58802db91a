//! Exchanges between tasks: bounded channels (backpressure), output routing by partitioning,
//! and the input side that merges channels and their watermarks.

use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Select, Sender};
use weir_core::frame::{RecordBatch, RecordRef};
use weir_core::{key_group_for, subtask_for_key_group, Partitioning, Watermark};

use crate::connectors::SinkWriter;
use crate::plan::Route;
use crate::TaskError;

/// What travels on a channel, in order.
#[derive(Debug)]
pub enum Message {
    /// Records.
    Batch(RecordBatch),
    /// The sender's watermark advanced.
    Watermark(Watermark),
    /// The sender became idle (true) or active again (false).
    Idle(bool),
    /// A checkpoint barrier: everything before it belongs to the checkpoint.
    Barrier(Arc<crate::checkpoint::BarrierInfo>),
    /// The sender has finished; nothing follows.
    End,
}

/// One downstream vertex as seen by a sending subtask.
pub struct Downstream {
    /// The vertex index.
    pub vertex: usize,
    /// One sender per downstream subtask.
    pub senders: Vec<Sender<Message>>,
    buffers: Vec<RecordBatch>,
}

impl Downstream {
    /// A downstream vertex reached through `senders` (indexed by subtask).
    pub fn new(vertex: usize, senders: Vec<Sender<Message>>) -> Self {
        let buffers = senders.iter().map(|_| RecordBatch::default()).collect();
        Downstream {
            vertex,
            senders,
            buffers,
        }
    }
}

/// Where a subtask's output goes: a chained sink and exchanges.
pub struct Outputs {
    /// Route of every plan edge.
    routes: Vec<Route>,
    /// Which plan edges this vertex may write to.
    own_edges: Vec<bool>,
    downstream: Vec<Downstream>,
    /// Index into `downstream` per plan edge (exchange edges only).
    slot_of_edge: Vec<Option<usize>>,
    rr: u32,
    subtask: u32,
    max_parallelism: u32,
    /// The chained sink.
    pub sink: Option<Box<dyn SinkWriter>>,
    /// Records sent on each edge (sink writes and exchange sends).
    edge_counts: Vec<u64>,
    batch_records: usize,
    /// Time spent waiting for room in full downstream channels (backpressure).
    blocked: Duration,
}

/// Sends on a bounded channel, adding the time it waits for room to `blocked`.
fn send_timed(tx: &Sender<Message>, m: Message, blocked: &mut Duration) -> Result<(), TaskError> {
    match tx.try_send(m) {
        Ok(()) => Ok(()),
        Err(crossbeam_channel::TrySendError::Full(m)) => {
            let waiting = std::time::Instant::now();
            let r = tx.send(m).map_err(|_| TaskError::Cancelled);
            *blocked += waiting.elapsed();
            r
        }
        Err(crossbeam_channel::TrySendError::Disconnected(_)) => Err(TaskError::Cancelled),
    }
}

impl Outputs {
    /// Routes for a subtask whose vertex owns the edges marked in `own_edges`.
    pub fn new(
        routes: Vec<Route>,
        own_edges: Vec<bool>,
        downstream: Vec<Downstream>,
        sink: Option<Box<dyn SinkWriter>>,
        subtask: u32,
        max_parallelism: u32,
    ) -> Self {
        let edge_count = routes.len();
        let slot_of_edge = routes
            .iter()
            .map(|r| match r {
                Route::Exchange { vertex, .. } => {
                    downstream.iter().position(|d| d.vertex == *vertex)
                }
                _ => None,
            })
            .collect();
        Outputs {
            routes,
            own_edges,
            downstream,
            slot_of_edge,
            rr: subtask,
            subtask,
            max_parallelism,
            sink,
            edge_counts: vec![0; edge_count],
            batch_records: 1024,
            blocked: Duration::ZERO,
        }
    }

    /// Sends one record on its edge.
    pub fn route(&mut self, r: RecordRef<'_>) -> Result<(), TaskError> {
        let e = r.edge as usize;
        if !self.own_edges.get(e).copied().unwrap_or(false) {
            return Err(TaskError::Protocol(format!(
                "a record was written to edge {e}, which does not leave this task"
            )));
        }
        self.edge_counts[e] += 1;
        match self.routes[e] {
            Route::LocalSink => {
                let sink = self.sink.as_mut().expect("a local-sink route has a sink");
                sink.write(r.value)?;
            }
            Route::Chained => {
                return Err(TaskError::Protocol(format!(
                    "a record was written to chained edge {e}"
                )))
            }
            Route::Exchange { partitioning, .. } => {
                let slot = self.slot_of_edge[e].expect("exchange edges have a slot");
                let d = &mut self.downstream[slot];
                let n = d.senders.len() as u32;
                let full = |b: &RecordBatch, limit: usize| b.len() >= limit;
                let mut targets: [u32; 1] = [0];
                let many: Vec<u32>;
                let subtasks: &[u32] = match partitioning {
                    Partitioning::Forward => {
                        targets[0] = self.subtask.min(n - 1);
                        &targets
                    }
                    Partitioning::Hash => {
                        let key = r.key.ok_or_else(|| {
                            TaskError::Protocol(format!("record on keyed edge {e} has no key"))
                        })?;
                        let kg = key_group_for(key, self.max_parallelism);
                        targets[0] = subtask_for_key_group(kg, self.max_parallelism, n);
                        &targets
                    }
                    Partitioning::Rebalance => {
                        self.rr = (self.rr + 1) % n;
                        targets[0] = self.rr;
                        &targets
                    }
                    Partitioning::Broadcast => {
                        many = (0..n).collect();
                        &many
                    }
                };
                // Only hash edges carry keys (an unkeyed receiver takes the batch as is).
                let r = match partitioning {
                    Partitioning::Hash => r,
                    _ => RecordRef { key: None, ..r },
                };
                for &t in subtasks {
                    let t = t as usize;
                    d.buffers[t].push(r);
                    if full(&d.buffers[t], self.batch_records) {
                        let b = std::mem::take(&mut d.buffers[t]);
                        send_timed(&d.senders[t], Message::Batch(b), &mut self.blocked)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The records sent on each edge so far, resetting the counts.
    pub fn take_edge_counts(&mut self) -> Vec<u64> {
        let n = self.edge_counts.len();
        std::mem::replace(&mut self.edge_counts, vec![0; n])
    }

    /// Time spent blocked on full downstream channels so far.
    pub fn blocked(&self) -> Duration {
        self.blocked
    }

    /// Sends every buffered record.
    pub fn flush(&mut self) -> Result<(), TaskError> {
        for d in &mut self.downstream {
            for (t, b) in d.buffers.iter_mut().enumerate() {
                if !b.is_empty() {
                    let b = std::mem::take(b);
                    send_timed(&d.senders[t], Message::Batch(b), &mut self.blocked)?;
                }
            }
        }
        Ok(())
    }

    /// Flushes, then sends `make()` to every downstream subtask.
    pub fn broadcast(&mut self, make: impl Fn() -> Message) -> Result<(), TaskError> {
        self.flush()?;
        for d in &self.downstream {
            for s in &d.senders {
                send_timed(s, make(), &mut self.blocked)?;
            }
        }
        Ok(())
    }
}

/// The receiving side: several channels, each with its own watermark.
pub struct InputGate {
    receivers: Vec<Receiver<Message>>,
    watermarks: Vec<Watermark>,
    idle: Vec<bool>,
    ended: Vec<bool>,
    current: Watermark,
    /// An event to report on the next call (all inputs went idle after a watermark).
    pending: std::collections::VecDeque<Input>,
    /// Exactly-once: a channel that delivered the current barrier is blocked until every
    /// channel has (alignment). At-least-once: barriers are only counted.
    aligned: bool,
    /// The barrier being collected, and which channels delivered it.
    barrier: Option<(Arc<crate::checkpoint::BarrierInfo>, Vec<bool>)>,
}

/// What the gate yields.
pub enum Input {
    /// Records from a channel.
    Batch(RecordBatch),
    /// The combined watermark advanced.
    Watermark(Watermark),
    /// Every channel is idle.
    Idle,
    /// Every channel delivered this barrier (or ended).
    Barrier(Arc<crate::checkpoint::BarrierInfo>),
    /// Every channel has ended.
    End,
    /// Nothing arrived within the timeout.
    Timeout,
}

impl InputGate {
    /// A gate over `receivers`; channels whose sender is known never to produce a record
    /// (`silent`) start idle, so they never hold the others back.
    pub fn new(receivers: Vec<Receiver<Message>>, silent: Vec<bool>) -> Self {
        let n = receivers.len();
        let idle = (0..n)
            .map(|i| silent.get(i).copied().unwrap_or(false))
            .collect();
        InputGate {
            receivers,
            watermarks: vec![Watermark::MIN; n],
            idle,
            ended: vec![false; n],
            current: Watermark::MIN,
            pending: std::collections::VecDeque::new(),
            aligned: true,
            barrier: None,
        }
    }

    /// Sets how barriers are handled: aligned (exactly-once) or not (at-least-once).
    pub fn set_aligned(&mut self, aligned: bool) {
        self.aligned = aligned;
    }

    /// Starts from a restored watermark.
    pub fn set_watermark(&mut self, w: Watermark) {
        self.current = w;
    }

    /// Records that channel `i` delivered `b` (or ended, with `b` None); returns the
    /// barrier once every live channel has delivered it.
    fn barrier_arrived(
        &mut self,
        i: usize,
        b: Option<Arc<crate::checkpoint::BarrierInfo>>,
    ) -> Option<Input> {
        if let Some(b) = b {
            match &self.barrier {
                Some((cur, _)) if cur.id > b.id => return None, // stale
                Some((cur, _)) if cur.id == b.id => {}
                _ => self.barrier = Some((b, vec![false; self.receivers.len()])),
            }
            if let Some((_, arrived)) = self.barrier.as_mut() {
                arrived[i] = true;
            }
        }
        let (_, arrived) = self.barrier.as_ref()?;
        let complete = (0..self.receivers.len()).all(|c| arrived[c] || self.ended[c]);
        if complete {
            let (b, _) = self.barrier.take().expect("checked");
            return Some(Input::Barrier(b));
        }
        None
    }

    fn blocked(&self, i: usize) -> bool {
        self.aligned && self.barrier.as_ref().is_some_and(|(_, arrived)| arrived[i])
    }

    /// Min over active channels; ended channels count as +inf, idle ones are skipped.
    fn combine(&mut self) -> Option<Input> {
        let mut min = None::<Watermark>;
        let mut any_idle = false;
        for i in 0..self.receivers.len() {
            if self.ended[i] {
                continue;
            }
            if self.idle[i] {
                any_idle = true;
                continue;
            }
            min = Some(min.map_or(self.watermarks[i], |m| m.min(self.watermarks[i])));
        }
        let all_ended = self.ended.iter().all(|&e| e);
        let next = match (min, all_ended) {
            (_, true) => Watermark::MAX,
            (Some(m), false) => m,
            (None, false) if any_idle => {
                // Every input is idle: event time moves to the furthest any of them got
                // (Flink's valve does the same), and the output goes idle.
                let max = (0..self.receivers.len())
                    .filter(|&i| !self.ended[i])
                    .map(|i| self.watermarks[i])
                    .max()
                    .unwrap_or(self.current);
                if max > self.current {
                    self.current = max;
                    self.pending.push_back(Input::Idle);
                    return Some(Input::Watermark(max));
                }
                return Some(Input::Idle);
            }
            (None, false) => self.current,
        };
        if next > self.current {
            self.current = next;
            return Some(Input::Watermark(next));
        }
        None
    }

    /// The next input, waiting at most `timeout`.
    pub fn next(&mut self, timeout: Duration) -> Result<Input, TaskError> {
        if let Some(event) = self.pending.pop_front() {
            return Ok(event);
        }
        loop {
            if self.ended.iter().all(|&e| e) {
                return Ok(Input::End);
            }
            let live: Vec<usize> = (0..self.receivers.len())
                .filter(|&i| !self.ended[i] && !self.blocked(i))
                .collect();
            let (i, msg) = if live.len() == 1 {
                let i = live[0];
                match self.receivers[i].recv_timeout(timeout) {
                    Ok(m) => (i, m),
                    Err(RecvTimeoutError::Timeout) => return Ok(Input::Timeout),
                    Err(RecvTimeoutError::Disconnected) => return Err(TaskError::Cancelled),
                }
            } else {
                let mut sel = Select::new();
                for &i in &live {
                    sel.recv(&self.receivers[i]);
                }
                let op = match sel.select_timeout(timeout) {
                    Ok(op) => op,
                    Err(_) => return Ok(Input::Timeout),
                };
                let i = live[op.index()];
                match op.recv(&self.receivers[i]) {
                    Ok(m) => (i, m),
                    Err(_) => return Err(TaskError::Cancelled),
                }
            };
            match msg {
                Message::Batch(b) => {
                    if self.idle[i] {
                        self.idle[i] = false;
                    }
                    return Ok(Input::Batch(b));
                }
                Message::Watermark(w) => {
                    self.watermarks[i] = self.watermarks[i].max(w);
                    self.idle[i] = false;
                }
                Message::Idle(idle) => self.idle[i] = idle,
                Message::Barrier(b) => {
                    if let Some(event) = self.barrier_arrived(i, Some(b)) {
                        return Ok(event);
                    }
                }
                Message::End => {
                    self.ended[i] = true;
                    if let Some(event) = self.barrier_arrived(i, None) {
                        // The end of this channel completed an alignment: report the
                        // watermark change (if any) on the next call.
                        if let Some(w) = self.combine() {
                            self.pending.push_front(w);
                        }
                        return Ok(event);
                    }
                }
            }
            if let Some(event) = self.combine() {
                return Ok(event);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(n: usize, silent: Vec<bool>) -> (Vec<Sender<Message>>, InputGate) {
        let (txs, rxs): (Vec<_>, Vec<_>) = (0..n).map(|_| crossbeam_channel::bounded(8)).unzip();
        (txs, InputGate::new(rxs, silent))
    }

    fn next_watermark(g: &mut InputGate) -> Option<Watermark> {
        match g.next(Duration::from_millis(10)).unwrap() {
            Input::Watermark(w) => Some(w),
            _ => None,
        }
    }

    #[test]
    fn the_watermark_is_the_minimum_over_channels_and_never_goes_back() {
        let (tx, mut g) = gate(2, vec![]);
        tx[0].send(Message::Watermark(Watermark(10))).unwrap();
        assert_eq!(next_watermark(&mut g), None, "channel 1 holds it back");
        tx[1].send(Message::Watermark(Watermark(5))).unwrap();
        assert_eq!(next_watermark(&mut g), Some(Watermark(5)));
        tx[1].send(Message::Watermark(Watermark(3))).unwrap();
        assert_eq!(next_watermark(&mut g), None, "watermarks never go back");
        tx[1].send(Message::Watermark(Watermark(20))).unwrap();
        assert_eq!(next_watermark(&mut g), Some(Watermark(10)));
        tx[0].send(Message::End).unwrap();
        assert_eq!(
            next_watermark(&mut g),
            Some(Watermark(20)),
            "ended channels count as +inf"
        );
        tx[1].send(Message::End).unwrap();
        assert_eq!(next_watermark(&mut g), Some(Watermark::MAX));
        assert!(matches!(
            g.next(Duration::from_millis(10)).unwrap(),
            Input::End
        ));
    }

    #[test]
    fn idle_channels_do_not_hold_the_watermark_back() {
        let (tx, mut g) = gate(2, vec![]);
        tx[0].send(Message::Watermark(Watermark(10))).unwrap();
        assert_eq!(next_watermark(&mut g), None);
        tx[1].send(Message::Idle(true)).unwrap();
        assert_eq!(next_watermark(&mut g), Some(Watermark(10)));
        tx[0].send(Message::Idle(true)).unwrap();
        assert!(matches!(
            g.next(Duration::from_millis(10)).unwrap(),
            Input::Idle
        ));
        // Active again: its watermark counts again.
        tx[1].send(Message::Watermark(Watermark(12))).unwrap();
        assert_eq!(next_watermark(&mut g), Some(Watermark(12)));
    }

    #[test]
    fn silent_channels_do_not_hold_the_watermark_back() {
        let (tx, mut g) = gate(2, vec![false, true]);
        tx[0].send(Message::Watermark(Watermark(7))).unwrap();
        assert_eq!(next_watermark(&mut g), Some(Watermark(7)));
    }

    #[test]
    fn when_all_inputs_go_idle_the_furthest_watermark_wins() {
        let (tx, mut g) = gate(2, vec![]);
        tx[0].send(Message::Watermark(Watermark(100))).unwrap();
        tx[1].send(Message::Watermark(Watermark(50))).unwrap();
        assert_eq!(next_watermark(&mut g), Some(Watermark(50)));
        tx[0].send(Message::Idle(true)).unwrap();
        assert_eq!(next_watermark(&mut g), None, "one input still active");
        tx[1].send(Message::Idle(true)).unwrap();
        assert_eq!(next_watermark(&mut g), Some(Watermark(100)));
        assert!(matches!(
            g.next(Duration::from_millis(10)).unwrap(),
            Input::Idle
        ));
    }
}
