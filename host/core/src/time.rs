//! Event time.

/// Milliseconds since the Unix epoch.
pub type Timestamp = i64;

/// A watermark: the assertion that no record with a timestamp at or below it will arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Watermark(pub Timestamp);

impl Watermark {
    /// Before any data: nothing is known yet.
    pub const MIN: Watermark = Watermark(i64::MIN);
    /// End of input: every event-time timer fires.
    pub const MAX: Watermark = Watermark(i64::MAX);

    /// The watermark as a timestamp.
    pub fn timestamp(self) -> Timestamp {
        self.0
    }
}

impl std::fmt::Display for Watermark {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Watermark::MIN => f.write_str("-inf"),
            Watermark::MAX => f.write_str("+inf"),
            Watermark(ts) => write!(f, "{ts}"),
        }
    }
}

/// Wall-clock time (processing time), in ms since the epoch; 0 if the clock is before it.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
