//! The frames the host sends into a chain, `process` and `on-timers`: a key table with the
//! prefetched value state of every key, then records or timers that refer to keys by index.
//!
//! ```text
//! u32 key_count
//! key_count × { u32 len, key, values_per_key × { u32 len | NONE32, value } }
//! u32 count
//! count × ProcessRecord (process) or Timer (on-timers)
//! ```
//!
//! `values_per_key` is not in the frame: it is the number of value states of the chain's head
//! node (both sides know it from the plan), in declaration order.

use alloc::vec::Vec;
use core::marker::PhantomData;

use crate::write::{put_i64, put_opt, put_u32};
use crate::{
    Counted, Entry, FrameError, Reader, DOMAIN_EVENT_TIME, DOMAIN_PROCESSING_TIME, NONE32, NO_TS,
};

/// A frame that starts with a key table: [`ProcessFrame`] or [`TimersFrame`].
///
/// Iterate it for the key table's entries, then call [`KeyedFrame::entries`] for the records
/// or timers after it. Everything borrows from the frame.
#[derive(Debug, Clone)]
pub struct KeyedFrame<'a, E> {
    r: Reader<'a>,
    key_count: u32,
    remaining: u32,
    values_per_key: usize,
    error: Option<FrameError>,
    entry: PhantomData<fn() -> E>,
}

/// A `process` frame: key table, then records.
pub type ProcessFrame<'a> = KeyedFrame<'a, ProcessRecord<'a>>;

/// An `on-timers` frame: key table, then timers.
pub type TimersFrame<'a> = KeyedFrame<'a, Timer>;

/// Reads a `process` frame whose keys each carry `values_per_key` prefetched values.
#[inline]
pub fn process_frame(frame: &[u8], values_per_key: usize) -> Result<ProcessFrame<'_>, FrameError> {
    KeyedFrame::new(frame, values_per_key)
}

/// Reads an `on-timers` frame whose keys each carry `values_per_key` prefetched values.
#[inline]
pub fn on_timers_frame(frame: &[u8], values_per_key: usize) -> Result<TimersFrame<'_>, FrameError> {
    KeyedFrame::new(frame, values_per_key)
}

impl<'a, E: Entry<'a>> KeyedFrame<'a, E> {
    /// Reads the key count at the start of `frame`.
    #[inline]
    pub fn new(frame: &'a [u8], values_per_key: usize) -> Result<Self, FrameError> {
        let mut r = Reader::new(frame, E::FRAME);
        let key_count = r.u32()?;
        Ok(KeyedFrame {
            r,
            key_count,
            remaining: key_count,
            values_per_key,
            error: None,
            entry: PhantomData,
        })
    }

    /// Number of keys in the table (as the frame says; each is checked when read).
    #[inline]
    pub fn key_count(&self) -> u32 {
        self.key_count
    }

    /// The records or timers after the key table (skipping any key not read yet).
    pub fn entries(mut self) -> Result<Counted<'a, E>, FrameError> {
        for k in self.by_ref() {
            k?;
        }
        match self.error {
            Some(e) => Err(e),
            None => Counted::read(self.r),
        }
    }
}

impl<'a, E: Entry<'a>> Iterator for KeyedFrame<'a, E> {
    type Item = Result<KeyEntry<'a>, FrameError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.error.is_some() || self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let e = KeyEntry::read(&mut self.r, self.values_per_key);
        if let Err(err) = &e {
            self.error = Some(err.clone());
        }
        Some(e)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.remaining as usize))
    }
}

/// One key of a key table with its prefetched values.
#[derive(Debug, Clone)]
pub struct KeyEntry<'a> {
    /// The key's bytes.
    pub key: &'a [u8],
    /// The key's value of each value state of the head node, in declaration order.
    pub values: Values<'a>,
}

impl<'a> KeyEntry<'a> {
    #[inline]
    fn read(r: &mut Reader<'a>, values_per_key: usize) -> Result<Self, FrameError> {
        let key = r.len_bytes()?;
        let start = r.clone();
        for _ in 0..values_per_key {
            r.opt_bytes()?;
        }
        Ok(KeyEntry {
            key,
            values: Values {
                r: start,
                remaining: values_per_key,
            },
        })
    }
}

/// The prefetched values of one key (already checked against the frame's bounds):
/// `None` where the state holds nothing.
#[derive(Debug, Clone)]
pub struct Values<'a> {
    r: Reader<'a>,
    remaining: usize,
}

impl<'a> Iterator for Values<'a> {
    type Item = Option<&'a [u8]>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        // Checked when the key was read, so this cannot fail.
        self.r.opt_bytes().ok()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for Values<'_> {}

/// Starts a key-table entry: appends the key. Its values follow, one [`write_value`] per
/// value state of the head node, in declaration order.
#[inline]
pub fn write_key(table: &mut Vec<u8>, key: &[u8]) {
    put_opt(table, Some(key));
}

/// Appends one prefetched value to the key-table entry being written (`None`: the state
/// holds nothing for the key).
#[inline]
pub fn write_value(table: &mut Vec<u8>, value: Option<&[u8]>) {
    put_opt(table, value);
}

/// Appends a `process` or `on-timers` frame to `out`, from a key table written with
/// [`write_key`] and [`write_value`] and a body of `count` entries written with
/// [`Entry::write`]. (Kept apart, keys and entries can be added in any order.)
#[inline]
pub fn write_keyed_frame(out: &mut Vec<u8>, key_count: u32, table: &[u8], count: u32, body: &[u8]) {
    out.reserve(8 + table.len() + body.len());
    put_u32(out, key_count);
    out.extend_from_slice(table);
    put_u32(out, count);
    out.extend_from_slice(body);
}

/// Appends a `process` frame with an empty key table, from the bytes of an `output` frame of
/// `count` records that all have no key. For such records the two layouts are the same bytes
/// (`key_len` = NONE32 reads as `key_index` = NONE32), so an unkeyed batch goes into the guest
/// with one copy. The caller guarantees no record has a key.
#[inline]
pub fn write_unkeyed_process_frame(out: &mut Vec<u8>, count: u32, unkeyed_output: &[u8]) {
    write_keyed_frame(out, 0, &[], count, unkeyed_output);
}

/// One record of a `process` frame:
/// `u32 edge, i64 timestamp | NO_TS, u32 key_index | NONE32, u32 len, value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessRecord<'a> {
    /// Index of the plan edge the record arrived on.
    pub edge: u32,
    /// Event timestamp.
    pub timestamp: Option<i64>,
    /// Index of the record's key in the frame's key table; `None` on unkeyed edges.
    pub key_index: Option<u32>,
    /// The record's encoded value.
    pub value: &'a [u8],
}

impl<'a> Entry<'a> for ProcessRecord<'a> {
    const FRAME: &'static str = "process";

    #[inline]
    fn read(r: &mut Reader<'a>) -> Result<Self, FrameError> {
        let edge = r.u32()?;
        let ts = r.i64()?;
        let key_index = r.opt_u32()?;
        let value = r.len_bytes()?;
        Ok(ProcessRecord {
            edge,
            timestamp: Some(ts).filter(|&t| t != NO_TS),
            key_index,
            value,
        })
    }

    #[inline]
    fn write(&self, out: &mut Vec<u8>) {
        out.reserve(20 + self.value.len());
        put_u32(out, self.edge);
        put_i64(out, self.timestamp.unwrap_or(NO_TS));
        put_u32(out, self.key_index.unwrap_or(NONE32));
        put_opt(out, Some(self.value));
    }
}

/// Which clock a timer follows: the domain byte of an `on-timers` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum TimeDomain {
    /// Fires when the watermark passes it ([`DOMAIN_EVENT_TIME`]).
    EventTime = DOMAIN_EVENT_TIME,
    /// Fires when the host's clock passes it ([`DOMAIN_PROCESSING_TIME`]).
    ProcessingTime = DOMAIN_PROCESSING_TIME,
}

impl TimeDomain {
    /// The domain of a domain byte; `None` for any byte but 0 and 1.
    #[inline]
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            DOMAIN_EVENT_TIME => Some(TimeDomain::EventTime),
            DOMAIN_PROCESSING_TIME => Some(TimeDomain::ProcessingTime),
            _ => None,
        }
    }

    /// The domain byte.
    #[inline]
    pub fn byte(self) -> u8 {
        self as u8
    }
}

/// One timer of an `on-timers` frame: `u32 key_index, u8 domain, i64 timestamp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timer {
    /// Index of the timer's key in the frame's key table.
    pub key_index: u32,
    /// Its clock.
    pub domain: TimeDomain,
    /// When it is due.
    pub timestamp: i64,
}

impl Entry<'_> for Timer {
    const FRAME: &'static str = "on-timers";

    #[inline]
    fn read(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        let key_index = r.u32()?;
        let at = r.position();
        let domain =
            TimeDomain::from_byte(r.u8()?).ok_or_else(|| r.error_at(at, "unknown timer domain"))?;
        Ok(Timer {
            key_index,
            domain,
            timestamp: r.i64()?,
        })
    }

    #[inline]
    fn write(&self, out: &mut Vec<u8>) {
        put_u32(out, self.key_index);
        out.push(self.domain.byte());
        put_i64(out, self.timestamp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{output_records, OutputRecord};

    fn frame(values: &[&[Option<&[u8]>]], body: &[ProcessRecord<'_>]) -> Vec<u8> {
        let (mut table, mut entries, mut out) = (Vec::new(), Vec::new(), Vec::new());
        for (i, vs) in values.iter().enumerate() {
            write_key(&mut table, &[b'a' + i as u8]);
            for v in vs.iter() {
                write_value(&mut table, *v);
            }
        }
        for r in body {
            r.write(&mut entries);
        }
        write_keyed_frame(
            &mut out,
            values.len() as u32,
            &table,
            body.len() as u32,
            &entries,
        );
        out
    }

    #[test]
    fn keys_can_be_skipped_on_the_way_to_the_records() {
        let rec = ProcessRecord {
            edge: 2,
            timestamp: None,
            key_index: Some(1),
            value: b"v",
        };
        let f = frame(&[&[Some(&b"1"[..]), None], &[None, Some(&b""[..])]], &[rec]);
        let mut keys = process_frame(&f, 2).unwrap();
        assert_eq!(keys.key_count(), 2);
        let first = keys.next().unwrap().unwrap();
        assert_eq!(first.key, b"a");
        assert_eq!(first.values.len(), 2);
        let records: Vec<_> = keys.entries().unwrap().collect();
        assert_eq!(records, [Ok(rec)]);
    }

    #[test]
    fn a_keyed_frame_refuses_trailing_bytes_and_short_key_tables() {
        let mut f = frame(&[&[None]], &[]);
        assert_eq!(process_frame(&f, 1).unwrap().entries().unwrap().count(), 0);
        f.push(0);
        let e = process_frame(&f, 1)
            .unwrap()
            .entries()
            .unwrap()
            .next()
            .unwrap()
            .unwrap_err();
        assert_eq!(e.reason, "bytes after the last entry");
        // Read with one value state more than the host wrote: the table runs into the count.
        let f = frame(&[&[None]], &[]);
        assert!(process_frame(&f, 3).unwrap().entries().is_err());
    }

    #[test]
    fn a_timer_with_an_unknown_domain_is_refused() {
        let mut body = Vec::new();
        Timer {
            key_index: 0,
            domain: TimeDomain::ProcessingTime,
            timestamp: 9,
        }
        .write(&mut body);
        body[4] = 2;
        let mut f = Vec::new();
        write_keyed_frame(&mut f, 0, &[], 1, &body);
        let e = on_timers_frame(&f, 0)
            .unwrap()
            .entries()
            .unwrap()
            .next()
            .unwrap()
            .unwrap_err();
        assert_eq!(
            e,
            FrameError {
                what: "on-timers",
                reason: "unknown timer domain",
                offset: 12
            }
        );
    }

    #[test]
    fn unkeyed_output_records_are_process_records() {
        let mut output = Vec::new();
        let rec = OutputRecord {
            edge: 4,
            timestamp: Some(-3),
            key: None,
            value: b"xyz",
        };
        rec.write(&mut output);
        rec.write(&mut output);
        let mut f = Vec::new();
        write_unkeyed_process_frame(&mut f, 2, &output);
        let want = ProcessRecord {
            edge: 4,
            timestamp: Some(-3),
            key_index: None,
            value: b"xyz",
        };
        let got: Vec<_> = process_frame(&f, 0).unwrap().entries().unwrap().collect();
        assert_eq!(got, [Ok(want), Ok(want)]);
        assert_eq!(output_records(&output).count(), 2);
    }
}
