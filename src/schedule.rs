//! `BACKUP_SCHEDULE`: the cron schedule the shipped units run on, parsed as cron does (five
//! fields with lists, ranges, steps and names, or `@hourly`, `@daily`, `@weekly`,
//! `@monthly`, `@yearly`), so that `check` knows how old the newest backup may be: the longest
//! gap between two consecutive runs, plus a margin.

use std::time::Duration;

use chrono::{DateTime, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// A parsed schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
    text: String,
}

/// How far ahead runs are looked at: long enough for a schedule that runs on 29 February to
/// show its gap across a century year, short enough to stay quick.
const HORIZON_DAYS: i64 = 9 * 366;
/// Dense schedules (every minute) repeat long before the horizon; stop counting there.
const MAX_RUNS: usize = 50_000;

impl Schedule {
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let text = text.trim();
        let fields = text.split_whitespace().count();
        if !text.starts_with('@') && fields != 5 {
            return Err(format!(
                "expected 5 fields (minute hour day-of-month month day-of-week) or @hourly, \
                 @daily, @weekly, @monthly, @yearly; found {fields}"
            ));
        }
        if text.starts_with('@')
            && !matches!(
                text.to_ascii_lowercase().as_str(),
                "@yearly"
                    | "@annually"
                    | "@monthly"
                    | "@weekly"
                    | "@daily"
                    | "@midnight"
                    | "@hourly"
            )
        {
            return Err("expected @hourly, @daily, @weekly, @monthly or @yearly".into());
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(text)
            .map_err(|e| e.to_string())?;
        let schedule = Schedule {
            cron,
            text: text.to_string(),
        };
        if schedule.next_after(Utc::now()).is_none() {
            return Err("it never runs (no such date)".into());
        }
        Ok(schedule)
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.find_next_occurrence(&t, false).ok()
    }

    /// The longest time between two consecutive runs after `from`.
    pub fn longest_gap(&self, from: DateTime<Utc>) -> Option<Duration> {
        let end = from + chrono::Duration::days(HORIZON_DAYS);
        let mut previous = self.next_after(from)?;
        let mut longest = chrono::Duration::zero();
        for _ in 0..MAX_RUNS {
            let Some(next) = self.next_after(previous) else {
                break;
            };
            longest = longest.max(next - previous);
            if next > end {
                break;
            }
            previous = next;
        }
        longest.to_std().ok().filter(|d| !d.is_zero())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn gap(schedule: &str) -> u64 {
        Schedule::parse(schedule)
            .unwrap_or_else(|e| panic!("{schedule}: {e}"))
            .longest_gap(at("2025-01-01T00:00:00Z"))
            .unwrap()
            .as_secs()
    }

    #[test]
    fn the_longest_gap_of_common_schedules() {
        let h = 3600;
        let cases = [
            ("0 */6 * * *", 6 * h),
            ("15 3 * * *", 24 * h),
            ("*/30 * * * *", 1800),
            ("0 * * * *", h),
            ("0 2,14 * * *", 12 * h),
            ("0 1,5 * * *", 20 * h),
            ("0 3 * * 1", 7 * 24 * h),
            ("0 3 * * mon-fri", 3 * 24 * h),
            ("30 2 1 * *", 31 * 24 * h),
            ("0 0 1 jan,jul *", 184 * 24 * h),
            ("@hourly", h),
            ("@daily", 24 * h),
            ("@weekly", 7 * 24 * h),
            ("@monthly", 31 * 24 * h),
            ("0 9-17/4 * * *", 16 * h),
        ];
        for (schedule, secs) in cases {
            assert_eq!(gap(schedule), secs, "{schedule}");
        }
    }

    #[test]
    fn out_of_range_and_malformed_schedules_are_refused() {
        for bad in [
            "",
            "0 */6 * *",
            "0 0 */6 * * *",
            "61 * * * *",
            "0 24 * * *",
            "0 1,30 * * *",
            "0 0 32 * *",
            "0 0 * 13 *",
            "0 0 * * 8",
            "0 0 31 2 *",
            "x y z a b",
            "@reboot",
            "@every 5m",
        ] {
            assert!(Schedule::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
