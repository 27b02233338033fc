//! Which replica versions gc may delete: one version (with when it was superseded) and what
//! the kept snapshots reference in, a verdict with its reason out. Pure.
//!
//! A version goes only when all of these hold: it is not current; no kept snapshot references
//! it; it was superseded before the newest kept snapshot began listing (so the history since
//! the last snapshot stays, and a version replaced while a snapshot was listing is never
//! mistaken for an unreferenced one); and — checked per deletion, whatever retention decided —
//! none of the newest MinimumRedundancy+1 snapshots references it. Version ids `null` (written
//! before versioning was enabled) are shared by many keys, so one referenced `null` keeps them
//! all.

use std::collections::BTreeSet;
use std::fmt;

use chrono::{DateTime, Utc};

/// What protects versions from gc.
pub struct Protection<'a> {
    /// Version ids referenced by the snapshots retention keeps.
    pub kept: &'a BTreeSet<String>,
    /// Version ids referenced by the newest MinimumRedundancy+1 snapshots.
    pub guarded: &'a BTreeSet<String>,
    /// When the newest kept snapshot began listing.
    pub newest: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    Current,
    Referenced,
    Guarded,
    SupersessionUnknown,
    SupersededAfterNewest(DateTime<Utc>),
    Unreferenced(DateTime<Utc>),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Current => write!(f, "current version"),
            Reason::Referenced => write!(f, "referenced by a kept snapshot"),
            Reason::Guarded => write!(
                f,
                "referenced by one of the newest MinimumRedundancy+1 snapshots"
            ),
            Reason::SupersessionUnknown => write!(f, "not known when it was superseded"),
            Reason::SupersededAfterNewest(t) => {
                write!(f, "superseded {t}, after the newest kept snapshot began")
            }
            Reason::Unreferenced(t) => write!(
                f,
                "superseded {t}, before the newest kept snapshot; no kept snapshot references it"
            ),
        }
    }
}

/// Whether version `id` may be deleted; `is_latest` and `superseded` as listed.
pub fn judge(
    id: &str,
    is_latest: bool,
    superseded: Option<DateTime<Utc>>,
    p: &Protection,
) -> (bool, Reason) {
    if is_latest {
        return (false, Reason::Current);
    }
    if p.kept.contains(id) {
        return (false, Reason::Referenced);
    }
    let Some(superseded) = superseded else {
        return (false, Reason::SupersessionUnknown);
    };
    if superseded >= p.newest {
        return (false, Reason::SupersededAfterNewest(superseded));
    }
    if p.guarded.contains(id) {
        return (false, Reason::Guarded);
    }
    (true, Reason::Unreferenced(superseded))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_with_their_reasons() {
        let t = |m: i64| DateTime::from_timestamp(1_800_000_000 + m * 60, 0).unwrap();
        let kept: BTreeSet<String> = ["k1", "null"].map(String::from).into();
        let guarded: BTreeSet<String> = ["g1"].map(String::from).into();
        let p = Protection {
            kept: &kept,
            guarded: &guarded,
            newest: t(100),
        };
        let cases: &[(&str, bool, Option<i64>, bool, &str)] = &[
            ("c1", true, None, false, "current version"),
            ("k1", false, Some(10), false, "referenced by a kept"),
            ("null", false, Some(10), false, "referenced by a kept"),
            ("u1", false, None, false, "not known"),
            ("u2", false, Some(100), false, "after the newest"),
            ("u3", false, Some(150), false, "after the newest"),
            ("g1", false, Some(10), false, "MinimumRedundancy"),
            (
                "u4",
                false,
                Some(99),
                true,
                "no kept snapshot references it",
            ),
        ];
        for (id, latest, superseded, delete, why) in cases {
            let (d, reason) = judge(id, *latest, superseded.map(t), &p);
            assert_eq!(d, *delete, "{id}");
            assert!(reason.to_string().contains(why), "{id}: {reason}");
        }
    }
}
