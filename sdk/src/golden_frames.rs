//! The golden frames of `wit/frames/` through the SDK's own layers: the key table a chain
//! indexes, the records and timers it runs, and the `output`, `state-writes` and `timer-ops`
//! frames `RunCx` writes must match the files byte for byte. (The same files are checked by
//! `weir-frame` and, on the host side, by `weir-core`.)

use weir_frame::{
    on_timers_frame, output_records, process_frame, state_writes, timer_ops, write_key,
    write_keyed_frame, write_value, Entry, OutputRecord, ProcessRecord, StateWrite, TimerOp,
    TimerOpKind,
};

use crate::runtime::{KeyTable, RunCx, TimeDomain};
use crate::testing::NativeState;

macro_rules! frame {
    ($name:literal) => {
        &include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../wit/frames/",
            $name,
            ".bin"
        ))[..]
    };
}

/// A key table, owned: each key's bytes and its value slots.
type OwnedKeys = Vec<(Vec<u8>, Vec<Option<Vec<u8>>>)>;

/// The key table as the chain sees it.
fn keys_of(cx: &mut RunCx<'_>, values: usize) -> OwnedKeys {
    (0..cx.keys.len() as u32)
        .map(|k| {
            cx.key = Some(k);
            let key = cx.key_bytes().unwrap().to_vec();
            let slots = (0..values)
                .map(|s| cx.value_slot(s).map(<[u8]>::to_vec))
                .collect();
            (key, slots)
        })
        .collect()
}

type Keys = [(&'static [u8], &'static [Option<&'static [u8]>])];

fn keyed_frame<'a>(keys: &Keys, entries: &[impl Entry<'a>]) -> Vec<u8> {
    let (mut table, mut body, mut out) = (Vec::new(), Vec::new(), Vec::new());
    for (key, values) in keys {
        write_key(&mut table, key);
        values.iter().for_each(|v| write_value(&mut table, *v));
    }
    entries.iter().for_each(|e| e.write(&mut body));
    write_keyed_frame(
        &mut out,
        keys.len() as u32,
        &table,
        entries.len() as u32,
        &body,
    );
    out
}

fn owned(keys: &Keys) -> OwnedKeys {
    keys.iter()
        .map(|(k, vs)| {
            (
                k.to_vec(),
                vs.iter().map(|v| v.map(<[u8]>::to_vec)).collect(),
            )
        })
        .collect()
}

const PROCESS_KEYS: &Keys = &[(b"a", &[Some(b"1"), None]), (b"bc", &[None, Some(b"")])];

#[test]
fn process_frames() {
    let cases: [(&[u8], usize, &Keys, Vec<ProcessRecord<'_>>); 3] = [
        (
            frame!("process"),
            2,
            PROCESS_KEYS,
            vec![
                ProcessRecord {
                    edge: 0,
                    timestamp: Some(5),
                    key_index: Some(0),
                    value: b"x",
                },
                ProcessRecord {
                    edge: 1,
                    timestamp: None,
                    key_index: Some(1),
                    value: b"",
                },
                ProcessRecord {
                    edge: 0,
                    timestamp: Some(-1),
                    key_index: Some(0),
                    value: b"yz",
                },
            ],
        ),
        (
            frame!("process-unkeyed"),
            0,
            &[],
            vec![
                ProcessRecord {
                    edge: 2,
                    timestamp: Some(7),
                    key_index: None,
                    value: b"u",
                },
                ProcessRecord {
                    edge: 2,
                    timestamp: None,
                    key_index: None,
                    value: b"",
                },
            ],
        ),
        (frame!("process-empty"), 0, &[], vec![]),
    ];
    for (bin, values, keys, records) in cases {
        let (table, got) = KeyTable::read(process_frame(bin, values).unwrap(), values).unwrap();
        let mut state = NativeState::default();
        let mut cx = RunCx::new(&mut state);
        cx.keys = table;
        assert_eq!(keys_of(&mut cx, values), owned(keys));
        let got: Vec<_> = got.map(Result::unwrap).collect();
        assert_eq!(got, records);
        assert_eq!(keyed_frame(keys, &got), bin);
    }
}

#[test]
fn on_timers_frames() {
    let keys: &Keys = &[(b"k1", &[Some(b"v")]), (b"k2", &[None])];
    let bin = frame!("on-timers");
    let (table, timers) = KeyTable::read(on_timers_frame(bin, 1).unwrap(), 1).unwrap();
    let mut state = NativeState::default();
    let mut cx = RunCx::new(&mut state);
    cx.keys = table;
    assert_eq!(keys_of(&mut cx, 1), owned(keys));
    let timers: Vec<_> = timers.map(Result::unwrap).collect();
    let seen: Vec<_> = timers
        .iter()
        .map(|t| (t.key_index, TimeDomain::from(t.domain), t.timestamp))
        .collect();
    assert_eq!(
        seen,
        [
            (0, TimeDomain::EventTime, 10),
            (1, TimeDomain::ProcessingTime, 1_700_000_000_000),
            (0, TimeDomain::ProcessingTime, -1),
        ]
    );
    assert_eq!(keyed_frame(keys, &timers), bin);

    let bin = frame!("on-timers-empty");
    let (table, timers) = KeyTable::read(on_timers_frame(bin, 0).unwrap(), 0).unwrap();
    assert_eq!((table.len(), timers.count()), (0, 0));
    assert_eq!(keyed_frame(&[], &[] as &[weir_frame::Timer]), bin);
}

#[test]
fn output_frames() {
    let want = [
        OutputRecord {
            edge: 3,
            timestamp: Some(42),
            key: Some(b"k"),
            value: b"v1",
        },
        OutputRecord {
            edge: 0,
            timestamp: None,
            key: None,
            value: b"",
        },
        OutputRecord {
            edge: 1,
            timestamp: Some(-7),
            key: Some(b""),
            value: b"abc",
        },
    ];
    let bin = frame!("output");
    let got: Vec<_> = output_records(bin).map(Result::unwrap).collect();
    assert_eq!(got, want);
    // Written as the chain's edge writers write them: key and value encoded in place.
    let mut state = NativeState::default();
    let mut cx = RunCx::new(&mut state);
    assert_eq!(cx.out, frame!("output-empty"));
    for r in &got {
        cx.ts = r.timestamp;
        let value = |out: &mut Vec<u8>| out.extend_from_slice(r.value);
        match r.key {
            Some(k) => cx.write_record(r.edge, Some(&|out| out.extend_from_slice(k)), &value),
            None => cx.write_record(r.edge, None, &value),
        }
    }
    assert_eq!(cx.out, bin);
    assert_eq!(output_records(frame!("output-empty")).count(), 0);
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
    // Written as a chain writes them back: the keys of `process.bin`, whose head node has
    // value states at descriptor indices 0 and 2.
    let process = frame!("process");
    let (table, _) = KeyTable::read(process_frame(process, 2).unwrap(), 2).unwrap();
    let mut state = NativeState::default();
    let mut cx = RunCx::new(&mut state);
    cx.keys = table;
    cx.key = Some(0);
    cx.write_value_slot(1, |out| out.extend_from_slice(b"ab"));
    cx.key = Some(1);
    cx.clear_value_slot(0);
    cx.write_value_slot(1, |_| {});
    assert_eq!(cx.state_writes(&[0, 2]), bin);
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
    // Written as the SDK's timer calls write them (by domain, as windows do).
    let mut state = NativeState::default();
    let mut cx = RunCx::new(&mut state);
    for (key, domain, ts) in [
        (0, TimeDomain::EventTime, 100),
        (1, TimeDomain::ProcessingTime, 1_700_000_000_000),
    ] {
        cx.key = Some(key);
        for delete in [false, true] {
            cx.timer_op(TimerOpKind::new(domain.into(), delete), ts)
                .unwrap();
        }
    }
    assert_eq!(cx.timer_ops, bin);
}
