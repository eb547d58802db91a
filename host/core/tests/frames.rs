//! The golden frames of `wit/frames/` through the host's own layers: `FrameBuilder` must
//! write the `process` and `on-timers` files byte for byte (keys deduplicated, values
//! prefetched), `RecordBatch` the `output` file, and the readers the host applies to a
//! guest's result must decode `output`, `state-writes` and `timer-ops` to the values below.
//! (The same files are checked by `weir-frame` and, on the guest side, by `weir-sdk`.)

use weir_core::frame::{
    on_timers_frame, process_frame, state_writes, timer_ops, Entry, FrameBuilder, KeyedFrame,
    OutputIter, ProcessRecord, RecordBatch, RecordRef, StateWrite, TimeDomain, Timer, TimerOp,
    TimerOpKind,
};

macro_rules! frame {
    ($name:literal) => {
        &include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../wit/frames/",
            $name,
            ".bin"
        ))[..]
    };
}

type Keys<'a> = Vec<(&'a [u8], Vec<Option<&'a [u8]>>)>;

fn decode<'a, E: Entry<'a>>(mut frame: KeyedFrame<'a, E>) -> (Keys<'a>, Vec<E>) {
    let keys = (&mut frame)
        .map(|k| {
            let k = k.unwrap();
            (k.key, k.values.collect())
        })
        .collect();
    let entries = frame.entries().unwrap().map(Result::unwrap).collect();
    (keys, entries)
}

fn finish(b: &FrameBuilder) -> Vec<u8> {
    let mut out = vec![0xAA]; // finish_into clears what was there
    b.finish_into(&mut out);
    out
}

fn record<'a>(edge: u32, ts: Option<i64>, key: Option<u32>, value: &'a [u8]) -> ProcessRecord<'a> {
    ProcessRecord {
        edge,
        timestamp: ts,
        key_index: key,
        value,
    }
}

#[test]
fn process_frames() {
    let bin = frame!("process");
    let mut b = FrameBuilder::new();
    let a = b.key(b"a", |s| {
        s.put(Some(b"1"));
        s.put(None);
    });
    b.record(0, Some(a), Some(5), b"x");
    let bc = b.key(b"bc", |s| {
        s.put(None);
        s.put(Some(b""));
    });
    b.record(1, Some(bc), None, b"");
    let again = b.key(b"a", |_| panic!("a key is prefetched once per frame"));
    b.record(0, Some(again), Some(-1), b"yz");
    assert_eq!(finish(&b), bin);
    let (keys, records) = decode(process_frame(bin, 2).unwrap());
    assert_eq!(
        keys,
        [
            (&b"a"[..], vec![Some(&b"1"[..]), None]),
            (&b"bc"[..], vec![None, Some(&b""[..])])
        ]
    );
    assert_eq!(
        records,
        [
            record(0, Some(5), Some(0), b"x"),
            record(1, None, Some(1), b""),
            record(0, Some(-1), Some(0), b"yz"),
        ]
    );

    // Unkeyed: straight from a batch, or through the builder; the same bytes.
    let bin = frame!("process-unkeyed");
    let mut batch = RecordBatch::default();
    for (ts, value) in [(Some(7), &b"u"[..]), (None, b"")] {
        batch.push(RecordRef {
            edge: 2,
            timestamp: ts,
            key: None,
            value,
        });
    }
    let mut out = Vec::new();
    FrameBuilder::unkeyed_frame(&batch, &mut out);
    assert_eq!(out, bin);
    let mut b = FrameBuilder::new();
    b.record(2, None, Some(7), b"u");
    b.record(2, None, None, b"");
    assert_eq!(finish(&b), bin);
    let (keys, records) = decode(process_frame(bin, 0).unwrap());
    assert!(keys.is_empty());
    assert_eq!(
        records,
        [record(2, Some(7), None, b"u"), record(2, None, None, b"")]
    );

    let bin = frame!("process-empty");
    assert_eq!(finish(&FrameBuilder::new()), bin);
    FrameBuilder::unkeyed_frame(&RecordBatch::default(), &mut out);
    assert_eq!(out, bin);
    assert_eq!(decode(process_frame(bin, 0).unwrap()), (vec![], vec![]));
}

#[test]
fn on_timers_frames() {
    let bin = frame!("on-timers");
    let mut b = FrameBuilder::new();
    let k1 = b.key(b"k1", |s| s.put(Some(b"v")));
    b.timer(k1, false, 10);
    let k2 = b.key(b"k2", |s| s.put(None));
    b.timer(k2, true, 1_700_000_000_000);
    let again = b.key(b"k1", |_| panic!("prefetched twice"));
    b.timer(again, true, -1);
    assert_eq!(finish(&b), bin);
    let (keys, timers) = decode(on_timers_frame(bin, 1).unwrap());
    assert_eq!(
        keys,
        [
            (&b"k1"[..], vec![Some(&b"v"[..])]),
            (&b"k2"[..], vec![None])
        ]
    );
    let timer = |key_index, domain, timestamp| Timer {
        key_index,
        domain,
        timestamp,
    };
    assert_eq!(
        timers,
        [
            timer(0, TimeDomain::EventTime, 10),
            timer(1, TimeDomain::ProcessingTime, 1_700_000_000_000),
            timer(0, TimeDomain::ProcessingTime, -1),
        ]
    );

    let bin = frame!("on-timers-empty");
    assert_eq!(finish(&FrameBuilder::new()), bin);
    assert_eq!(decode(on_timers_frame(bin, 0).unwrap()), (vec![], vec![]));
}

#[test]
fn output_frames() {
    let bin = frame!("output");
    let want = [
        RecordRef {
            edge: 3,
            timestamp: Some(42),
            key: Some(b"k"),
            value: b"v1",
        },
        RecordRef {
            edge: 0,
            timestamp: None,
            key: None,
            value: b"",
        },
        RecordRef {
            edge: 1,
            timestamp: Some(-7),
            key: Some(b""),
            value: b"abc",
        },
    ];
    let got: Vec<_> = OutputIter::new(bin).map(Result::unwrap).collect();
    assert_eq!(got, want);
    let mut batch = RecordBatch::default();
    for r in got {
        batch.push(r);
    }
    assert_eq!((batch.as_bytes(), batch.len()), (bin, 3));

    let bin = frame!("output-empty");
    assert_eq!(OutputIter::new(bin).count(), 0);
    assert_eq!(RecordBatch::default().as_bytes(), bin);
}

#[test]
fn state_writes_frame() {
    let bin = frame!("state-writes");
    let got: Vec<_> = state_writes(bin).map(Result::unwrap).collect();
    assert_eq!(
        got,
        [
            StateWrite {
                key_index: 0,
                state_index: 2,
                value: Some(b"ab"),
            },
            StateWrite {
                key_index: 1,
                state_index: 0,
                value: None,
            },
            StateWrite {
                key_index: 1,
                state_index: 2,
                value: Some(b""),
            },
        ]
    );
    let mut out = Vec::new();
    got.iter().for_each(|w| w.write(&mut out));
    assert_eq!(out, bin);
}

#[test]
fn timer_ops_frame() {
    let bin = frame!("timer-ops");
    let got: Vec<_> = timer_ops(bin).map(Result::unwrap).collect();
    let op = |kind, key_index, timestamp| TimerOp {
        kind,
        key_index,
        timestamp,
    };
    assert_eq!(
        got,
        [
            op(TimerOpKind::RegisterEventTime, 0, 100),
            op(TimerOpKind::DeleteEventTime, 0, 100),
            op(TimerOpKind::RegisterProcessingTime, 1, 1_700_000_000_000),
            op(TimerOpKind::DeleteProcessingTime, 1, 1_700_000_000_000),
        ]
    );
    let mut out = Vec::new();
    got.iter().for_each(|o| o.write(&mut out));
    assert_eq!(out, bin);
}
