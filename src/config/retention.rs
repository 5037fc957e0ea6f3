//! Retention rules of each destination (DESIGN.md guarantee 3): `<DEST>_RETENTION_DAYS`,
//! `<DEST>_KEEP_LAST`, `<DEST>_KEEP_DAILY`, `<DEST>_KEEP_WEEKLY`, `<DEST>_KEEP_MONTHLY` for
//! `LOCAL`, `S3` and `RSYNC`.

use super::ConfigError;
use super::parse::parse_range;
use crate::cli::GlobalArgs;

/// Retention rules of one destination (DESIGN.md guarantee 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionRules {
    /// Keep every complete backup younger than this, plus the youngest older one. Never 0.
    pub days: u32,
    /// Keep the N newest complete backups whatever their age.
    pub keep_last: u32,
    pub keep_daily: u32,
    pub keep_weekly: u32,
    pub keep_monthly: u32,
}

impl RetentionRules {
    /// `LOCAL_*`.
    pub(super) fn local(args: &GlobalArgs) -> Result<RetentionRules, ConfigError> {
        retention(
            ("LOCAL_RETENTION_DAYS", &args.local_retention_days),
            ("LOCAL_KEEP_LAST", &args.local_keep_last),
            ("LOCAL_KEEP_DAILY", &args.local_keep_daily),
            ("LOCAL_KEEP_WEEKLY", &args.local_keep_weekly),
            ("LOCAL_KEEP_MONTHLY", &args.local_keep_monthly),
        )
    }

    /// `S3_*`, checked even while S3 is disabled, like every present value.
    pub(super) fn s3(args: &GlobalArgs) -> Result<RetentionRules, ConfigError> {
        retention(
            ("S3_RETENTION_DAYS", &args.s3_retention_days),
            ("S3_KEEP_LAST", &args.s3_keep_last),
            ("S3_KEEP_DAILY", &args.s3_keep_daily),
            ("S3_KEEP_WEEKLY", &args.s3_keep_weekly),
            ("S3_KEEP_MONTHLY", &args.s3_keep_monthly),
        )
    }

    /// `RSYNC_*`, checked even while rsync is disabled.
    pub(super) fn rsync(args: &GlobalArgs) -> Result<RetentionRules, ConfigError> {
        retention(
            ("RSYNC_RETENTION_DAYS", &args.rsync_retention_days),
            ("RSYNC_KEEP_LAST", &args.rsync_keep_last),
            ("RSYNC_KEEP_DAILY", &args.rsync_keep_daily),
            ("RSYNC_KEEP_WEEKLY", &args.rsync_keep_weekly),
            ("RSYNC_KEEP_MONTHLY", &args.rsync_keep_monthly),
        )
    }
}

fn retention(
    days: (&'static str, &str),
    last: (&'static str, &str),
    daily: (&'static str, &str),
    weekly: (&'static str, &str),
    monthly: (&'static str, &str),
) -> Result<RetentionRules, ConfigError> {
    let d = parse_range(days.0, days.1, 0, 100_000)?;
    if d == 0 {
        return Err(ConfigError::invalid(
            days.0,
            days.1,
            "0 would mean \"delete everything\" and is refused; use 1 or more days",
        ));
    }
    Ok(RetentionRules {
        days: d as u32,
        keep_last: parse_range(last.0, last.1, 0, 100_000)? as u32,
        keep_daily: parse_range(daily.0, daily.1, 0, 100_000)? as u32,
        keep_weekly: parse_range(weekly.0, weekly.1, 0, 100_000)? as u32,
        keep_monthly: parse_range(monthly.0, monthly.1, 0, 100_000)? as u32,
    })
}
