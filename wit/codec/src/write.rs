//! Primitives the writers are built on: they append to a caller's buffer.

use alloc::vec::Vec;

use crate::NONE32;

#[inline]
pub(crate) fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

#[inline]
pub(crate) fn put_i64(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// A `u32` length followed by the bytes, or [`NONE32`] for `None`.
#[inline]
pub(crate) fn put_opt<B: Bytes>(out: &mut Vec<u8>, v: Option<B>) {
    match v {
        Some(b) => b.put(out),
        None => put_u32(out, NONE32),
    }
}

/// A byte string a writer puts into a frame with its `u32` length in front: a slice at hand,
/// or a [`WriteWith`] closure that encodes the bytes straight into the frame.
pub trait Bytes {
    /// Appends the length and the bytes.
    fn put(self, out: &mut Vec<u8>);
}

impl Bytes for &[u8] {
    #[inline]
    fn put(self, out: &mut Vec<u8>) {
        put_u32(out, self.len() as u32);
        out.extend_from_slice(self);
    }
}

/// Bytes appended by a closure, for a record encoded in place: the length is reserved, the
/// closure appends, and the length is patched in afterwards (no intermediate buffer).
#[derive(Debug, Clone, Copy)]
pub struct WriteWith<F>(pub F);

impl<F: FnOnce(&mut Vec<u8>)> Bytes for WriteWith<F> {
    #[inline]
    fn put(self, out: &mut Vec<u8>) {
        let at = out.len();
        out.extend_from_slice(&[0; 4]);
        (self.0)(out);
        let len = (out.len() - at - 4) as u32;
        out[at..at + 4].copy_from_slice(&len.to_le_bytes());
    }
}
