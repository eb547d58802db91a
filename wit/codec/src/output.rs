//! The `output` frame: records a chain emits (`batch-result.output`), which is also how the
//! host moves records between its tasks, so a guest's output is forwarded without
//! re-encoding.

use alloc::vec::Vec;

use crate::write::{put_i64, put_opt, put_u32, Bytes};
use crate::{Entries, Entry, FrameError, Reader, NO_TS};

/// One record of an `output` frame:
/// `u32 edge, i64 timestamp | NO_TS, u32 key_len | NONE32, key, u32 len, value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputRecord<'a> {
    /// Index of the plan edge the record travels on.
    pub edge: u32,
    /// Event timestamp.
    pub timestamp: Option<i64>,
    /// Key bytes, on keyed edges.
    pub key: Option<&'a [u8]>,
    /// The record's encoded value.
    pub value: &'a [u8],
}

impl<'a> Entry<'a> for OutputRecord<'a> {
    const FRAME: &'static str = "output";

    #[inline]
    fn read(r: &mut Reader<'a>) -> Result<Self, FrameError> {
        let edge = r.u32()?;
        let ts = r.i64()?;
        let key = r.opt_bytes()?;
        let value = r.len_bytes()?;
        Ok(OutputRecord {
            edge,
            timestamp: Some(ts).filter(|&t| t != NO_TS),
            key,
            value,
        })
    }

    #[inline]
    fn write(&self, out: &mut Vec<u8>) {
        write_output_record(out, self.edge, self.timestamp, self.key, self.value);
    }
}

/// Appends one `output` record whose key and value may be encoded in place
/// ([`crate::WriteWith`]).
#[inline]
pub fn write_output_record<K: Bytes, V: Bytes>(
    out: &mut Vec<u8>,
    edge: u32,
    timestamp: Option<i64>,
    key: Option<K>,
    value: V,
) {
    put_u32(out, edge);
    put_i64(out, timestamp.unwrap_or(NO_TS));
    put_opt(out, key);
    value.put(out);
}

/// Reads an `output` frame.
#[inline]
pub fn output_records(frame: &[u8]) -> Entries<'_, OutputRecord<'_>> {
    Entries::new(frame)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::WriteWith;

    #[test]
    fn every_cut_of_a_record_is_an_error_not_a_panic() {
        let mut frame = Vec::new();
        OutputRecord {
            edge: 1,
            timestamp: Some(1),
            key: Some(b"key"),
            value: b"value",
        }
        .write(&mut frame);
        for cut in 1..frame.len() {
            let last = output_records(&frame[..cut]).last().unwrap();
            assert!(last.is_err(), "cut at {cut}");
        }
        assert_eq!(output_records(&frame).count(), 1);
        assert_eq!(output_records(&[]).count(), 0);
    }

    #[test]
    fn a_record_written_in_place_has_the_same_bytes() {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        write_output_record(
            &mut a,
            7,
            None,
            Some(WriteWith(|o: &mut Vec<u8>| o.extend_from_slice(b"kk"))),
            WriteWith(|o: &mut Vec<u8>| o.extend_from_slice(b"value")),
        );
        OutputRecord {
            edge: 7,
            timestamp: None,
            key: Some(b"kk"),
            value: b"value",
        }
        .write(&mut b);
        assert_eq!(a, b);
    }

    #[test]
    fn a_value_cannot_be_absent() {
        let mut frame = Vec::new();
        write_output_record(&mut frame, 0, None, None::<&[u8]>, &b""[..]);
        let n = frame.len();
        frame[n - 4..].copy_from_slice(&crate::NONE32.to_le_bytes());
        let e = output_records(&frame).next().unwrap().unwrap_err();
        assert_eq!((e.reason, e.offset), ("missing bytes", 16));
    }
}
