//! Retention as a pure plan: from the folders at one destination, the rules and "now" to a
//! decision for every folder, with its reasons. `prune` prints the plan (`--dry-run`) or
//! carries it out; nothing here touches storage or reads the clock.
//!
//! Safety rules that no setting can override (DESIGN.md guarantee 3):
//! - `RETENTION_DAYS=N` keeps every complete backup younger than N days plus the newest one
//!   older than that, so the whole window stays restorable (pgBackRest's time rule);
//! - the `KEEP_LAST` newest complete backups are kept whatever their age, so dumps that stop
//!   or a clock that jumps ahead never shrink a destination below that;
//! - the newest complete backup is never deleted, whatever its age;
//! - pinned folders are never deleted, nor folders with an invalid name, nor folders from the
//!   future (a clock that went backwards);
//! - the newest incomplete folder is never deleted (it may be a run in progress elsewhere);
//!   other incomplete folders go only once they are older than a day;
//! - a partial backup is deleted only when a newer complete backup exists;
//! - a local folder not yet at every enabled destination is kept.

use std::collections::HashSet;

use chrono::{DateTime, Datelike, Duration, Utc};
use serde::Serialize;

use crate::config::RetentionRules;
use crate::storage::{FolderEntry, FolderStatus};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Keep,
    Delete,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlanItem {
    pub folder: String,
    pub status: FolderStatus,
    pub decision: Decision,
    pub reasons: Vec<String>,
    pub bytes: u64,
}

/// What one destination's prune would do.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Plan {
    pub items: Vec<PlanItem>,
}

impl Plan {
    pub fn deletions(&self) -> impl Iterator<Item = &PlanItem> {
        self.items.iter().filter(|i| i.decision == Decision::Delete)
    }
}

/// Everything the plan depends on besides the folders themselves.
pub struct Context<'a> {
    pub rules: RetentionRules,
    pub now: DateTime<Utc>,
    /// For local folders: why a folder must stay because a destination lacks it.
    pub not_shipped: &'a dyn Fn(&FolderEntry) -> Option<String>,
    /// Work folders of a local `dump` are leftovers (prune holds the lock, so no dump runs).
    pub work_folders_are_leftovers: bool,
}

const LEFTOVER_AGE_HOURS: i64 = 24;

pub fn plan(entries: &[FolderEntry], ctx: &Context<'_>) -> Plan {
    let facts = Facts::gather(entries, ctx);
    Plan {
        items: entries.iter().map(|e| decide(e, ctx, &facts)).collect(),
    }
}

/// What the rules need to know about the destination as a whole before judging a folder.
struct Facts {
    /// "N days", for reasons.
    span: String,
    /// Backups older than this are outside the window.
    cutoff: DateTime<Utc>,
    newest_complete: Option<String>,
    newest_complete_time: Option<DateTime<Utc>>,
    keep_last: HashSet<String>,
    newest_before_window: Option<String>,
    newest_incomplete: Option<String>,
    gfs_daily: HashSet<String>,
    gfs_weekly: HashSet<String>,
    gfs_monthly: HashSet<String>,
}

impl Facts {
    fn gather(entries: &[FolderEntry], ctx: &Context<'_>) -> Facts {
        let days = ctx.rules.days.max(1) as i64;
        let cutoff = ctx.now - Duration::days(days);
        let is_backup = |e: &FolderEntry| e.folder.is_some() && !e.work_folder;
        let complete: Vec<&FolderEntry> = sorted_newest_first(
            entries
                .iter()
                .filter(|e| is_backup(e) && e.status == FolderStatus::Complete)
                .filter(|e| time(e) <= ctx.now),
        );
        let newest_incomplete = sorted_newest_first(
            entries
                .iter()
                .filter(|e| is_backup(e) && e.status == FolderStatus::Incomplete),
        )
        .first()
        .map(|e| e.name.clone());
        Facts {
            span: crate::human::count(days as u64, "day", "days"),
            cutoff,
            newest_complete: complete.first().map(|e| e.name.clone()),
            newest_complete_time: complete.first().map(|e| time(e)),
            keep_last: complete
                .iter()
                .take(ctx.rules.keep_last as usize)
                .map(|e| e.name.clone())
                .collect(),
            newest_before_window: complete
                .iter()
                .find(|e| time(e) < cutoff)
                .map(|e| e.name.clone()),
            newest_incomplete,
            gfs_daily: keep_newest_per(&complete, ctx.rules.keep_daily, |t| {
                (t.year(), t.ordinal(), 0)
            }),
            gfs_weekly: keep_newest_per(&complete, ctx.rules.keep_weekly, |t| {
                let w = t.iso_week();
                (w.year(), w.week(), 0)
            }),
            gfs_monthly: keep_newest_per(&complete, ctx.rules.keep_monthly, |t| {
                (t.year(), t.month(), 0)
            }),
        }
    }
}

/// One folder's decision: kept with every reason that holds, else deleted with its reason.
fn decide(e: &FolderEntry, ctx: &Context<'_>, facts: &Facts) -> PlanItem {
    let mut keep: Vec<String> = Vec::new();
    let mut delete_reason = String::new();
    match (&e.folder, e.work_folder) {
        (None, _) => keep.push("invalid name: never touched".into()),
        (Some(_), true) => {
            if ctx.work_folders_are_leftovers {
                delete_reason = "work folder of a dump that did not finish".into();
            } else {
                keep.push("work folder of a dump that may be running".into());
            }
        }
        (Some(_), false) => delete_reason = judge_backup(e, ctx, facts, &mut keep),
    }
    let decision = if keep.is_empty() {
        Decision::Delete
    } else {
        Decision::Keep
    };
    PlanItem {
        folder: e.name.clone(),
        status: e.status,
        decision,
        reasons: if keep.is_empty() {
            vec![delete_reason]
        } else {
            keep
        },
        bytes: e.size(),
    }
}

/// A backup folder (valid name, not a work folder): pushes why it stays to `keep`, returns
/// why it would go.
fn judge_backup(
    e: &FolderEntry,
    ctx: &Context<'_>,
    facts: &Facts,
    keep: &mut Vec<String>,
) -> String {
    let t = time(e);
    if e.pinned {
        keep.push("pinned".into());
    }
    if t > ctx.now {
        keep.push("from the future: the clock may have gone back; never deleted".into());
    }
    let delete_reason = match e.status {
        FolderStatus::Invalid => {
            keep.push(format!(
                "unreadable manifest: never touched ({})",
                e.note.as_deref().unwrap_or("invalid")
            ));
            String::new()
        }
        FolderStatus::Complete => judge_complete(e, t, ctx, facts, keep),
        FolderStatus::Partial => judge_partial(t, facts, keep),
        FolderStatus::Incomplete => judge_incomplete(e, t, ctx, facts, keep),
    };
    if e.status.has_manifest()
        && let Some(why) = (ctx.not_shipped)(e)
    {
        keep.push(why);
    }
    delete_reason
}

fn judge_complete(
    e: &FolderEntry,
    t: DateTime<Utc>,
    ctx: &Context<'_>,
    facts: &Facts,
    keep: &mut Vec<String>,
) -> String {
    let span = &facts.span;
    if facts.newest_complete.as_deref() == Some(e.name.as_str()) {
        keep.push("newest complete backup".into());
    } else if facts.keep_last.contains(e.name.as_str()) {
        keep.push(format!(
            "one of the {} newest complete backups (keep-last)",
            ctx.rules.keep_last
        ));
    }
    if t >= facts.cutoff && t <= ctx.now {
        keep.push(format!("younger than {span}"));
    }
    if facts.newest_before_window.as_deref() == Some(e.name.as_str()) {
        keep.push(format!(
            "newest backup older than {span}: keeps the whole window restorable"
        ));
    }
    for (set, what) in [
        (&facts.gfs_daily, "daily"),
        (&facts.gfs_weekly, "weekly"),
        (&facts.gfs_monthly, "monthly"),
    ] {
        if set.contains(e.name.as_str()) {
            keep.push(format!("keep-{what}"));
        }
    }
    format!("older than {span}")
}

fn judge_partial(t: DateTime<Utc>, facts: &Facts, keep: &mut Vec<String>) -> String {
    let span = &facts.span;
    if t >= facts.cutoff {
        keep.push(format!("partial backup younger than {span}"));
    }
    if facts.newest_complete_time.is_none_or(|n| n < t) {
        keep.push("partial backup with no newer complete backup".into());
    }
    format!("partial backup older than {span}")
}

fn judge_incomplete(
    e: &FolderEntry,
    t: DateTime<Utc>,
    ctx: &Context<'_>,
    facts: &Facts,
    keep: &mut Vec<String>,
) -> String {
    let age = ctx.now - e.modified.map_or(t, |m| m.max(t));
    if e.made_by_scripts() {
        keep.push(
            "made by the backup scripts: `pg-backups adopt` checks it and makes it a backup".into(),
        );
    }
    if facts.newest_incomplete.as_deref() == Some(e.name.as_str()) {
        keep.push("newest incomplete folder: may be a run in progress".into());
    } else if age < Duration::hours(LEFTOVER_AGE_HOURS) {
        keep.push("incomplete, less than a day old".into());
    }
    "incomplete leftover of an interrupted run".into()
}

fn time(e: &FolderEntry) -> DateTime<Utc> {
    e.folder
        .as_ref()
        .map(|f| f.time())
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

fn sorted_newest_first<'a>(it: impl Iterator<Item = &'a FolderEntry>) -> Vec<&'a FolderEntry> {
    let mut v: Vec<&FolderEntry> = it.collect();
    v.sort_by(|a, b| b.folder.cmp(&a.folder));
    v
}

/// restic's `--keep-daily n`: for the last `n` periods that have a backup, the newest one.
fn keep_newest_per<K: Eq + std::hash::Hash>(
    newest_first: &[&FolderEntry],
    n: u32,
    period: impl Fn(DateTime<Utc>) -> K,
) -> HashSet<String> {
    let mut seen = HashSet::new();
    let mut kept = HashSet::new();
    for e in newest_first {
        if seen.len() >= n as usize {
            break;
        }
        if seen.insert(period(time(e))) {
            kept.insert(e.name.clone());
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::FolderName;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn entry(name: &str, status: FolderStatus) -> FolderEntry {
        let folder = FolderName::parse(name);
        FolderEntry {
            name: name.to_string(),
            folder: folder.clone(),
            status: if folder.is_none() {
                FolderStatus::Invalid
            } else {
                status
            },
            manifest: None,
            pinned: false,
            bytes: 100,
            modified: folder.map(|f| f.time()),
            note: None,
            work_folder: false,
            files: Vec::new(),
        }
    }

    fn rules(days: u32) -> RetentionRules {
        RetentionRules {
            days,
            keep_last: 0,
            keep_daily: 0,
            keep_weekly: 0,
            keep_monthly: 0,
        }
    }

    fn run(entries: &[FolderEntry], rules: RetentionRules, now: &str) -> Vec<(String, Decision)> {
        let ctx = Context {
            rules,
            now: at(now),
            not_shipped: &|_| None,
            work_folders_are_leftovers: false,
        };
        plan(entries, &ctx)
            .items
            .into_iter()
            .map(|i| (i.folder, i.decision))
            .collect()
    }

    fn deleted(result: &[(String, Decision)]) -> Vec<&str> {
        let mut v: Vec<&str> = result
            .iter()
            .filter(|(_, d)| *d == Decision::Delete)
            .map(|(n, _)| n.as_str())
            .collect();
        v.sort();
        v
    }

    use FolderStatus::{Complete, Incomplete, Partial};

    #[test]
    fn everything_older_than_retention_keeps_the_newest_complete() {
        let e = [
            entry("20250101_000000", Complete),
            entry("20250102_000000", Complete),
            entry("20250103_000000", Complete),
        ];
        let r = run(&e, rules(7), "2025-06-01T00:00:00Z");
        assert_eq!(deleted(&r), ["20250101_000000", "20250102_000000"]);
    }

    #[test]
    fn the_window_and_the_newest_backup_before_it_are_kept() {
        let e = [
            entry("20250101_000000", Complete),
            entry("20250105_000000", Complete),
            entry("20250108_000000", Complete),
            entry("20250110_000000", Complete),
        ];
        // 7 days before Jan 11 is Jan 4: Jan 5, 8 and 10 are inside the window, and Jan 1,
        // the newest backup before it, is what a restore to Jan 4 needs.
        let r = run(&e, rules(7), "2025-01-11T00:00:00Z");
        assert_eq!(deleted(&r), Vec::<&str>::new());
        // 3 days: the window starts Jan 8; Jan 5 covers its start, Jan 1 is not needed.
        let r = run(&e, rules(3), "2025-01-11T00:00:00Z");
        assert_eq!(deleted(&r), ["20250101_000000"]);
    }

    #[test]
    fn only_partial_and_incomplete_folders_are_kept_but_stale_leftovers_go() {
        let e = [
            entry("20250101_000000", Partial),
            entry("20250102_000000", Partial),
            entry("20250103_000000", Incomplete),
            entry("20250104_000000", Incomplete),
        ];
        let r = run(&e, rules(1), "2025-06-01T00:00:00Z");
        assert_eq!(
            deleted(&r),
            ["20250103_000000"],
            "the newest incomplete may be running"
        );
    }

    #[test]
    fn partial_backups_go_once_a_newer_complete_one_exists() {
        let e = [
            entry("20250101_000000", Partial),
            entry("20250102_000000", Complete),
            entry("20250103_000000", Partial),
        ];
        let r = run(&e, rules(1), "2025-06-01T00:00:00Z");
        assert_eq!(deleted(&r), ["20250101_000000"]);
    }

    #[test]
    fn clock_in_the_past_keeps_folders_from_the_future() {
        let e = [
            entry("20250101_000000", Complete),
            entry("20300101_000000", Complete),
            entry("20300102_000000", Complete),
        ];
        let r = run(&e, rules(1), "2025-03-01T00:00:00Z");
        assert_eq!(
            deleted(&r),
            Vec::<&str>::new(),
            "future folders kept, Jan 1 is the newest real one"
        );
    }

    #[test]
    fn same_timestamp_work_folder_and_backup_are_judged_apart() {
        let mut work = entry("20250101_000000", Incomplete);
        work.name = ".20250101_000000.partial".into();
        work.work_folder = true;
        let e = [entry("20250101_000000", Complete), work];
        let ctx = Context {
            rules: rules(1),
            now: at("2025-06-01T00:00:00Z"),
            not_shipped: &|_| None,
            work_folders_are_leftovers: true,
        };
        let p = plan(&e, &ctx);
        let d: Vec<&str> = p.deletions().map(|i| i.folder.as_str()).collect();
        assert_eq!(d, [".20250101_000000.partial"]);
    }

    #[test]
    fn invalid_names_are_never_deleted() {
        let e = [
            entry("../../etc", Complete),
            entry("20250101_000000;rm -rf ~", Complete),
            entry("20250101_000000", Complete),
        ];
        let r = run(&e, rules(1), "2026-01-01T00:00:00Z");
        assert_eq!(deleted(&r), Vec::<&str>::new());
    }

    #[test]
    fn pinned_folders_and_unshipped_local_folders_stay() {
        let mut pinned = entry("20250101_000000", Complete);
        pinned.pinned = true;
        let e = [
            pinned,
            entry("20250102_000000", Complete),
            entry("20250103_000000", Complete),
        ];
        let ctx = Context {
            rules: rules(1),
            now: at("2026-01-01T00:00:00Z"),
            not_shipped: &|e| {
                (e.name == "20250102_000000").then(|| "not shipped to s3".to_string())
            },
            work_folders_are_leftovers: false,
        };
        let p = plan(&e, &ctx);
        assert_eq!(p.deletions().count(), 0);
        let why = &p.items[1].reasons;
        assert_eq!(why, &["not shipped to s3"]);
        assert_eq!(p.items[0].reasons, ["pinned"]);
    }

    #[test]
    fn keep_daily_weekly_monthly_keep_the_newest_of_each_period() {
        // One backup every 6 hours for 70 days.
        let start = at("2025-01-01T00:00:00Z");
        let e: Vec<FolderEntry> = (0..280)
            .map(|i| {
                let t = start + Duration::hours(6 * i);
                entry(FolderName::from_time(t).as_str(), Complete)
            })
            .collect();
        let now = "2025-03-12T00:00:00Z";
        let mut r = rules(1);
        r.keep_daily = 7;
        r.keep_weekly = 4;
        r.keep_monthly = 3;
        let result = run(&e, r, now);
        let kept: Vec<&str> = result
            .iter()
            .filter(|(_, d)| *d == Decision::Keep)
            .map(|(n, _)| n.as_str())
            .collect();
        // Window (1 day: 4 backups + the one before) + 7 daily + 4 weekly + 3 monthly,
        // overlapping on the newest days.
        assert!(kept.contains(&"20250311_180000"), "newest");
        assert!(
            kept.contains(&"20250131_180000"),
            "newest of January (monthly)"
        );
        assert!(kept.contains(&"20250305_180000"), "daily, 6 days back");
        assert!(
            !kept.contains(&"20250305_120000"),
            "not the newest of its day"
        );
        assert!(
            kept.contains(&"20250302_180000"),
            "weekly: newest of ISO week 9 (Sunday)"
        );
        assert!(kept.len() < 20, "{kept:?}");
    }

    #[test]
    fn stale_incomplete_leftovers_go_only_after_a_day() {
        let e = [
            entry("20250601_000000", Complete),
            entry("20250531_120000", Incomplete),
            entry("20250531_230000", Incomplete),
            entry("20250601_010000", Incomplete),
        ];
        let r = run(&e, rules(1), "2025-06-01T02:00:00Z");
        assert_eq!(
            deleted(&r),
            Vec::<&str>::new(),
            "less than a day old, or the newest"
        );
        let r = run(&e, rules(1), "2025-06-02T02:00:00Z");
        assert_eq!(deleted(&r), ["20250531_120000", "20250531_230000"]);
    }

    #[test]
    fn keep_last_keeps_the_newest_whatever_their_age() {
        let e = [
            entry("20250101_000000", Complete),
            entry("20250102_000000", Complete),
            entry("20250103_000000", Complete),
            entry("20250104_000000", Complete),
            entry("20250105_000000", Partial),
        ];
        let mut r = rules(1);
        r.keep_last = 3;
        // A clock that jumped a year ahead: every backup looks old.
        let result = run(&e, r, "2026-01-10T00:00:00Z");
        assert_eq!(deleted(&result), ["20250101_000000"]);
        r.keep_last = 10;
        assert_eq!(
            deleted(&run(&e, r, "2026-01-10T00:00:00Z")),
            Vec::<&str>::new()
        );
    }
}
