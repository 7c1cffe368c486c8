//! Calendar windows in the configured IANA zone: a day resets at local
//! midnight, a month on the 1st. Times are passed in (never read from the clock
//! here) so the arithmetic is testable across DST and month edges.

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned};

/// A day window key.
pub type Day = Date;

/// A month window key: (year, month).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Month(pub i16, pub i8);

fn zoned(ts_ms: i64, tz: &TimeZone) -> Zoned {
    let ts = Timestamp::from_millisecond(ts_ms).unwrap_or(Timestamp::UNIX_EPOCH);
    ts.to_zoned(tz.clone())
}

pub fn day(ts_ms: i64, tz: &TimeZone) -> Day {
    zoned(ts_ms, tz).date()
}

pub fn month(ts_ms: i64, tz: &TimeZone) -> Month {
    let d = day(ts_ms, tz);
    Month(d.year(), d.month())
}

/// When the day window containing `ts_ms` ends (the next local midnight).
pub fn day_end(ts_ms: i64, tz: &TimeZone) -> Timestamp {
    let d = day(ts_ms, tz);
    d.tomorrow()
        .ok()
        .and_then(|t| t.to_zoned(tz.clone()).ok())
        .map(|z| z.timestamp())
        .unwrap_or(Timestamp::MAX)
}

/// When the month window containing `ts_ms` ends (local midnight on the 1st).
pub fn month_end(ts_ms: i64, tz: &TimeZone) -> Timestamp {
    let d = day(ts_ms, tz);
    d.first_of_month()
        .checked_add(jiff::Span::new().months(1))
        .ok()
        .and_then(|t| t.to_zoned(tz.clone()).ok())
        .map(|z| z.timestamp())
        .unwrap_or(Timestamp::MAX)
}

/// Human form of a window end, in the zone: `2026-11-27 00:00 Europe/Berlin`.
pub fn show(ts: Timestamp, tz: &TimeZone) -> String {
    let z = ts.to_zoned(tz.clone());
    format!(
        "{} {}",
        z.strftime("%Y-%m-%d %H:%M"),
        tz.iana_name().unwrap_or("UTC")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    fn ms(s: &str) -> i64 {
        s.parse::<Timestamp>().unwrap().as_millisecond()
    }

    #[test]
    fn utc_midnight_edge() {
        let tz = TimeZone::UTC;
        assert_eq!(day(ms("2026-11-26T23:59:59.999Z"), &tz), date(2026, 11, 26));
        assert_eq!(day(ms("2026-11-27T00:00:00Z"), &tz), date(2026, 11, 27));
        assert_eq!(
            day_end(ms("2026-11-26T12:00:00Z"), &tz),
            "2026-11-27T00:00:00Z".parse::<Timestamp>().unwrap()
        );
    }

    #[test]
    fn month_edges() {
        let tz = TimeZone::UTC;
        assert_eq!(month(ms("2026-01-31T23:59:59Z"), &tz), Month(2026, 1));
        assert_eq!(month(ms("2026-02-01T00:00:00Z"), &tz), Month(2026, 2));
        assert_eq!(month(ms("2026-12-31T23:59:59Z"), &tz), Month(2026, 12));
        assert_eq!(
            month_end(ms("2026-12-15T00:00:00Z"), &tz),
            "2027-01-01T00:00:00Z".parse::<Timestamp>().unwrap()
        );
        assert_eq!(
            month_end(ms("2028-02-29T10:00:00Z"), &tz),
            "2028-03-01T00:00:00Z".parse::<Timestamp>().unwrap()
        );
    }

    #[test]
    fn non_utc_zone_and_dst() {
        let tz = TimeZone::get("America/New_York").unwrap();
        // 03:30 UTC on Nov 27 is still Nov 26 in New York (UTC-5).
        assert_eq!(day(ms("2026-11-27T03:30:00Z"), &tz), date(2026, 11, 26));
        // The day of the spring-forward transition is 23 hours long.
        let start = ms("2026-03-08T05:00:00Z"); // local midnight, EST
        let end = day_end(start, &tz);
        assert_eq!(end.as_millisecond() - start, 23 * 3600 * 1000);
        // The fall-back day is 25 hours long.
        let start = ms("2026-11-01T04:00:00Z"); // local midnight, EDT
        let end = day_end(start, &tz);
        assert_eq!(end.as_millisecond() - start, 25 * 3600 * 1000);
        // Month boundary in local time, not UTC.
        assert_eq!(month(ms("2026-12-01T04:59:59Z"), &tz), Month(2026, 11));
        assert_eq!(month(ms("2026-12-01T05:00:00Z"), &tz), Month(2026, 12));
        let berlin = TimeZone::get("Europe/Berlin").unwrap();
        assert_eq!(day(ms("2026-11-26T23:30:00Z"), &berlin), date(2026, 11, 27));
    }
}
