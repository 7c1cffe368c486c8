//! Clock skew against the upstream. An authorization's `validBefore` comes from
//! this machine's clock, but the facilitator checks it against chain time: a clock
//! minutes off signs payments that are already expired (or valid far longer than
//! intended), and each refused one would still drain the caps until it expires.
//! The upstream's `Date` header on the unpaid 402 gives an estimate (1 s
//! resolution) at no extra cost.

use std::sync::atomic::{AtomicI64, Ordering};

/// From this much skew on, x402d warns (HTTP dates have 1 s resolution).
pub const WARN_SECS: i64 = 5;
/// Never sign with more skew than this, whatever the validity window.
pub const MAX_SECS: i64 = 60;

/// Seconds the upstream's clock is ahead of ours (negative: ours is ahead), from
/// an HTTP `Date` value received at `now_ms` on our clock.
pub fn skew_secs(date: &[u8], now_ms: i64) -> Option<i64> {
    let text = std::str::from_utf8(date).ok()?;
    let theirs = jiff::fmt::rfc2822::DateTimeParser::new()
        .parse_timestamp(text.trim())
        .ok()?;
    // Their clock truncates to whole seconds: compare against ours truncated too.
    Some(theirs.as_second() - now_ms.div_euclid(1000))
}

/// The largest skew accepted for a payment valid for `timeout_secs`: half the
/// window (a payment must stay valid long enough to settle), at most `MAX_SECS`,
/// and never below the warning level (the estimate itself is ±1 s).
pub fn limit_secs(timeout_secs: u64) -> i64 {
    let half = i64::try_from(timeout_secs / 2).unwrap_or(i64::MAX);
    half.clamp(WARN_SECS, MAX_SECS)
}

/// The last estimate, for `status` and metrics.
#[derive(Debug, Default)]
pub struct LastSkew {
    secs: AtomicI64,
    /// When it was measured (ms on our clock); 0 = never.
    at_ms: AtomicI64,
}

impl LastSkew {
    pub fn set(&self, secs: i64, now_ms: i64) {
        self.secs.store(secs, Ordering::Relaxed);
        self.at_ms.store(now_ms.max(1), Ordering::Relaxed);
    }

    /// Seconds the upstream's clock is ahead of ours, if ever measured.
    pub fn get(&self) -> Option<i64> {
        (self.at_ms.load(Ordering::Relaxed) != 0).then(|| self.secs.load(Ordering::Relaxed))
    }
}

/// What to tell the user about a skew, in words.
pub fn describe(secs: i64) -> String {
    if secs > 0 {
        format!("this machine's clock is {secs} s behind the upstream's")
    } else {
        format!(
            "this machine's clock is {} s ahead of the upstream's",
            -secs
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_http_dates() {
        // 2026-12-01T22:07:28Z
        let now = 1_796_162_848_000;
        assert_eq!(skew_secs(b"Tue, 01 Dec 2026 22:07:28 GMT", now), Some(0));
        assert_eq!(
            skew_secs(b"Tue, 01 Dec 2026 22:07:28 GMT", now + 999),
            Some(0)
        );
        assert_eq!(skew_secs(b"Tue, 01 Dec 2026 22:17:28 GMT", now), Some(600));
        assert_eq!(skew_secs(b"Tue, 01 Dec 2026 21:57:28 GMT", now), Some(-600));
        assert_eq!(skew_secs(b"yesterday", now), None);
        assert_eq!(skew_secs(b"\xff", now), None);
    }

    #[test]
    fn limits() {
        assert_eq!(limit_secs(300), 60);
        assert_eq!(limit_secs(60), 30);
        assert_eq!(limit_secs(4), WARN_SECS);
        assert_eq!(limit_secs(u64::MAX), 60);
        let l = LastSkew::default();
        assert_eq!(l.get(), None);
        l.set(-3, 5);
        assert_eq!(l.get(), Some(-3));
    }
}
