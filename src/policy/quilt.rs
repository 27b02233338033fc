//! Which quilt content objects gc may delete: one content object (its age and lock, as the
//! store reports them) and the content keys the manifests reference in, a verdict with its
//! reason out. Pure: `now` (the store's clock) and the grace period are parameters.
//!
//! A content object goes only when all of these hold: no manifest of any host references it;
//! the store dates it (an object without a time is never deleted on a guess); it is older than
//! the grace period, because a run still uploading has stored its new content but not yet its
//! manifest; and no Object Lock retention holds it beyond `now` (S3 would refuse the deletion:
//! gc keeps it and says so, as prune does with a locked run). The same age rule applies to a
//! multipart upload left open under the quilt's prefix, dated from its start.

use std::collections::BTreeSet;
use std::fmt;

use chrono::{DateTime, Duration, Utc};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// A manifest names it.
    Referenced,
    /// The store gave no time for it.
    AgeUnknown,
    /// Younger than the grace period: perhaps a run that has not committed yet.
    Young {
        modified: DateTime<Utc>,
        grace: Duration,
    },
    /// Object Lock retention runs until this date.
    Locked { until: DateTime<Utc> },
    /// No manifest references it and it is older than the grace period.
    Unreferenced { modified: DateTime<Utc> },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let time = |t: &DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        match self {
            Reason::Referenced => write!(f, "referenced by a manifest"),
            Reason::AgeUnknown => write!(f, "the store gives no time for it"),
            Reason::Young { modified, grace } => write!(
                f,
                "unreferenced, but stored {} (younger than the grace period of {}; perhaps a \
                 run that has not committed yet)",
                time(modified),
                span(*grace)
            ),
            Reason::Locked { until } => {
                write!(f, "unreferenced, but locked until {}", time(until))
            }
            Reason::Unreferenced { modified } => {
                write!(f, "no manifest references it; stored {}", time(modified))
            }
        }
    }
}

/// A span as `--grace` takes it: `7d`, `36h`, `15m`, `30s`.
pub fn span(d: Duration) -> String {
    let s = d.num_seconds();
    for (unit, secs) in [("d", 86_400), ("h", 3600), ("m", 60)] {
        if s != 0 && s % secs == 0 {
            return format!("{}{unit}", s / secs);
        }
    }
    format!("{s}s")
}

/// Whether content object `key` may be deleted: `modified` and `lock_until` as the store
/// reports them (a listing gives no lock: judge again with the HEAD's before deleting).
pub fn judge(
    key: &str,
    modified: Option<DateTime<Utc>>,
    lock_until: Option<DateTime<Utc>>,
    referenced: &BTreeSet<String>,
    now: DateTime<Utc>,
    grace: Duration,
) -> (bool, Reason) {
    if referenced.contains(key) {
        return (false, Reason::Referenced);
    }
    let Some(modified) = modified else {
        return (false, Reason::AgeUnknown);
    };
    if now - modified < grace {
        return (false, Reason::Young { modified, grace });
    }
    if let Some(until) = lock_until.filter(|u| *u > now) {
        return (false, Reason::Locked { until });
    }
    (true, Reason::Unreferenced { modified })
}

/// Whether a multipart upload left open under the quilt's prefix, started at `initiated`, may
/// be aborted: only once it is older than the grace period (a run may upload a large file for
/// a long time; S3 dates the upload from its start).
pub fn stale_upload(initiated: Option<DateTime<Utc>>, now: DateTime<Utc>, grace: Duration) -> bool {
    initiated.is_some_and(|t| now - t >= grace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_with_their_reasons() {
        let t = |h: i64| DateTime::from_timestamp(1_800_000_000 + h * 3600, 0).unwrap();
        let now = t(24 * 10);
        let grace = Duration::days(7);
        let referenced: BTreeSet<String> = ["quilt/content/a".to_string()].into();
        let old = Some(t(0));
        let young = Some(t(24 * 10 - 1));
        // key, modified, locked until, deleted, reason.
        type Case = (
            &'static str,
            Option<DateTime<Utc>>,
            Option<DateTime<Utc>>,
            bool,
            &'static str,
        );
        let cases: &[Case] = &[
            // Referenced: kept however old, locked or not.
            (
                "quilt/content/a",
                old,
                None,
                false,
                "referenced by a manifest",
            ),
            ("quilt/content/b", None, None, false, "no time"),
            (
                "quilt/content/b",
                young,
                None,
                false,
                "younger than the grace period of 7d",
            ),
            // Exactly the grace period old: old enough.
            (
                "quilt/content/b",
                Some(now - grace),
                None,
                true,
                "no manifest references it",
            ),
            (
                "quilt/content/b",
                Some(now - grace + Duration::seconds(1)),
                None,
                false,
                "younger",
            ),
            (
                "quilt/content/b",
                old,
                Some(t(24 * 11)),
                false,
                "locked until 2027-01-",
            ),
            // A lock that has expired holds nothing.
            (
                "quilt/content/b",
                old,
                Some(now),
                true,
                "no manifest references it",
            ),
            (
                "quilt/content/b",
                old,
                None,
                true,
                "stored 2027-01-15T08:00:00Z",
            ),
        ];
        for (key, modified, lock, delete, why) in cases {
            let (d, reason) = judge(key, *modified, *lock, &referenced, now, grace);
            assert_eq!(d, *delete, "{key} {modified:?} {lock:?}: {reason}");
            assert!(reason.to_string().contains(why), "{key}: {reason}");
        }
        assert!(stale_upload(old, now, grace));
        assert!(!stale_upload(young, now, grace));
        assert!(!stale_upload(None, now, grace));
    }

    #[test]
    fn spans_read_as_they_are_written() {
        assert_eq!(span(Duration::days(7)), "7d");
        assert_eq!(span(Duration::hours(36)), "36h");
        assert_eq!(span(Duration::seconds(90)), "90s");
        assert_eq!(span(Duration::zero()), "0s");
    }
}
