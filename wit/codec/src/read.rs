//! The bounds-checked reader every decoder is built on.

use crate::NONE32;

/// A frame that does not follow its layout. Frames cross a trust boundary in both
/// directions, so a reader reports this instead of panicking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    /// Which frame (`"process"`, `"on-timers"`, `"output"`, `"state-writes"`, `"timer-ops"`).
    pub what: &'static str,
    /// What was wrong.
    pub reason: &'static str,
    /// Byte offset in the frame where it went wrong.
    pub offset: usize,
}

impl core::fmt::Display for FrameError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "malformed {} frame: {} at byte {}",
            self.what, self.reason, self.offset
        )
    }
}

impl core::error::Error for FrameError {}

/// A bounds-checked little-endian reader over one frame. Everything it returns borrows from
/// the frame.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    /// Reads `buf`, naming it `what` in errors.
    #[inline]
    pub fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader { buf, pos: 0, what }
    }

    /// Whether everything was read.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// Current offset.
    #[inline]
    pub fn position(&self) -> usize {
        self.pos
    }

    /// An error at `offset`, naming this reader's frame.
    #[inline]
    pub fn error_at(&self, offset: usize, reason: &'static str) -> FrameError {
        FrameError {
            what: self.what,
            reason,
            offset,
        }
    }

    /// An error at the current offset.
    #[inline]
    pub fn error(&self, reason: &'static str) -> FrameError {
        self.error_at(self.pos, reason)
    }

    /// The next `n` bytes.
    #[inline]
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        match self.buf.get(self.pos..).and_then(|rest| rest.get(..n)) {
            Some(s) => {
                self.pos += n;
                Ok(s)
            }
            None => Err(self.error("truncated")),
        }
    }

    /// The next `N` bytes as an array.
    #[inline]
    fn array<const N: usize>(&mut self) -> Result<[u8; N], FrameError> {
        match self.bytes(N)?.try_into() {
            Ok(a) => Ok(a),
            Err(_) => Err(self.error("truncated")),
        }
    }

    /// A `u8`.
    #[inline]
    pub fn u8(&mut self) -> Result<u8, FrameError> {
        Ok(self.array::<1>()?[0])
    }

    /// A `u32`.
    #[inline]
    pub fn u32(&mut self) -> Result<u32, FrameError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    /// An `i64`.
    #[inline]
    pub fn i64(&mut self) -> Result<i64, FrameError> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    /// A `u32` that may be [`NONE32`].
    #[inline]
    pub fn opt_u32(&mut self) -> Result<Option<u32>, FrameError> {
        Ok(Some(self.u32()?).filter(|&v| v != NONE32))
    }

    /// A `u32` length followed by that many bytes, or `None` for [`NONE32`].
    #[inline]
    pub fn opt_bytes(&mut self) -> Result<Option<&'a [u8]>, FrameError> {
        match self.u32()? {
            NONE32 => Ok(None),
            n => self.bytes(n as usize).map(Some),
        }
    }

    /// A `u32` length followed by that many bytes; [`NONE32`] is an error here.
    #[inline]
    pub fn len_bytes(&mut self) -> Result<&'a [u8], FrameError> {
        match self.opt_bytes()? {
            Some(b) => Ok(b),
            None => Err(self.error_at(self.pos - 4, "missing bytes")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_little_endian_and_refuses_to_overrun() {
        let buf = [
            1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, b'h', b'i', 7,
        ];
        let mut r = Reader::new(&buf, "test");
        assert_eq!(r.u32(), Ok(1));
        assert_eq!(r.opt_bytes(), Ok(None));
        assert_eq!(r.len_bytes(), Ok(&b"hi"[..]));
        assert_eq!(r.u8(), Ok(7));
        assert!(r.is_empty());
        assert_eq!(
            r.u8(),
            Err(FrameError {
                what: "test",
                reason: "truncated",
                offset: 15
            })
        );
        let mut r = Reader::new(&[0xff, 0xff, 0xff, 0xff], "test");
        assert_eq!(r.len_bytes().unwrap_err().reason, "missing bytes");
        assert_eq!(r.position(), 4);
        let mut r = Reader::new(&[3, 0, 0, 0, 1, 2], "test");
        assert_eq!(r.opt_bytes().unwrap_err().offset, 4);
    }
}
