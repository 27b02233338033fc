//! Retention: the committed runs of one set in one cycle in, a verdict with its reason for each
//! out. Pure: `now` is a parameter, nothing is deleted here.
//!
//! A run is kept when
//! - it holds its slot: it belongs to the newest period that used the slot (a forced run joins
//!   the period it was forced in, so forcing never pushes a committed run out);
//! - it is a HanoiCycle permanent archive (ArchiveOldestDisc: every run of the largest disc);
//! - it is one of the newest MinimumRedundancy + 1 restore points (only with RetentionPolicy);
//! - a kept run depends on it: a DIFF needs its base, and the base's base, down to the FULL.
//!
//! RetentionPolicy DAYS retires slot holders older than DAYS, but never below the minimum
//! redundancy. Because dependencies are closed over last, no kept DIFF ever lacks its chain.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use chrono::{DateTime, Utc};

use super::cycle::CycleType;
use crate::schema::layout::{Kind, RunId};

/// What retention needs to know of a committed run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRef {
    pub run: RunId,
    pub kind: Kind,
    pub base: Option<RunId>,
    pub slot: Option<u64>,
    pub period: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    pub cycle_type: CycleType,
    pub discs: u64,
    pub archive_oldest_disc: bool,
    pub retention_days: Option<u64>,
    pub minimum_redundancy: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    HoldsSlot {
        slot: u64,
        period: u64,
    },
    /// Recorded without a slot (not made by a cycle): never rotated out.
    OutsideRotation,
    PermanentArchive,
    MinimumRedundancy {
        newest: u64,
    },
    BaseOf(RunId),
    SlotTakenOver {
        slot: u64,
        by: RunId,
    },
    OlderThan {
        days: u64,
    },
    /// Retired by the rules (`then`), but its objects are under Object Lock until `until` on
    /// the server's clock: kept, and retired by a prune after that (set by `prune`, not here).
    Locked {
        until: chrono::DateTime<chrono::Utc>,
        then: Box<Reason>,
    },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::HoldsSlot { slot, period } => write!(f, "holds slot {slot} (backup #{period})"),
            Reason::OutsideRotation => write!(f, "not part of a rotation"),
            Reason::PermanentArchive => write!(f, "permanent archive of the oldest disc"),
            Reason::MinimumRedundancy { newest } => {
                write!(
                    f,
                    "one of the {newest} newest restore points (MinimumRedundancy)"
                )
            }
            Reason::BaseOf(run) => write!(f, "base of kept run {run}"),
            Reason::SlotTakenOver { slot, by } => write!(f, "slot {slot} now held by {by}"),
            Reason::OlderThan { days } => write!(f, "older than RetentionPolicy {days} days"),
            Reason::Locked { until, then } => write!(
                f,
                "kept: locked until {}; then retired by a later prune ({then})",
                until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub run: RunId,
    pub keep: bool,
    pub reason: Reason,
}

/// Is the chain of `run` complete among `runs` (its FULL and every DIFF in between present)?
pub fn restorable(run: &RunRef, by_id: &HashMap<RunId, &RunRef>) -> bool {
    let mut current = run;
    let mut steps = 0;
    while current.kind == Kind::Diff {
        let Some(base) = current.base.and_then(|b| by_id.get(&b)) else {
            return false;
        };
        current = base;
        steps += 1;
        if steps > by_id.len() {
            return false; // a cycle in base links: corrupt catalog
        }
    }
    true
}

/// A verdict for every run of `runs`, in run order.
pub fn evaluate(runs: &[RunRef], rules: &Rules, now: DateTime<Utc>) -> Vec<Verdict> {
    let newest = newest_periods(runs);
    let mut judgement = Judgement {
        by_id: runs.iter().map(|r| (r.run, r)).collect(),
        keep: BTreeMap::new(),
        retire: BTreeMap::new(),
    };
    for r in runs {
        judgement.by_slot_and_age(r, rules, now, &newest);
    }
    if rules.retention_days.is_some() {
        judgement.keep_newest_points(runs, rules.minimum_redundancy + 1);
    }
    // Close over dependencies: a kept DIFF keeps its whole chain.
    judgement.keep_bases();
    judgement.into_verdicts()
}

/// Newest period of each slot, and its newest run.
fn newest_periods(runs: &[RunRef]) -> HashMap<u64, (u64, RunId)> {
    let mut newest: HashMap<u64, (u64, RunId)> = HashMap::new();
    for r in runs {
        if let (Some(slot), Some(period)) = (r.slot, r.period) {
            let entry = newest.entry(slot).or_insert((period, r.run));
            if (period, r.run) > *entry {
                *entry = (period, r.run);
            }
        }
    }
    newest
}

/// The verdicts as the rules reach them: after slots and age, the later rules only move runs
/// from `retire` to `keep`.
struct Judgement<'r> {
    by_id: HashMap<RunId, &'r RunRef>,
    keep: BTreeMap<RunId, Reason>,
    retire: BTreeMap<RunId, Reason>,
}

impl Judgement<'_> {
    /// Keeps a permanent archive, and a slot holder or a run outside rotation unless it is
    /// older than RetentionPolicy; retires the rest.
    fn by_slot_and_age(
        &mut self,
        r: &RunRef,
        rules: &Rules,
        now: DateTime<Utc>,
        newest: &HashMap<u64, (u64, RunId)>,
    ) {
        let archive = rules.cycle_type == CycleType::Hanoi
            && rules.archive_oldest_disc
            && r.slot == Some(rules.discs.saturating_sub(1));
        let reason = match (r.slot, r.period) {
            _ if archive => {
                self.keep.insert(r.run, Reason::PermanentArchive);
                return;
            }
            (Some(slot), Some(period)) => {
                let (top, by) = newest[&slot];
                if period == top {
                    Reason::HoldsSlot { slot, period }
                } else {
                    self.retire
                        .insert(r.run, Reason::SlotTakenOver { slot, by });
                    return;
                }
            }
            _ => Reason::OutsideRotation,
        };
        let too_old = rules.retention_days.is_some_and(|days| {
            now.signed_duration_since(r.run.0).num_seconds() > days as i64 * 86_400
        });
        if too_old {
            self.retire.insert(
                r.run,
                Reason::OlderThan {
                    days: rules.retention_days.unwrap_or_default(),
                },
            );
        } else {
            self.keep.insert(r.run, reason);
        }
    }

    /// Keeps the newest `newest_points` restore points of `runs`, whatever their age.
    fn keep_newest_points(&mut self, runs: &[RunRef], newest_points: u64) {
        let mut points: Vec<&RunRef> = runs.iter().filter(|r| restorable(r, &self.by_id)).collect();
        points.sort_by_key(|r| std::cmp::Reverse(r.run));
        for r in points.into_iter().take(newest_points as usize) {
            if self.retire.remove(&r.run).is_some() {
                self.keep.insert(
                    r.run,
                    Reason::MinimumRedundancy {
                        newest: newest_points,
                    },
                );
            }
        }
    }

    /// Keeps the base of every kept DIFF, and the base's base, down to the FULL.
    fn keep_bases(&mut self) {
        let mut queue: Vec<RunId> = self.keep.keys().copied().collect();
        while let Some(id) = queue.pop() {
            let Some(base) = self.by_id.get(&id).and_then(|r| r.base) else {
                continue;
            };
            if self.retire.remove(&base).is_some() {
                self.keep.insert(base, Reason::BaseOf(id));
                queue.push(base);
            }
        }
    }

    fn into_verdicts(self) -> Vec<Verdict> {
        let mut verdicts: Vec<Verdict> = self
            .keep
            .into_iter()
            .map(|(run, reason)| Verdict {
                run,
                keep: true,
                reason,
            })
            .chain(self.retire.into_iter().map(|(run, reason)| Verdict {
                run,
                keep: false,
                reason,
            }))
            .collect();
        verdicts.sort_by_key(|v| v.run);
        verdicts
    }
}
