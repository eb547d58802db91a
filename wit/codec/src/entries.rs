//! Frames as sequences of entries: each entry type knows its own layout, both ways.

use alloc::vec::Vec;
use core::marker::PhantomData;

use crate::{FrameError, Reader};

/// One entry of a frame. Its implementation is the entry's layout: [`Entry::read`] and
/// [`Entry::write`] sit side by side, and nothing else in weir reads or writes the bytes.
pub trait Entry<'a>: Sized {
    /// The frame this entry belongs to, as named in errors.
    const FRAME: &'static str;

    /// Reads one entry (the reader is positioned at its first byte).
    fn read(r: &mut Reader<'a>) -> Result<Self, FrameError>;

    /// Appends the entry to `out`.
    fn write(&self, out: &mut Vec<u8>);
}

/// The entries of a frame that holds entries back to back until its end (`output`,
/// `state-writes`, `timer-ops`). Yields an error once and then stops if the frame is
/// malformed.
#[derive(Debug, Clone)]
pub struct Entries<'a, E> {
    r: Reader<'a>,
    failed: bool,
    entry: PhantomData<fn() -> E>,
}

impl<'a, E: Entry<'a>> Entries<'a, E> {
    /// Reads the entries of `frame`.
    #[inline]
    pub fn new(frame: &'a [u8]) -> Self {
        Entries {
            r: Reader::new(frame, E::FRAME),
            failed: false,
            entry: PhantomData,
        }
    }
}

impl<'a, E: Entry<'a>> Iterator for Entries<'a, E> {
    type Item = Result<E, FrameError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.r.is_empty() {
            return None;
        }
        let e = E::read(&mut self.r);
        self.failed = e.is_err();
        Some(e)
    }
}

impl<'a, E: Entry<'a>> core::iter::FusedIterator for Entries<'a, E> {}

/// The `u32`-counted entries that follow a key table (`process`, `on-timers`). Yields exactly
/// that many entries; bytes left after them are an error. Stops after the first error.
#[derive(Debug, Clone)]
pub struct Counted<'a, E> {
    r: Reader<'a>,
    remaining: u32,
    failed: bool,
    entry: PhantomData<fn() -> E>,
}

impl<'a, E: Entry<'a>> Counted<'a, E> {
    /// Reads the count at the reader's position; the entries follow it.
    #[inline]
    pub(crate) fn read(mut r: Reader<'a>) -> Result<Self, FrameError> {
        let remaining = r.u32()?;
        Ok(Counted {
            r,
            remaining,
            failed: false,
            entry: PhantomData,
        })
    }

    /// Entries not read yet.
    #[inline]
    pub fn remaining(&self) -> u32 {
        self.remaining
    }
}

impl<'a, E: Entry<'a>> Iterator for Counted<'a, E> {
    type Item = Result<E, FrameError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let e = if self.remaining > 0 {
            self.remaining -= 1;
            E::read(&mut self.r)
        } else if self.r.is_empty() {
            return None;
        } else {
            Err(self.r.error("bytes after the last entry"))
        };
        self.failed = e.is_err();
        Some(e)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.remaining as usize + 1))
    }
}

impl<'a, E: Entry<'a>> core::iter::FusedIterator for Counted<'a, E> {}
