//! The golden frames in `wit/frames/`: each file decodes to the values written here, and
//! encoding those values gives the file byte for byte. A layout change fails here first.
//!
//! `WEIR_BLESS_FRAMES=1 cargo test -p weir-frame --test golden` rewrites the files from the
//! values below (then update `wit/frames/README.md`, and the golden tests of `weir-core`
//! and `weir-sdk`, which check the same files through each side's own layer).

use std::path::PathBuf;

use weir_frame::{
    on_timers_frame, output_records, process_frame, state_writes, timer_ops, write_key,
    write_keyed_frame, write_value, Entry, FrameError, KeyedFrame, OutputRecord, ProcessRecord,
    StateWrite, TimeDomain, Timer, TimerOp, TimerOpKind,
};

macro_rules! frame {
    ($name:literal) => {
        (
            $name,
            &include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../frames/",
                $name,
                ".bin"
            ))[..],
        )
    };
}

/// Every golden frame, by file name (without `.bin`).
const FILES: &[&str] = &[
    "process",
    "process-unkeyed",
    "process-empty",
    "on-timers",
    "on-timers-empty",
    "output",
    "output-empty",
    "state-writes",
    "timer-ops",
];

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../frames")
}

fn bless() -> bool {
    std::env::var_os("WEIR_BLESS_FRAMES").is_some_and(|v| v == "1")
}

/// Compares `encoded` (from the expected values) with the committed file, or rewrites it.
fn same_bytes(name: &str, committed: &[u8], encoded: &[u8]) {
    if bless() {
        std::fs::write(dir().join(format!("{name}.bin")), encoded).unwrap();
    } else {
        assert_eq!(
            encoded, committed,
            "{name}.bin: encoding differs from the file"
        );
    }
}

type Keys<'a> = Vec<(&'a [u8], Vec<Option<&'a [u8]>>)>;

fn decode_keyed<'a, E: Entry<'a>>(
    frame: Result<KeyedFrame<'a, E>, FrameError>,
) -> Result<(Keys<'a>, Vec<E>), FrameError> {
    let mut frame = frame?;
    let mut keys = Vec::new();
    for k in &mut frame {
        let k = k?;
        keys.push((k.key, k.values.collect()));
    }
    let entries = frame.entries()?.collect::<Result<_, _>>()?;
    Ok((keys, entries))
}

fn encode_keyed<'a, E: Entry<'a>>(keys: &Keys<'_>, entries: &[E]) -> Vec<u8> {
    let (mut table, mut body, mut out) = (Vec::new(), Vec::new(), Vec::new());
    for (key, values) in keys {
        write_key(&mut table, key);
        for v in values {
            write_value(&mut table, *v);
        }
    }
    for e in entries {
        e.write(&mut body);
    }
    write_keyed_frame(
        &mut out,
        keys.len() as u32,
        &table,
        entries.len() as u32,
        &body,
    );
    out
}

fn encode<'a, E: Entry<'a>>(entries: &[E]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        e.write(&mut out);
    }
    out
}

fn check_keyed<'a, E: Entry<'a> + PartialEq + std::fmt::Debug>(
    (name, committed): (&str, &'a [u8]),
    decode: impl Fn(&'a [u8]) -> Result<KeyedFrame<'a, E>, FrameError>,
    keys: Keys<'a>,
    entries: Vec<E>,
) {
    let encoded = encode_keyed(&keys, &entries);
    same_bytes(name, committed, &encoded);
    if !bless() {
        let (got_keys, got) = decode_keyed(decode(committed)).unwrap();
        assert_eq!(got_keys, keys, "{name}.bin: key table");
        assert_eq!(got, entries, "{name}.bin: entries");
        assert_eq!(encode_keyed(&got_keys, &got), committed, "{name}.bin");
    }
}

fn check_entries<'a, E: Entry<'a> + PartialEq + std::fmt::Debug>(
    (name, committed): (&str, &'a [u8]),
    decode: impl Fn(&'a [u8]) -> weir_frame::Entries<'a, E>,
    entries: Vec<E>,
) {
    same_bytes(name, committed, &encode(&entries));
    if !bless() {
        let got: Vec<E> = decode(committed).collect::<Result<_, _>>().unwrap();
        assert_eq!(got, entries, "{name}.bin");
        assert_eq!(encode(&got), committed, "{name}.bin");
    }
}

const S: fn(&'static [u8]) -> Option<&'static [u8]> = Some;

#[test]
fn process_frames() {
    // Two value states per key; a present empty value is not an absent one.
    check_keyed(
        frame!("process"),
        |f| process_frame(f, 2),
        vec![
            (&b"a"[..], vec![S(b"1"), None]),
            (&b"bc"[..], vec![None, S(b"")]),
        ],
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
    );
    check_keyed(
        frame!("process-unkeyed"),
        |f| process_frame(f, 0),
        vec![],
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
    );
    check_keyed(
        frame!("process-empty"),
        |f| process_frame(f, 0),
        vec![],
        Vec::<ProcessRecord<'_>>::new(),
    );
}

#[test]
fn on_timers_frames() {
    check_keyed(
        frame!("on-timers"),
        |f| on_timers_frame(f, 1),
        vec![(&b"k1"[..], vec![S(b"v")]), (&b"k2"[..], vec![None])],
        vec![
            Timer {
                key_index: 0,
                domain: TimeDomain::EventTime,
                timestamp: 10,
            },
            Timer {
                key_index: 1,
                domain: TimeDomain::ProcessingTime,
                timestamp: 1_700_000_000_000,
            },
            Timer {
                key_index: 0,
                domain: TimeDomain::ProcessingTime,
                timestamp: -1,
            },
        ],
    );
    check_keyed(
        frame!("on-timers-empty"),
        |f| on_timers_frame(f, 0),
        vec![],
        Vec::<Timer>::new(),
    );
}

#[test]
fn output_frames() {
    check_entries(
        frame!("output"),
        output_records,
        vec![
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
        ],
    );
    check_entries(frame!("output-empty"), output_records, vec![]);
}

#[test]
fn state_writes_frame() {
    check_entries(
        frame!("state-writes"),
        state_writes,
        vec![
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
        ],
    );
}

#[test]
fn timer_ops_frame() {
    let op = |kind, key_index, timestamp| TimerOp {
        kind,
        key_index,
        timestamp,
    };
    check_entries(
        frame!("timer-ops"),
        timer_ops,
        vec![
            op(TimerOpKind::RegisterEventTime, 0, 100),
            op(TimerOpKind::DeleteEventTime, 0, 100),
            op(TimerOpKind::RegisterProcessingTime, 1, 1_700_000_000_000),
            op(TimerOpKind::DeleteProcessingTime, 1, 1_700_000_000_000),
        ],
    );
}

#[test]
fn every_golden_frame_is_checked_and_described() {
    let mut found: Vec<String> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter_map(|n| n.strip_suffix(".bin").map(str::to_string))
        .collect();
    found.sort();
    let mut want: Vec<String> = FILES.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(
        found, want,
        "wit/frames/*.bin and the golden tests disagree"
    );
    let readme = std::fs::read_to_string(dir().join("README.md")).unwrap();
    for f in FILES {
        assert!(
            readme.contains(&format!("`{f}.bin`")),
            "wit/frames/README.md does not describe {f}.bin"
        );
    }
}
