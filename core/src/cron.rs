//! Five-field cron expressions (`minute hour day-of-month month day-of-week`), as schedules use
//! them for `start` and `end`. Only what a schedule needs: the latest matching minute at or
//! before a local time.

use std::fmt;

use jiff::civil::{Date, DateTime, Time};

use crate::domain::InvalidValue;

/// How far back a schedule looks for its last `start`/`end`: a bit over a year, so yearly
/// expressions work.
const LOOKBACK_DAYS: i32 = 370;

#[derive(Clone, PartialEq, Eq)]
pub struct Cron {
    text: String,
    minutes: u64,
    hours: u32,
    days_of_month: u32,
    months: u16,
    days_of_week: u8,
    any_day_of_month: bool,
    any_day_of_week: bool,
}

impl fmt::Debug for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cron({:?})", self.text)
    }
}

impl fmt::Display for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

impl Cron {
    pub fn parse(text: &str) -> Result<Self, InvalidValue> {
        let fields: Vec<&str> = text.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(InvalidValue(format!(
                "cron expression {text:?} has {} fields; expected 5 (minute hour day-of-month month day-of-week)",
                fields.len()
            )));
        }
        let field = |i: usize, name: &str, lo: u32, hi: u32, names: &[&str]| {
            parse_field(fields[i], lo, hi, names).map_err(|why| {
                InvalidValue(format!(
                    "cron expression {text:?}: {name} field {:?}: {why}",
                    fields[i]
                ))
            })
        };
        let minutes = field(0, "minute", 0, 59, &[])?;
        let hours = field(1, "hour", 0, 23, &[])?;
        let days_of_month = field(2, "day-of-month", 1, 31, &[])?;
        let months = field(3, "month", 1, 12, &MONTHS)?;
        let mut days_of_week = field(4, "day-of-week", 0, 7, &DAYS)?;
        if days_of_week & (1 << 7) != 0 {
            days_of_week |= 1; // 7 is Sunday too
        }
        Ok(Self {
            text: fields.join(" "),
            minutes,
            hours: hours as u32,
            days_of_month: days_of_month as u32,
            months: months as u16,
            days_of_week: (days_of_week & 0x7f) as u8,
            // As in Vixie cron, a day field starting with `*` (`*`, `*/2`) does not restrict
            // the day on its own: the other day field decides.
            any_day_of_month: fields[2].starts_with('*'),
            any_day_of_week: fields[4].starts_with('*'),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    fn matches_date(&self, date: Date) -> bool {
        if self.months & (1 << date.month()) == 0 {
            return false;
        }
        let dom = self.days_of_month & (1 << date.day()) != 0;
        let dow = self.days_of_week & (1 << date.weekday().to_sunday_zero_offset()) != 0;
        // Vixie cron: when both day fields are restricted, either may match.
        match (self.any_day_of_month, self.any_day_of_week) {
            (true, true) => true,
            (true, false) => dow,
            (false, true) => dom,
            (false, false) => dom || dow,
        }
    }

    /// The latest minute at or before `at` (local civil time) that the expression matches.
    pub(crate) fn latest_at_or_before(&self, at: DateTime) -> Option<DateTime> {
        let mut date = at.date();
        for day in 0..=LOOKBACK_DAYS {
            if self.matches_date(date) {
                let (max_hour, max_minute) = if day == 0 {
                    (at.hour(), at.minute())
                } else {
                    (23, 59)
                };
                for hour in (0..=max_hour).rev() {
                    if self.hours & (1 << hour) == 0 {
                        continue;
                    }
                    let top = if hour == max_hour { max_minute } else { 59 };
                    if let Some(minute) = (0..=top).rev().find(|m| self.minutes & (1u64 << m) != 0)
                    {
                        let time = Time::new(hour, minute, 0, 0).ok()?;
                        return Some(date.to_datetime(time));
                    }
                }
            }
            date = date.yesterday().ok()?;
        }
        None
    }
}

fn parse_field(field: &str, lo: u32, hi: u32, names: &[&str]) -> Result<u64, String> {
    let mut bits = 0u64;
    for part in field.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s
                    .parse()
                    .map_err(|_| format!("step {s:?} is not a number"))?;
                if step == 0 {
                    return Err("a step of 0 is not allowed".to_owned());
                }
                (r, step)
            }
            None => (part, 1),
        };
        let (start, end) = if range == "*" {
            (lo, hi)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a, lo, hi, names)?, value(b, lo, hi, names)?)
        } else {
            let v = value(range, lo, hi, names)?;
            (v, if part.contains('/') { hi } else { v })
        };
        if start > end {
            return Err(format!("range {range:?} runs backwards"));
        }
        for v in (start..=end).step_by(step as usize) {
            bits |= 1 << v;
        }
    }
    Ok(bits)
}

fn value(text: &str, lo: u32, hi: u32, names: &[&str]) -> Result<u32, String> {
    let lower = text.to_ascii_lowercase();
    let offset = if names.len() == 12 { 1 } else { 0 };
    if let Some(i) = names.iter().position(|n| *n == lower) {
        return Ok(i as u32 + offset);
    }
    let v: u32 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    if v < lo || v > hi {
        return Err(format!("{v} is outside {lo}-{hi}"));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dt(s: &str) -> DateTime {
        s.parse().expect("datetime")
    }

    #[test]
    fn weekday_mornings() {
        let c = Cron::parse("0 8 * * 1-5").expect("cron");
        // 2026-11-30 is a Monday.
        assert_eq!(
            c.latest_at_or_before(dt("2026-11-30T09:15")),
            Some(dt("2026-11-30T08:00"))
        );
        assert_eq!(
            c.latest_at_or_before(dt("2026-11-30T07:59")),
            Some(dt("2026-11-27T08:00"))
        );
        assert_eq!(
            c.latest_at_or_before(dt("2026-11-30T08:00")),
            Some(dt("2026-11-30T08:00"))
        );
    }

    #[test]
    fn steps_lists_and_names() {
        let c = Cron::parse("*/15 9,17 * JAN-MAR sun").expect("cron");
        assert_eq!(
            c.latest_at_or_before(dt("2026-01-04T17:40")),
            Some(dt("2026-01-04T17:30"))
        );
        let seven = Cron::parse("0 0 * * 7").expect("cron");
        assert_eq!(
            seven.latest_at_or_before(dt("2026-11-30T10:00")),
            Some(dt("2026-11-29T00:00"))
        );
    }

    #[test]
    fn a_step_past_the_range_matches_only_the_start() {
        let c = Cron::parse("1/4294967295 * * * *").expect("cron");
        assert_eq!(
            c.latest_at_or_before(dt("2026-11-30T09:59")),
            Some(dt("2026-11-30T09:01"))
        );
    }

    #[test]
    fn a_starred_step_in_a_day_field_leaves_the_other_day_field_in_charge() {
        // Mondays only: `*/2` counts as `*` (Vixie cron), so it does not add the odd days of
        // the month as a restricted day-of-month would.
        let c = Cron::parse("0 8 */2 * 1").expect("cron");
        // 2026-11-30 and 2026-11-23 are Mondays; the 29th is an odd-numbered Sunday.
        assert_eq!(
            c.latest_at_or_before(dt("2026-11-30T09:00")),
            Some(dt("2026-11-30T08:00"))
        );
        assert_eq!(
            c.latest_at_or_before(dt("2026-11-29T09:00")),
            Some(dt("2026-11-23T08:00"))
        );
    }

    #[test]
    fn bad_expressions_name_the_field() {
        for (bad, what) in [
            ("0 8 * *", "has 4 fields"),
            ("61 * * * *", "minute field"),
            ("* 24 * * *", "hour field"),
            ("* * 0 * *", "day-of-month field"),
            ("* * * 13 *", "month field"),
            ("* * * * 8", "day-of-week field"),
            ("*/0 * * * *", "step of 0"),
            ("5-1 * * * *", "backwards"),
            ("x * * * *", "not a number"),
        ] {
            let err = Cron::parse(bad).expect_err(bad);
            assert!(err.0.contains(what), "{bad}: {err}");
        }
    }
}
