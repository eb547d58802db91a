//! What guests write to the server's log: one line per message, control characters escaped
//! (a guest cannot forge a line that seems to come from elsewhere), and at most a steady rate
//! per job (a job cannot flood the server's output).

use std::sync::Mutex;
use std::time::Instant;

/// A job's allowance of log lines: a token bucket shared by its tasks.
#[derive(Debug)]
pub struct LogBudget {
    per_second: f64,
    burst: f64,
    state: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    refilled: Instant,
    dropped: u64,
}

/// What to do with one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Write it; `dropped` lines were dropped since the last one written.
    Write {
        /// Lines dropped before this one.
        dropped: u64,
    },
    /// Drop it; `first`: the first dropped since a line was written (say so once).
    Drop {
        /// The first of a run of dropped lines.
        first: bool,
    },
}

impl LogBudget {
    /// `per_second` lines a second on average, `burst` at once.
    pub fn new(per_second: u32, burst: u32) -> Self {
        LogBudget {
            per_second: f64::from(per_second),
            burst: f64::from(burst.max(1)),
            state: Mutex::new(Bucket {
                tokens: f64::from(burst.max(1)),
                refilled: Instant::now(),
                dropped: 0,
            }),
        }
    }

    /// Takes one line's allowance.
    pub fn admit(&self) -> Admit {
        self.admit_at(Instant::now())
    }

    fn admit_at(&self, now: Instant) -> Admit {
        let mut b = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let elapsed = now.saturating_duration_since(b.refilled).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.per_second).min(self.burst);
        b.refilled = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Admit::Write {
                dropped: std::mem::take(&mut b.dropped),
            }
        } else {
            b.dropped += 1;
            Admit::Drop {
                first: b.dropped == 1,
            }
        }
    }
}

impl Default for LogBudget {
    /// 100 lines a second, 1,000 at once.
    fn default() -> Self {
        LogBudget::new(100, 1_000)
    }
}

/// The longest line a guest may have written to the server's output; the rest is cut.
pub const MAX_LINE_BYTES: usize = 4096;

/// `message` on one line of at most [`MAX_LINE_BYTES`] (and a note of what was cut):
/// control characters (newlines, escape sequences) as `\n`, `\u{1b}`.
pub fn one_line(message: &str) -> std::borrow::Cow<'_, str> {
    let cut = message.len() > MAX_LINE_BYTES;
    if !cut && !message.chars().any(char::is_control) {
        return message.into();
    }
    let mut out = String::with_capacity(message.len().min(MAX_LINE_BYTES) + 32);
    for c in message.chars() {
        if out.len() >= MAX_LINE_BYTES {
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    if cut {
        out.push_str(&format!(" [{} bytes cut]", message.len() - MAX_LINE_BYTES));
    }
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_line_cannot_forge_another() {
        assert_eq!(
            one_line("ok\n2026-12-01T00:00:00Z INFO job{tenant=other}: hi\x1b[2K"),
            "ok\\n2026-12-01T00:00:00Z INFO job{tenant=other}: hi\\u{1b}[2K"
        );
        assert!(matches!(one_line("plain"), std::borrow::Cow::Borrowed(_)));
        let long = "x".repeat(1 << 20);
        let line = one_line(&long);
        assert!(line.len() < MAX_LINE_BYTES + 64, "{}", line.len());
        assert!(line.ends_with(&format!("[{} bytes cut]", (1 << 20) - MAX_LINE_BYTES)));
    }

    #[test]
    fn a_flood_is_cut_to_the_rate_and_the_drops_are_counted() {
        let budget = LogBudget::new(10, 5);
        let start = Instant::now();
        let answers: Vec<Admit> = (0..100).map(|_| budget.admit_at(start)).collect();
        let written = answers
            .iter()
            .filter(|a| matches!(a, Admit::Write { .. }))
            .count();
        assert_eq!(written, 5);
        assert_eq!(answers[5], Admit::Drop { first: true });
        assert_eq!(answers[6], Admit::Drop { first: false });
        // A second later, ten more; the first says how many were dropped.
        let later = start + Duration::from_secs(1);
        assert_eq!(budget.admit_at(later), Admit::Write { dropped: 95 });
    }
}
