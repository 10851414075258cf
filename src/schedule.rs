//! dcmSchedule windows (dcm4chee's grammar).
//!
//! dcm4chee-arc restricts when an exporter or a queue works with the
//! multi-valued `dcmSchedule` attribute; each value is a `ScheduleExpression`:
//!
//! ```text
//! hour=<spec> dayOfWeek=<spec>
//! ```
//!
//! - the two keys are separated by whitespace, either may be missing
//!   (missing means `*`), each may appear at most once, and they are
//!   case-sensitive (exactly `hour` and `dayOfWeek`);
//! - `<spec>` is `*` or a comma list of items, each `N` or `A-B`; ranges are
//!   inclusive and wrap around: `hour=18-6` is 18:00 to 06:59,
//!   `dayOfWeek=5-1` is Friday, Saturday, Sunday, Monday;
//! - hours are 0..=23, days of the week 0..=6 with 0 = Sunday;
//! - several values on one entry are OR-ed;
//! - times are wall-clock times in a configurable time zone.
//!
//! A [`Schedule`] is the OR of the values of one entry; no values means
//! "always open". Every query takes the current instant as an argument (an
//! injected clock), in whatever [`chrono::TimeZone`] the schedule applies to.
//!
//! Unlike dcm4chee's `ScheduleExpression.ceil`, which for `hour=8
//! dayOfWeek=1` at Monday 10:00 returns a time outside the window,
//! [`Schedule::next_open`] returns the first instant that really is inside
//! it (the next Monday 08:00). It walks forward from `now` one local hour at
//! a time and stops at the UTC-offset changes too, so a local hour skipped
//! by a spring-forward gap is skipped, a repeated fall-back hour opens at its
//! first occurrence, and an hour whose `HH:00` falls into a gap but whose
//! rest exists (Lord Howe's half-hour shift, Gaza's 00:01 -> 01:01) opens
//! where the gap ends instead of being skipped.
//!
//! Any text is either an error naming the value or a valid window: values
//! are bounded in length ([`MAX_SCHEDULE_VALUE_LEN`]) and number
//! ([`MAX_SCHEDULE_VALUES`]), numbers are range-checked before any shift,
//! and the walk uses checked time arithmetic.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, NaiveDateTime, Offset, TimeDelta, TimeZone, Timelike};

const ALL_HOURS: u32 = (1 << 24) - 1;
const ALL_DAYS: u8 = (1 << 7) - 1;

/// How far [`Schedule::next_open`] and [`Schedule::next_close`] look ahead.
///
/// Every (day of week, hour) cell recurs within 7 days; if its occurrence is
/// swallowed by a DST gap the next one is 7 days later still, so 15 days
/// cover even that (e.g. `hour=2 dayOfWeek=0` in Europe/Vienna seen from the
/// Sunday a week before the spring-forward Sunday).
const HORIZON_DAYS: i64 = 15;

/// Upper bound on walk steps: one per local hour plus one per offset change,
/// with plenty of slack; guards against a pathological `TimeZone` impl.
const MAX_STEPS: usize = 4 * 24 * HORIZON_DAYS as usize;

/// Longest `dcmSchedule` value accepted, in bytes. The longest meaningful
/// value (every hour and day listed one by one) is about 100 bytes; the
/// bound keeps error messages, which repeat the value, short.
pub const MAX_SCHEDULE_VALUE_LEN: usize = 256;

/// Most `dcmSchedule` values on one entry: every one is evaluated on each
/// step of [`Schedule::next_open`], and 168 values (one per hour of the
/// week) already express any window.
pub const MAX_SCHEDULE_VALUES: usize = 168;

/// One `dcmSchedule` value: a set of hours of the day and days of the week.
///
/// A local wall time is inside if its hour is in `hours` and its weekday is
/// in `days`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ScheduleExpr {
    /// Bit `h` set: hour `h` (0..=23) is inside.
    hours: u32,
    /// Bit `d` set: day `d` (0 = Sunday ..= 6 = Saturday) is inside.
    days: u8,
}

/// A `dcmSchedule` value that does not follow dcm4chee's grammar.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{value:?}: {reason}")]
pub struct ScheduleError {
    /// The whole value as configured.
    pub value: String,
    /// What is wrong with it.
    pub reason: String,
}

impl ScheduleExpr {
    /// Whether the local wall time `t` is inside, by its hour and weekday.
    pub fn contains_local(&self, t: NaiveDateTime) -> bool {
        let day = t.weekday().num_days_from_sunday();
        self.hours & (1 << t.hour()) != 0 && self.days & (1 << day) != 0
    }

    /// The hours inside, bit `h` for hour `h` (24 bits).
    pub fn hours_mask(&self) -> u32 {
        self.hours
    }

    /// The days inside, bit `d` for day `d`, bit 0 = Sunday (7 bits).
    pub fn days_mask(&self) -> u8 {
        self.days
    }
}

impl FromStr for ScheduleExpr {
    type Err = ScheduleError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        if value.len() > MAX_SCHEDULE_VALUE_LEN {
            // Only the start of the value goes into the message.
            let end = value
                .char_indices()
                .map(|(i, _)| i)
                .take_while(|i| *i <= 40)
                .last()
                .unwrap_or(0);
            return Err(ScheduleError {
                value: format!("{}...", &value[..end]),
                reason: format!(
                    "{} bytes long; a schedule has at most {MAX_SCHEDULE_VALUE_LEN}",
                    value.len()
                ),
            });
        }
        let err = |reason: String| ScheduleError {
            value: value.to_owned(),
            reason,
        };
        let mut hours = None;
        let mut days = None;
        for token in value.split_whitespace() {
            let Some((key, spec)) = token.split_once('=') else {
                return Err(err(format!(
                    "expected `hour=<spec>` or `dayOfWeek=<spec>`, found {token:?}"
                )));
            };
            let (slot, max) = match key {
                "hour" => (&mut hours, 23),
                "dayOfWeek" => (&mut days, 6),
                _ => {
                    return Err(err(format!(
                        "unknown key {key:?} (expected `hour` or `dayOfWeek`)"
                    )));
                }
            };
            if slot.is_some() {
                return Err(err(format!("`{key}` given more than once")));
            }
            *slot = Some(parse_spec(spec, max).map_err(|r| err(format!("{key}: {r}")))?);
        }
        if hours.is_none() && days.is_none() {
            return Err(err("empty schedule".to_owned()));
        }
        Ok(ScheduleExpr {
            hours: hours.unwrap_or(ALL_HOURS as u64) as u32,
            days: days.unwrap_or(ALL_DAYS as u64) as u8,
        })
    }
}

/// Parses `*` or a comma list of `N` / `A-B` (inclusive, wrapping) items with
/// numbers in `0..=max` into a bit mask.
fn parse_spec(spec: &str, max: u32) -> Result<u64, SpecError> {
    let all = (1u64 << (max + 1)) - 1;
    if spec == "*" {
        return Ok(all);
    }
    if spec.is_empty() {
        return Err(SpecError::Empty);
    }
    let mut mask = 0u64;
    for item in spec.split(',') {
        if item.is_empty() {
            return Err(SpecError::EmptyItem(spec.to_owned()));
        }
        let (from, to) = match item.split_once('-') {
            Some((a, b)) => (parse_num(a, max)?, parse_num(b, max)?),
            None => {
                let n = parse_num(item, max)?;
                (n, n)
            }
        };
        if from <= to {
            mask |= ((1u64 << (to + 1)) - 1) & !((1u64 << from) - 1);
        } else {
            // wraps around: from..=max and 0..=to
            mask |= (all & !((1u64 << from) - 1)) | ((1u64 << (to + 1)) - 1);
        }
    }
    Ok(mask)
}

fn parse_num(s: &str, max: u32) -> Result<u32, SpecError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SpecError::NotANumber(s.to_owned()));
    }
    match s.parse::<u32>() {
        Ok(n) if n <= max => Ok(n),
        _ => Err(SpecError::OutOfRange {
            number: s.to_owned(),
            max,
        }),
    }
}

/// What is wrong with the value of `hour=` or `dayOfWeek=`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum SpecError {
    #[error("empty value (use `*` for any)")]
    Empty,
    #[error("empty item in {0:?}")]
    EmptyItem(String),
    #[error("{0:?} is not a number")]
    NotANumber(String),
    #[error("{number} is out of range 0..={max}")]
    OutOfRange { number: String, max: u32 },
}

/// Writes `mask` (bits `0..=max`) as a spec: `*`, or maximal runs, a run
/// through `max` and `0` written as one wrapping range.
fn fmt_spec(f: &mut fmt::Formatter<'_>, mask: u64, max: u32) -> fmt::Result {
    let all = (1u64 << (max + 1)) - 1;
    if mask & all == all {
        return f.write_str("*");
    }
    let mut runs: Vec<(u32, u32)> = Vec::new();
    for n in 0..=max {
        if mask & (1 << n) == 0 {
            continue;
        }
        match runs.last_mut() {
            Some((_, end)) if *end + 1 == n => *end = n,
            _ => runs.push((n, n)),
        }
    }
    if runs.len() > 1 && runs[0].0 == 0 && runs[runs.len() - 1].1 == max {
        let (_, end) = runs.remove(0);
        runs.last_mut().expect("more than one run").1 = end;
    }
    for (i, (a, b)) in runs.iter().enumerate() {
        if i > 0 {
            f.write_str(",")?;
        }
        if a == b {
            write!(f, "{a}")?;
        } else {
            write!(f, "{a}-{b}")?;
        }
    }
    Ok(())
}

/// The canonical form, e.g. `hour=18-6 dayOfWeek=*`; it parses back to the
/// same expression.
impl fmt::Display for ScheduleExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("hour=")?;
        fmt_spec(f, self.hours.into(), 23)?;
        f.write_str(" dayOfWeek=")?;
        fmt_spec(f, self.days.into(), 6)
    }
}

/// The OR of several expressions (the values of one `dcmSchedule`
/// attribute); empty = always open.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Schedule {
    exprs: Vec<ScheduleExpr>,
    /// The values as configured, for display.
    values: Vec<String>,
}

impl Schedule {
    /// Parses every value; the first invalid one is the error. No values
    /// gives the always-open schedule.
    pub fn parse_all<S: AsRef<str>>(values: &[S]) -> Result<Schedule, ScheduleError> {
        if values.len() > MAX_SCHEDULE_VALUES {
            return Err(ScheduleError {
                value: format!("{} values", values.len()),
                reason: format!("an entry has at most {MAX_SCHEDULE_VALUES} dcmSchedule values"),
            });
        }
        let mut exprs = Vec::with_capacity(values.len());
        for v in values {
            exprs.push(v.as_ref().parse()?);
        }
        Ok(Schedule {
            exprs,
            values: values.iter().map(|v| v.as_ref().to_owned()).collect(),
        })
    }

    /// The parsed expressions, in configuration order.
    pub fn exprs(&self) -> &[ScheduleExpr] {
        &self.exprs
    }

    /// The values as configured.
    pub fn values(&self) -> &[String] {
        &self.values
    }

    /// Whether the window is open at every time: no values, or values that
    /// together cover every hour of every day (e.g. `hour=*`).
    pub fn is_always_open(&self) -> bool {
        self.exprs.is_empty() || (0..7).all(|d| self.hours_on(d) == ALL_HOURS)
    }

    /// The union of the hours open on day `d` (0 = Sunday).
    fn hours_on(&self, d: u32) -> u32 {
        self.exprs
            .iter()
            .filter(|e| e.days & (1 << d) != 0)
            .fold(0, |acc, e| acc | e.hours)
    }

    /// Whether the local wall time `t` is inside any of the expressions
    /// (always, if there are none).
    pub fn contains_local(&self, t: NaiveDateTime) -> bool {
        self.exprs.is_empty() || self.exprs.iter().any(|e| e.contains_local(t))
    }

    /// Whether the window is open at `now` in time zone `tz`.
    pub fn is_open<Tz: TimeZone>(&self, now: DateTime<Tz>) -> bool {
        self.contains_local(now.naive_local())
    }

    /// The earliest instant >= now at which the window is open (now itself
    /// if open now); None if never (cannot happen for a valid non-empty expr,
    /// but keep Option).
    pub fn next_open<Tz: TimeZone>(&self, now: DateTime<Tz>) -> Option<DateTime<Tz>> {
        if self.exprs.is_empty() {
            return Some(now);
        }
        self.walk(now, true)
    }

    /// When the window that is open at `now` closes (the first instant after
    /// now at which it is closed), None if always open / never closes.
    ///
    /// If the window is already closed at `now`, that is `now` itself: the
    /// result is the earliest instant >= `now` at which the window is closed.
    pub fn next_close<Tz: TimeZone>(&self, now: DateTime<Tz>) -> Option<DateTime<Tz>> {
        if self.is_always_open() {
            return None;
        }
        self.walk(now, false)
    }

    /// The earliest instant >= `now` at which `contains_local` equals
    /// `want_open`, within [`HORIZON_DAYS`].
    ///
    /// Whether the window is open can only change where the local wall time
    /// enters a new hour: at a local `HH:00:00` reached by the clock running
    /// on, or at a change of the UTC offset (DST gaps and overlaps, which
    /// may land mid-hour). The walk visits exactly those instants, in order,
    /// so it never skips an open stretch and never returns a time outside it.
    fn walk<Tz: TimeZone>(&self, now: DateTime<Tz>, want_open: bool) -> Option<DateTime<Tz>> {
        // Checked: `now` may be any instant a caller passes, up to the end
        // of chrono's range; near it the horizon is cut there.
        let limit = now
            .clone()
            .checked_add_signed(TimeDelta::days(HORIZON_DAYS))
            .unwrap_or_else(|| now.clone());
        let mut t = now;
        for _ in 0..MAX_STEPS {
            let local = t.naive_local();
            if self.contains_local(local) == want_open {
                return Some(t);
            }
            // The next local HH:00:00 if the offset stays as it is (a leap
            // second's nanoseconds >= 1e9 clamped so the step stays > 0).
            let into_hour = TimeDelta::seconds(i64::from(local.minute() * 60 + local.second()))
                + TimeDelta::nanoseconds(i64::from(local.nanosecond().min(999_999_999)));
            let mut next = t
                .clone()
                .checked_add_signed(TimeDelta::hours(1) - into_hour)?;
            if next.offset().fix() != t.offset().fix() {
                next = first_offset_change(&t, next);
            }
            if next > limit {
                return None;
            }
            t = next;
        }
        None
    }
}

/// The first instant in `(lo, hi]` whose UTC offset differs from `lo`'s,
/// given that `hi`'s does (binary search, to the nanosecond; assumes one
/// change within the interval of at most an hour).
fn first_offset_change<Tz: TimeZone>(lo: &DateTime<Tz>, mut hi: DateTime<Tz>) -> DateTime<Tz> {
    let base = lo.offset().fix();
    let mut lo = lo.clone();
    while hi.clone() - lo.clone() > TimeDelta::nanoseconds(1) {
        let mid = lo.clone() + (hi.clone() - lo.clone()) / 2;
        if mid.offset().fix() == base {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    hi
}

/// The values as configured, joined with `", "`; `*` if there are none.
impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.values.is_empty() {
            return f.write_str("*");
        }
        f.write_str(&self.values.join(", "))
    }
}

/// The time zone in which schedules are evaluated: the machine's local
/// time by default, or a named IANA zone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Zone {
    #[default]
    Local,
    Named(chrono_tz::Tz),
}

/// A `--time-zone` that names no IANA zone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a time zone name like Europe/Vienna (or \"local\")")]
pub struct UnknownZone(pub String);

impl std::str::FromStr for Zone {
    type Err = UnknownZone;
    fn from_str(s: &str) -> Result<Zone, UnknownZone> {
        if s.eq_ignore_ascii_case("local") {
            return Ok(Zone::Local);
        }
        s.parse::<chrono_tz::Tz>()
            .map(Zone::Named)
            .map_err(|_| UnknownZone(s.to_owned()))
    }
}

impl std::fmt::Display for Zone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Zone::Local => f.write_str("local"),
            Zone::Named(tz) => write!(f, "{tz}"),
        }
    }
}

/// Runs `$body` with `$t` bound to `$now` in the zone, and converts the
/// instant it yields back to UTC. A macro, not a function: the body is
/// generic over the zone's type (chrono::Local or a chrono_tz::Tz).
macro_rules! in_zone {
    ($zone:expr, $now:expr, |$t:ident| $body:expr) => {
        match $zone {
            Zone::Local => {
                let $t = $now.with_timezone(&chrono::Local);
                $body.map(|x| x.with_timezone(&chrono::Utc))
            }
            Zone::Named(tz) => {
                let $t = $now.with_timezone(tz);
                $body.map(|x| x.with_timezone(&chrono::Utc))
            }
        }
    };
}

impl Zone {
    /// Whether `schedule` is open at the instant `now`.
    pub fn is_open(&self, schedule: &Schedule, now: chrono::DateTime<chrono::Utc>) -> bool {
        match self {
            Zone::Local => schedule.is_open(now.with_timezone(&chrono::Local)),
            Zone::Named(tz) => schedule.is_open(now.with_timezone(tz)),
        }
    }

    /// When `schedule` next opens at or after `now`.
    pub fn next_open(
        &self,
        schedule: &Schedule,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Option<chrono::DateTime<chrono::Utc>> {
        in_zone!(self, now, |t| schedule.next_open(t))
    }

    /// When `schedule` next closes at or after `now` (None: always open).
    pub fn next_close(
        &self,
        schedule: &Schedule,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Option<chrono::DateTime<chrono::Utc>> {
        in_zone!(self, now, |t| schedule.next_close(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{FixedOffset, NaiveDate, Utc, Weekday};
    use chrono_tz::Europe::Vienna;

    fn expr(s: &str) -> ScheduleExpr {
        s.parse()
            .unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
    }

    fn sched(values: &[&str]) -> Schedule {
        Schedule::parse_all(values).unwrap()
    }

    fn err(s: &str) -> ScheduleError {
        s.parse::<ScheduleExpr>()
            .expect_err(&format!("{s:?} should not parse"))
    }

    fn mask(bits: &[u32]) -> u32 {
        bits.iter().fold(0, |m, b| m | 1 << b)
    }

    /// A local wall time; 2026-03-02 is a Monday.
    fn naive(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(y, mo, d)
            .unwrap()
            .and_hms_opt(h, mi, s)
            .unwrap()
    }

    /// The same in UTC+01:00 (as Europe/Vienna in winter, without DST).
    fn cet(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<FixedOffset> {
        FixedOffset::east_opt(3600)
            .unwrap()
            .from_local_datetime(&naive(y, mo, d, h, mi, s))
            .single()
            .unwrap()
    }

    fn vienna(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<chrono_tz::Tz> {
        Vienna
            .from_local_datetime(&naive(y, mo, d, h, mi, s))
            .earliest()
            .unwrap()
    }

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.from_utc_datetime(&naive(y, mo, d, h, mi, s))
    }

    // ---- parsing ----

    #[test]
    fn parses_hour_wrap_with_any_day() {
        let e = expr("hour=18-6 dayOfWeek=*");
        assert_eq!(
            e.hours_mask(),
            mask(&[18, 19, 20, 21, 22, 23, 0, 1, 2, 3, 4, 5, 6])
        );
        assert_eq!(e.days_mask(), 0b111_1111);
    }

    #[test]
    fn parses_weekend_list() {
        let e = expr("hour=* dayOfWeek=0,6");
        assert_eq!(e.hours_mask(), ALL_HOURS);
        assert_eq!(e.days_mask(), 0b100_0001);
    }

    #[test]
    fn parses_missing_keys_as_any() {
        let e = expr("dayOfWeek=1-5");
        assert_eq!(e.hours_mask(), ALL_HOURS);
        assert_eq!(e.days_mask(), 0b011_1110);
        let e = expr("hour=8");
        assert_eq!(e.hours_mask(), 1 << 8);
        assert_eq!(e.days_mask(), ALL_DAYS);
    }

    #[test]
    fn parses_key_order_and_whitespace_variants() {
        let want = expr("hour=18-6 dayOfWeek=1-5");
        for s in [
            "dayOfWeek=1-5 hour=18-6",
            "  hour=18-6   dayOfWeek=1-5  ",
            "hour=18-6\tdayOfWeek=1-5",
            "\nhour=18-6\r\n dayOfWeek=1-5\n",
        ] {
            assert_eq!(expr(s), want, "{s:?}");
        }
    }

    #[test]
    fn parses_lists_mixed_with_ranges_and_leading_zeros() {
        assert_eq!(expr("hour=1,3-4,23").hours_mask(), mask(&[1, 3, 4, 23]));
        assert_eq!(expr("hour=08,09").hours_mask(), mask(&[8, 9]));
        assert_eq!(expr("hour=5-5").hours_mask(), mask(&[5]));
        assert_eq!(expr("hour=0-23").hours_mask(), ALL_HOURS);
        // overlapping items are fine
        assert_eq!(expr("hour=1-3,2-4").hours_mask(), mask(&[1, 2, 3, 4]));
    }

    #[test]
    fn parses_wrapping_days() {
        // Fri, Sat, Sun, Mon
        assert_eq!(expr("dayOfWeek=5-1").days_mask(), 0b110_0011);
        assert_eq!(expr("dayOfWeek=6-0").days_mask(), 0b100_0001);
        assert_eq!(expr("hour=23-0").hours_mask(), mask(&[23, 0]));
    }

    #[test]
    fn rejects_malformed_values() {
        for s in [
            "hour=24",
            "hour=5-",
            "hour=-5",
            "hour=a",
            "hour=1-2-3",
            "hour=+1",
            "hour=",
            "hour=1,",
            "hour=,1",
            "hour=1,,2",
            "hour=*,1",
            "hour= 1",
            "hour=1, 2",
            "hour=99999999999999999999",
            "dayOfWeek=7",
            "dayOfWeek=0-7",
            "foo=1",
            "Hour=1",
            "dayofweek=1",
            "hour",
            "hour:1",
            "=1",
            "hour=1 hour=2",
            "dayOfWeek=1 dayOfWeek=1",
            "hour=1 garbage",
        ] {
            let e = err(s);
            assert_eq!(e.value, s);
            assert!(!e.reason.is_empty());
        }
    }

    #[test]
    fn rejects_empty_value() {
        for s in ["", "   ", "\t\n"] {
            let e = err(s);
            assert_eq!(e.reason, "empty schedule", "{s:?}");
        }
    }

    #[test]
    fn error_messages_name_the_value_and_problem() {
        let e = err("hour=24");
        assert_eq!(
            e.to_string(),
            r#""hour=24": hour: 24 is out of range 0..=23"#
        );
        assert!(err("foo=1").reason.contains("unknown key \"foo\""));
        assert!(err("hour=1 hour=2").reason.contains("more than once"));
        assert!(err("dayOfWeek=7").reason.contains("0..=6"));
        assert!(err("hour=a").reason.contains("not a number"));
    }

    #[test]
    fn display_is_canonical_and_round_trips() {
        for (s, want) in [
            ("hour=18-6", "hour=18-6 dayOfWeek=*"),
            ("dayOfWeek=0,6", "hour=* dayOfWeek=6-0"),
            (
                "hour=0-6,10,18-23 dayOfWeek=1-5",
                "hour=10,18-6 dayOfWeek=1-5",
            ),
            ("hour=8 dayOfWeek=1", "hour=8 dayOfWeek=1"),
            ("hour=0-23 dayOfWeek=0-6", "hour=* dayOfWeek=*"),
        ] {
            let e = expr(s);
            assert_eq!(e.to_string(), want, "{s:?}");
            assert_eq!(expr(&e.to_string()), e, "{s:?}");
        }
    }

    #[test]
    fn parse_all_keeps_values_and_reports_the_bad_one() {
        let s = sched(&["hour=8", "dayOfWeek=0,6"]);
        assert_eq!(s.values(), ["hour=8", "dayOfWeek=0,6"]);
        assert_eq!(s.exprs().len(), 2);
        assert_eq!(s.to_string(), "hour=8, dayOfWeek=0,6");

        let e = Schedule::parse_all(&["hour=8", "hour=25"]).unwrap_err();
        assert_eq!(e.value, "hour=25");

        let owned: Vec<String> = vec!["hour=1".into()];
        assert_eq!(Schedule::parse_all(&owned).unwrap().values(), ["hour=1"]);
    }

    #[test]
    fn empty_schedule_is_always_open() {
        let s = Schedule::parse_all::<&str>(&[]).unwrap();
        assert_eq!(s, Schedule::default());
        assert!(s.is_always_open());
        assert_eq!(s.to_string(), "*");
        let now = cet(2026, 3, 2, 10, 0, 0);
        assert!(s.is_open(now));
        assert_eq!(s.next_open(now), Some(now));
        assert_eq!(s.next_close(now), None);
    }

    #[test]
    fn always_open_when_values_cover_everything() {
        assert!(sched(&["hour=*"]).is_always_open());
        assert!(sched(&["dayOfWeek=0-3", "dayOfWeek=4-6"]).is_always_open());
        assert!(sched(&["hour=18-6", "hour=7-17 dayOfWeek=*"]).is_always_open());
        assert!(!sched(&["hour=0-22"]).is_always_open());
        assert!(!sched(&["dayOfWeek=0-5"]).is_always_open());
        let s = sched(&["dayOfWeek=0-3", "dayOfWeek=4-6"]);
        assert_eq!(s.next_close(cet(2026, 3, 2, 10, 0, 0)), None);
    }

    // ---- containment ----

    #[test]
    fn sunday_is_zero() {
        // 2026-03-01 is a Sunday, 2026-03-07 a Saturday
        assert_eq!(naive(2026, 3, 1, 0, 0, 0).weekday(), Weekday::Sun);
        let sun = expr("dayOfWeek=0");
        assert!(sun.contains_local(naive(2026, 3, 1, 12, 0, 0)));
        assert!(!sun.contains_local(naive(2026, 3, 2, 12, 0, 0)));
        assert!(!sun.contains_local(naive(2026, 3, 7, 12, 0, 0)));
        let sat = expr("dayOfWeek=6");
        assert!(sat.contains_local(naive(2026, 3, 7, 12, 0, 0)));
        assert!(!sat.contains_local(naive(2026, 3, 1, 12, 0, 0)));
    }

    #[test]
    fn wrapping_hours_boundaries() {
        let e = expr("hour=18-6 dayOfWeek=*");
        assert!(!e.contains_local(naive(2026, 3, 2, 17, 59, 59)));
        assert!(e.contains_local(naive(2026, 3, 2, 18, 0, 0)));
        assert!(e.contains_local(naive(2026, 3, 2, 23, 59, 59)));
        assert!(e.contains_local(naive(2026, 3, 3, 0, 0, 0)));
        assert!(e.contains_local(naive(2026, 3, 3, 6, 59, 59)));
        assert!(!e.contains_local(naive(2026, 3, 3, 7, 0, 0)));
        assert!(!e.contains_local(naive(2026, 3, 3, 12, 0, 0)));
    }

    #[test]
    fn wrapping_days() {
        let e = expr("dayOfWeek=5-1");
        // Thu 2026-03-05 .. Wed 2026-03-11
        let inside: Vec<bool> = (5..=11)
            .map(|d| e.contains_local(naive(2026, 3, d, 12, 0, 0)))
            .collect();
        // Thu Fri Sat Sun Mon Tue Wed
        assert_eq!(inside, [false, true, true, true, true, false, false]);
    }

    #[test]
    fn hour_and_day_must_both_match() {
        // the hours wrap past midnight, but the day is still the calendar day
        let e = expr("hour=22-2 dayOfWeek=1");
        assert!(e.contains_local(naive(2026, 3, 2, 23, 0, 0))); // Mon 23:00
        assert!(e.contains_local(naive(2026, 3, 2, 1, 0, 0))); // Mon 01:00
        assert!(!e.contains_local(naive(2026, 3, 3, 1, 0, 0))); // Tue 01:00
        assert!(!e.contains_local(naive(2026, 3, 2, 12, 0, 0)));
    }

    #[test]
    fn several_values_are_ored() {
        let s = sched(&["hour=8-9 dayOfWeek=1-5", "dayOfWeek=0,6"]);
        assert!(s.is_open(cet(2026, 3, 2, 8, 30, 0))); // Mon 08:30
        assert!(!s.is_open(cet(2026, 3, 2, 10, 0, 0))); // Mon 10:00
        assert!(s.is_open(cet(2026, 3, 7, 15, 0, 0))); // Sat
        assert!(s.is_open(cet(2026, 3, 8, 3, 0, 0))); // Sun
        assert_eq!(
            s.next_open(cet(2026, 3, 6, 10, 0, 0)),
            Some(cet(2026, 3, 7, 0, 0, 0))
        );
        assert_eq!(
            s.next_close(cet(2026, 3, 7, 15, 0, 0)),
            Some(cet(2026, 3, 9, 0, 0, 0))
        );
    }

    #[test]
    fn is_open_uses_the_wall_time_of_the_given_zone() {
        let s = sched(&["hour=18-6"]);
        // 06:30 UTC is 07:30 in UTC+1: open in UTC, closed in UTC+1
        let t = utc(2026, 3, 2, 6, 30, 0);
        assert!(s.is_open(t));
        assert!(!s.is_open(t.with_timezone(&FixedOffset::east_opt(3600).unwrap())));
        assert!(!s.is_open(t.with_timezone(&Vienna)));
    }

    #[test]
    fn is_open_at_boundaries() {
        let s = sched(&["hour=18-6 dayOfWeek=*"]);
        assert!(s.is_open(cet(2026, 3, 3, 6, 59, 59)));
        assert!(s.is_open(cet(2026, 3, 3, 6, 59, 59) + TimeDelta::nanoseconds(999_999_999)));
        assert!(!s.is_open(cet(2026, 3, 3, 7, 0, 0)));
        assert!(!s.is_open(cet(2026, 3, 3, 17, 59, 59)));
        assert!(s.is_open(cet(2026, 3, 3, 18, 0, 0)));
    }

    // ---- next_open ----

    #[test]
    fn next_open_when_open_is_now() {
        let s = sched(&["hour=18-6"]);
        for now in [
            cet(2026, 3, 2, 18, 0, 0),
            cet(2026, 3, 2, 23, 59, 59),
            cet(2026, 3, 3, 6, 59, 59) + TimeDelta::milliseconds(999),
            cet(2026, 3, 3, 3, 17, 42) + TimeDelta::nanoseconds(123),
        ] {
            assert_eq!(s.next_open(now), Some(now));
        }
    }

    #[test]
    fn next_open_avoids_dcm4chee_ceil_bug() {
        // dcm4chee's ceil returns a time outside the window here
        let s = sched(&["hour=8 dayOfWeek=1"]);
        let now = cet(2026, 3, 2, 10, 0, 0); // Monday 10:00
        let next = s.next_open(now).unwrap();
        assert_eq!(next, cet(2026, 3, 9, 8, 0, 0)); // next Monday 08:00:00
        assert!(s.is_open(next));
    }

    #[test]
    fn next_open_later_the_same_day_and_the_next_day() {
        let s = sched(&["hour=18-6"]);
        assert_eq!(
            s.next_open(cet(2026, 3, 2, 7, 0, 0)),
            Some(cet(2026, 3, 2, 18, 0, 0))
        );
        assert_eq!(
            s.next_open(cet(2026, 3, 2, 17, 59, 59) + TimeDelta::nanoseconds(1)),
            Some(cet(2026, 3, 2, 18, 0, 0))
        );
        let s = sched(&["hour=8 dayOfWeek=1-5"]);
        assert_eq!(
            s.next_open(cet(2026, 3, 2, 8, 0, 0)),
            Some(cet(2026, 3, 2, 8, 0, 0))
        );
        assert_eq!(
            s.next_open(cet(2026, 3, 2, 9, 0, 0)),
            Some(cet(2026, 3, 3, 8, 0, 0))
        );
        // Friday after hours: Monday
        assert_eq!(
            s.next_open(cet(2026, 3, 6, 9, 0, 0)),
            Some(cet(2026, 3, 9, 8, 0, 0))
        );
    }

    #[test]
    fn next_open_across_week_wrap() {
        let s = sched(&["dayOfWeek=1"]);
        // Saturday 23:30 -> Monday 00:00
        assert_eq!(
            s.next_open(cet(2026, 3, 7, 23, 30, 0)),
            Some(cet(2026, 3, 9, 0, 0, 0))
        );
        let s = sched(&["dayOfWeek=0 hour=23"]);
        // Sunday 23:00 has just passed -> next Sunday's
        assert_eq!(
            s.next_open(cet(2026, 3, 2, 0, 0, 0)),
            Some(cet(2026, 3, 8, 23, 0, 0))
        );
    }

    #[test]
    fn next_open_is_the_earliest_of_the_values() {
        let s = sched(&[
            "hour=20 dayOfWeek=1",
            "hour=12 dayOfWeek=2",
            "hour=15 dayOfWeek=1",
        ]);
        assert_eq!(
            s.next_open(cet(2026, 3, 2, 10, 0, 0)),
            Some(cet(2026, 3, 2, 15, 0, 0))
        );
        assert_eq!(
            s.next_open(cet(2026, 3, 2, 16, 0, 0)),
            Some(cet(2026, 3, 2, 20, 0, 0))
        );
        assert_eq!(
            s.next_open(cet(2026, 3, 2, 21, 0, 0)),
            Some(cet(2026, 3, 3, 12, 0, 0))
        );
    }

    #[test]
    fn next_open_is_exhaustively_correct_against_brute_force() {
        // every minute of a week, for a few schedules: the answer is inside,
        // >= now, and nothing between now and it (per minute) is inside
        for values in [
            &["hour=8 dayOfWeek=1"][..],
            &["hour=18-6 dayOfWeek=5-1"],
            &["hour=23-0 dayOfWeek=6", "hour=12"],
            &["hour=3,7,11 dayOfWeek=0,3"],
        ] {
            let s = sched(values);
            let start = cet(2026, 3, 1, 0, 0, 0);
            for m in (0..7 * 24 * 60).step_by(11) {
                let now = start + TimeDelta::minutes(m) + TimeDelta::seconds(13);
                let next = s.next_open(now).unwrap();
                assert!(next >= now && s.is_open(next), "{values:?} {now}");
                let mut t = now;
                while t < next {
                    assert!(!s.is_open(t), "{values:?} {now}: open at {t} before {next}");
                    t += TimeDelta::minutes(10);
                }
                // with a fixed offset openness only changes at full hours,
                // so the answer is at one unless it is `now`
                if next != now {
                    assert_eq!((next.minute(), next.second(), next.nanosecond()), (0, 0, 0));
                    assert!(!s.is_open(next - TimeDelta::nanoseconds(1)));
                }
            }
        }
    }

    #[test]
    fn next_open_keeps_the_time_zone_and_works_in_utc() {
        let s = sched(&["hour=8 dayOfWeek=1"]);
        let next = s.next_open(utc(2026, 3, 2, 10, 0, 0)).unwrap();
        assert_eq!(next, utc(2026, 3, 9, 8, 0, 0));
        let now = cet(2026, 3, 2, 10, 0, 0);
        assert_eq!(s.next_open(now).unwrap().offset(), now.offset());
    }

    // ---- next_close ----

    #[test]
    fn next_close_of_an_open_window() {
        let s = sched(&["hour=18-6"]);
        assert_eq!(
            s.next_close(cet(2026, 3, 2, 18, 0, 0)),
            Some(cet(2026, 3, 3, 7, 0, 0))
        );
        assert_eq!(
            s.next_close(cet(2026, 3, 3, 6, 59, 59)),
            Some(cet(2026, 3, 3, 7, 0, 0))
        );
        let s = sched(&["hour=8 dayOfWeek=1"]);
        assert_eq!(
            s.next_close(cet(2026, 3, 2, 8, 15, 0)),
            Some(cet(2026, 3, 2, 9, 0, 0))
        );
    }

    #[test]
    fn next_close_of_adjacent_values_spans_them() {
        // Fri 18:00 .. Mon 06:59 as two values that touch
        let s = sched(&[
            "dayOfWeek=6,0",
            "hour=18-23 dayOfWeek=5",
            "hour=0-6 dayOfWeek=1",
        ]);
        assert_eq!(
            s.next_close(cet(2026, 3, 6, 19, 0, 0)),
            Some(cet(2026, 3, 9, 7, 0, 0))
        );
        // wrapping days: Fri..Mon, closes Tuesday 00:00
        let s = sched(&["dayOfWeek=5-1"]);
        assert_eq!(
            s.next_close(cet(2026, 3, 6, 12, 0, 0)),
            Some(cet(2026, 3, 10, 0, 0, 0))
        );
    }

    #[test]
    fn next_close_when_closed_is_now() {
        let s = sched(&["hour=18-6"]);
        let now = cet(2026, 3, 3, 7, 0, 0);
        assert_eq!(s.next_close(now), Some(now));
    }

    #[test]
    fn next_close_none_when_always_open() {
        assert_eq!(
            sched(&["hour=*"]).next_close(cet(2026, 3, 2, 8, 0, 0)),
            None
        );
        assert_eq!(
            sched(&["dayOfWeek=*"]).next_close(utc(2026, 3, 2, 8, 0, 0)),
            None
        );
    }

    // ---- DST (Europe/Vienna) ----

    #[test]
    fn vienna_spring_forward_skips_the_missing_hour() {
        // 2026-03-29 (Sunday): 02:00 CET jumps to 03:00 CEST
        assert!(
            Vienna
                .from_local_datetime(&naive(2026, 3, 29, 2, 0, 0))
                .earliest()
                .is_none()
        );
        let s = sched(&["hour=2"]);
        let now = vienna(2026, 3, 29, 1, 30, 0);
        let next = s.next_open(now).unwrap();
        assert_eq!(next, vienna(2026, 3, 30, 2, 0, 0));
        assert_eq!(next, utc(2026, 3, 30, 0, 0, 0));
        assert!(s.is_open(next));
        // the clock passes 01:59:59 CET -> 03:00:00 CEST without hour 2
        assert!(!s.is_open(utc(2026, 3, 29, 1, 0, 0).with_timezone(&Vienna)));
    }

    #[test]
    fn vienna_spring_forward_weekly_window_lost_to_the_gap() {
        // Sunday 02:00 does not exist on 2026-03-29: the week after
        let s = sched(&["hour=2 dayOfWeek=0"]);
        assert_eq!(
            s.next_open(vienna(2026, 3, 29, 1, 0, 0)),
            Some(vienna(2026, 4, 5, 2, 0, 0))
        );
        // seen from just after the previous Sunday's: 14 days minus an hour
        assert_eq!(
            s.next_open(vienna(2026, 3, 22, 3, 0, 0)),
            Some(vienna(2026, 4, 5, 2, 0, 0))
        );
    }

    #[test]
    fn vienna_spring_forward_hours_around_the_gap() {
        let s = sched(&["hour=3"]);
        // 03:00 CEST is the instant right after 01:59:59.999 CET
        let next = s.next_open(vienna(2026, 3, 29, 1, 30, 0)).unwrap();
        assert_eq!(next, vienna(2026, 3, 29, 3, 0, 0));
        assert_eq!(next, utc(2026, 3, 29, 1, 0, 0));
        // a window 1-2 closes at 03:00 CEST, only 30 minutes after 01:30 CET
        let s = sched(&["hour=1-2"]);
        assert_eq!(
            s.next_close(vienna(2026, 3, 29, 1, 30, 0)).unwrap(),
            utc(2026, 3, 29, 1, 0, 0)
        );
    }

    #[test]
    fn vienna_fall_back_takes_the_first_occurrence() {
        // 2026-10-25 (Sunday): 03:00 CEST goes back to 02:00 CET, so
        // 02:00..02:59 happens twice
        let ambiguous = Vienna.from_local_datetime(&naive(2026, 10, 25, 2, 0, 0));
        assert!(ambiguous.earliest() != ambiguous.latest());
        let s = sched(&["hour=2"]);
        let next = s.next_open(vienna(2026, 10, 25, 1, 30, 0)).unwrap();
        assert_eq!(next, utc(2026, 10, 25, 0, 0, 0)); // 02:00 CEST
        assert_eq!(next.offset().fix().local_minus_utc(), 7200);
        // the window is open through both occurrences of 02:xx: it closes
        // at 03:00 CET, two real hours later
        assert_eq!(s.next_close(next).unwrap(), utc(2026, 10, 25, 2, 0, 0));
        // during the second occurrence it is open too
        let second = utc(2026, 10, 25, 1, 30, 0).with_timezone(&Vienna);
        assert_eq!(second.hour(), 2);
        assert_eq!(s.next_open(second), Some(second));
    }

    #[test]
    fn vienna_fall_back_hour_after_the_repeat() {
        let s = sched(&["hour=3"]);
        // from the first 02:30 (CEST), 03:00 CET comes 1.5 real hours later
        let now = utc(2026, 10, 25, 0, 30, 0).with_timezone(&Vienna);
        assert_eq!(now.hour(), 2);
        assert_eq!(s.next_open(now).unwrap(), utc(2026, 10, 25, 2, 0, 0));
        // a window of hour 1 is not reopened by the repeat of hour 2
        let s = sched(&["hour=1"]);
        assert_eq!(s.next_open(now), Some(vienna(2026, 10, 26, 1, 0, 0)));
    }

    #[test]
    fn vienna_results_are_always_inside_and_not_before_now() {
        // every 10 minutes through both transition weeks
        for values in [
            &["hour=2"][..],
            &["hour=1-2 dayOfWeek=0"],
            &["hour=3", "hour=2 dayOfWeek=0"],
        ] {
            let s = sched(values);
            for start in [utc(2026, 3, 26, 0, 0, 0), utc(2026, 10, 22, 0, 0, 0)] {
                for m in (0..6 * 24 * 60).step_by(10) {
                    let now = (start + TimeDelta::minutes(m)).with_timezone(&Vienna);
                    let open = s.next_open(now).unwrap();
                    assert!(open >= now && s.is_open(open), "{values:?} {now}");
                    let close = s.next_close(now).unwrap();
                    assert!(close >= now && !s.is_open(close), "{values:?} {now}");
                    if open > now {
                        assert!(!s.is_open(open - TimeDelta::nanoseconds(1)));
                    }
                    if close > now {
                        assert!(s.is_open(close - TimeDelta::nanoseconds(1)));
                    }
                }
            }
        }
    }

    // ---- DST transitions that are not at a full local hour ----

    #[test]
    fn gaza_transition_at_00_01_opens_hour_1_at_01_01() {
        // Asia/Gaza 2011-04-01: 00:01 EET jumps to 01:01 EEST, so 01:00 does
        // not exist but 01:01..01:59 do; stepping over local HH:00 only
        // (or skipping nonexistent HH:00) would miss hour 1 that day
        let tz = chrono_tz::Asia::Gaza;
        assert!(
            tz.from_local_datetime(&naive(2011, 4, 1, 1, 0, 0))
                .earliest()
                .is_none()
        );
        let s = sched(&["hour=1"]);
        let now = tz
            .from_local_datetime(&naive(2011, 3, 31, 23, 30, 0))
            .single()
            .unwrap();
        let next = s.next_open(now).unwrap();
        assert_eq!(next.naive_local(), naive(2011, 4, 1, 1, 1, 0));
        assert_eq!(next, utc(2011, 3, 31, 22, 1, 0));
        // hour 0 lasted one minute
        let s = sched(&["hour=0"]);
        let midnight = tz
            .from_local_datetime(&naive(2011, 4, 1, 0, 0, 0))
            .single()
            .unwrap();
        assert_eq!(s.next_close(midnight).unwrap(), utc(2011, 3, 31, 22, 1, 0));
    }

    // ---- a zone with a half-hour DST shift ----

    #[test]
    fn zone_names_and_evaluation() {
        assert_eq!("local".parse::<Zone>(), Ok(Zone::Local));
        let z: Zone = "Europe/Vienna".parse().unwrap();
        assert!("Mars/Olympus".parse::<Zone>().is_err());
        let s = Schedule::parse_all(&["hour=8"]).unwrap();
        // 07:30 UTC in January is 08:30 in Vienna.
        let t = chrono::Utc.with_ymd_and_hms(2026, 1, 5, 7, 30, 0).unwrap();
        assert!(z.is_open(&s, t));
        assert!(!Zone::Named(chrono_tz::UTC).is_open(&s, t));
        assert_eq!(
            Zone::Named(chrono_tz::UTC).next_open(&s, t),
            Some(chrono::Utc.with_ymd_and_hms(2026, 1, 5, 8, 0, 0).unwrap())
        );
    }

    #[test]
    fn lord_howe_half_hour_gap_opens_at_the_end_of_the_gap() {
        // Australia/Lord_Howe 2026-10-04: 02:00 +10:30 -> 02:30 +11:00, so
        // 02:00..02:29 do not exist but 02:30..02:59 do
        let tz = chrono_tz::Australia::Lord_Howe;
        assert!(
            tz.from_local_datetime(&naive(2026, 10, 4, 2, 0, 0))
                .earliest()
                .is_none()
        );
        let s = sched(&["hour=2"]);
        let now = tz
            .from_local_datetime(&naive(2026, 10, 4, 1, 0, 0))
            .single()
            .unwrap();
        let next = s.next_open(now).unwrap();
        assert_eq!(next.naive_local(), naive(2026, 10, 4, 2, 30, 0));
        assert!(s.is_open(next) && !s.is_open(next - TimeDelta::nanoseconds(1)));
    }

    // ---- hostile values ----

    #[test]
    fn long_values_and_too_many_values_are_bounded_errors() {
        let long = format!("hour={}", "1,".repeat(100_000));
        let e = err(&long);
        assert!(e.reason.contains("at most 256"), "{e}");
        assert!(e.to_string().len() < 200, "the message stays short: {e}");
        let many: Vec<String> = (0..=MAX_SCHEDULE_VALUES).map(|_| "hour=1".into()).collect();
        let e = Schedule::parse_all(&many).unwrap_err();
        assert!(e.reason.contains("at most 168"), "{e}");
        assert!(Schedule::parse_all(&many[1..]).is_ok());
    }

    #[test]
    fn odd_values_are_errors_or_windows() {
        for s in [
            "hour=\u{661}",
            "hour=\u{ff11}",
            "hour=1\u{3000}dayOfWeek=1",
            "h\u{e9}ur=1",
            "hour=4294967296",
            "hour=23-0,5-4",
        ] {
            if let Ok(e) = s.parse::<ScheduleExpr>() {
                assert_ne!(e.hours_mask() & ALL_HOURS, 0, "{s:?}");
            }
        }
        assert!(
            "hour=\u{ff11}".parse::<ScheduleExpr>().is_err(),
            "full-width digits are not digits"
        );
    }

    #[test]
    fn instants_at_the_end_of_time_do_not_panic() {
        let s = sched(&["hour=3"]);
        let end = DateTime::<Utc>::MAX_UTC;
        assert_eq!(s.next_open(end), None);
        assert_eq!(s.next_close(end), Some(end).filter(|e| !s.is_open(*e)));
        let start = DateTime::<Utc>::MIN_UTC;
        assert!(s.next_open(start).is_some());
    }

    /// Random values from the grammar's pieces (a reproducible xorshift):
    /// each is an error or a window whose `next_open` lies inside it.
    #[test]
    fn generated_values_never_panic_and_open_inside_their_window() {
        let pieces = [
            "hour",
            "dayOfWeek",
            "=",
            "*",
            ",",
            "-",
            " ",
            "0",
            "1",
            "6",
            "7",
            "18",
            "23",
            "24",
            "99",
            "4294967296",
            "\t",
            "\u{e9}",
            "x",
        ];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let now = utc(2026, 3, 2, 10, 30, 0);
        for _ in 0..20_000 {
            let n = 1 + next() % 12;
            let v: String = (0..n)
                .map(|_| pieces[(next() % pieces.len() as u64) as usize])
                .collect();
            let Ok(s) = Schedule::parse_all(&[v.as_str()]) else {
                continue;
            };
            let at = s.next_open(now).expect("a valid value opens within a week");
            assert!(at >= now && s.is_open(at), "{v:?}: {at}");
        }
    }
}
