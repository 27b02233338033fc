//! Planning: a set, its committed runs and the time in, what to do about it out — run (which
//! slot, FULL or DIFF, on which base, under which key) or skip (and why), and what retention
//! would retire afterwards. `-t` prints exactly this; a real run executes it. Pure: what a DIFF
//! needs from DiffDir ([`LocalStart`]) is filled in by `backup::Planner`, which both use.

use std::path::PathBuf;

use chrono::{DateTime, Utc};

use crate::config::SetSpec;
use crate::policy::cycle::{self, Due, Position};
use crate::policy::retention::{self, Rules, RunRef, Verdict};
use crate::schema::layout::{Kind, RunId};
use crate::schema::manifest::Manifest;
use crate::source::state::State;
use crate::source::Warning;

/// What a DIFF starts from: the base run's tree state, or its last Subversion revision.
#[derive(Debug, Clone, Default)]
pub enum BaseData {
    #[default]
    None,
    Tree(State),
    /// The base run's tree state in the file at `path`, whose header names `run`: its entries
    /// are parsed while the tree is walked (see `source::tree`).
    TreeFile {
        path: PathBuf,
        run: RunId,
    },
    Revision(u64),
}

/// What a run read from DiffDir while it was planned.
#[derive(Debug, Clone, Default)]
pub struct LocalStart {
    pub data: BaseData,
    /// Why a DIFF became a FULL; recorded in the run's manifest.
    pub warning: Option<Warning>,
    /// An old-format file `data` was read from: removed once the run's own file is saved.
    pub legacy: Option<PathBuf>,
    /// The staged file `data` was read from: its run committed but was interrupted before
    /// promoting it; promoted before this run stages its own.
    pub staged: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub enum Action {
    Run {
        position: Position,
        kind: Kind,
        run: RunId,
        /// The run a DIFF builds on.
        base: Option<Box<Manifest>>,
        forced: bool,
        /// Why the kind differs from the slot's, when it does.
        note: Option<String>,
        /// What the run starts from locally (a DIFF's base state).
        local: LocalStart,
    },
    Skip {
        reason: String,
    },
}

#[derive(Debug, Clone)]
pub struct SetPlan {
    pub set: SetSpec,
    pub action: Action,
    /// This set's committed runs in this cycle, oldest first.
    pub runs: Vec<Manifest>,
    /// Retention's verdicts over `runs` plus the planned run.
    pub verdicts: Vec<Verdict>,
}

/// Retention rules of a set.
pub fn rules(set: &SetSpec) -> Rules {
    Rules {
        cycle_type: set.cycle.cycle_type,
        discs: set.cycle.discs,
        archive_oldest_disc: set.cycle.archive_oldest_disc,
        retention_days: set.cycle.retention_days,
        minimum_redundancy: set.cycle.minimum_redundancy,
    }
}

pub fn run_ref(m: &Manifest) -> RunRef {
    RunRef {
        run: m.run,
        kind: m.kind,
        base: m.base_run,
        slot: m.slot,
        period: m.period,
    }
}

/// The runs of `set`'s cycle among `all` (every run of the set's name).
pub fn own_runs(set: &SetSpec, all: &[Manifest]) -> Vec<Manifest> {
    let mut own: Vec<Manifest> = all
        .iter()
        .filter(|m| m.set == set.name && m.cycle == set.cycle.name)
        .cloned()
        .collect();
    own.sort_by_key(|m| m.run);
    own
}

/// A run id at `now` that no run of the set already uses, committed or `taken` by another
/// cycle's run planned before (two cycles of one set may start within the same second).
fn fresh_run_id(now: DateTime<Utc>, all: &[Manifest], taken: &[RunId]) -> RunId {
    let mut run = RunId::at(now);
    while all.iter().any(|m| m.run == run) || taken.contains(&run) {
        run = RunId::at(run.0 + chrono::Duration::seconds(1));
    }
    run
}

/// Plans `set` at `now`; `all` holds every committed run of the set's name (any cycle), `taken`
/// the run ids of this set's runs planned earlier in the same run.
pub fn plan_set(
    set: &SetSpec,
    all: &[Manifest],
    now: DateTime<Utc>,
    force: bool,
    taken: &[RunId],
) -> SetPlan {
    let runs = own_runs(set, all);
    let day = cycle::day_index(now);
    let (position, forced) = match cycle::due(&set.cycle, set.source.incremental(), day) {
        Due::Yes(p) => match runs.iter().rev().find(|m| m.period == Some(p.period)) {
            Some(done) if !force => {
                return finish(
                    set,
                    runs.clone(),
                    Action::Skip {
                        reason: format!(
                            "backup #{} (slot {}) is already done: run {} (-f runs it again)",
                            p.period, p.slot, done.run
                        ),
                    },
                    now,
                )
            }
            Some(_) => (p, true),
            None => (p, false),
        },
        Due::No { reason, current } => {
            if !force {
                return finish(
                    set,
                    runs.clone(),
                    Action::Skip {
                        reason: format!("not due: {reason}"),
                    },
                    now,
                );
            }
            (current, true)
        }
    };
    let latest = runs.last().cloned();
    let (kind, base, note) = match (position.kind, latest) {
        (Kind::Diff, Some(base)) => (Kind::Diff, Some(Box::new(base)), None),
        (Kind::Diff, None) => (
            Kind::Full,
            None,
            Some("no earlier run in this cycle to build a DIFF on: FULL instead".to_string()),
        ),
        (Kind::Full, _) => (Kind::Full, None, None),
    };
    let action = Action::Run {
        position,
        kind,
        run: fresh_run_id(now, all, taken),
        base,
        forced,
        note,
        local: LocalStart::default(),
    };
    finish(set, runs, action, now)
}

/// The plan of `action` on `runs`, with what retention would keep and retire after it.
pub fn finish(set: &SetSpec, runs: Vec<Manifest>, action: Action, now: DateTime<Utc>) -> SetPlan {
    let mut refs: Vec<RunRef> = runs.iter().map(run_ref).collect();
    if let Action::Run {
        position,
        kind,
        run,
        base,
        ..
    } = &action
    {
        refs.push(RunRef {
            run: *run,
            kind: *kind,
            base: base.as_ref().map(|b| b.run),
            slot: Some(position.slot),
            period: Some(position.period),
        });
    }
    let verdicts = retention::evaluate(&refs, &rules(set), now);
    SetPlan {
        set: set.clone(),
        action,
        runs,
        verdicts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CycleSettings, SourceSpec};
    use crate::pipeline::compress::Compression;

    fn set(cycle: CycleSettings) -> SetSpec {
        SetSpec {
            name: "dir/etc".into(),
            source: SourceSpec::Directory {
                path: "/etc".into(),
                excludes: vec![],
                one_file_system: false,
            },
            compression: Compression::None,
            storage_class: crate::store::StorageClass::Standard,
            cycle,
            object_lock: None,
            restore: vec![],
            hooks: Default::default(),
            quilt: None,
            pos: crate::config::Pos {
                file: std::sync::Arc::from(std::path::Path::new("t.conf")),
                line: 1,
                column: 1,
            },
        }
    }

    fn manifest(set: &SetSpec, day: i64, kind: Kind, slot: u64, base: Option<RunId>) -> Manifest {
        let run = RunId::at(DateTime::from_timestamp(day * 86_400 + 3600, 0).unwrap());
        let mut m = crate::schema::manifest::sample(&set.name, run, kind, base);
        m.cycle = set.cycle.name.clone();
        m.slot = Some(slot);
        m.period = Some(day as u64);
        m
    }

    fn at(day: i64, hour: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(day * 86_400 + hour * 3600, 0).unwrap()
    }

    #[test]
    fn due_done_forced_and_first_diff() {
        let s = set(CycleSettings {
            fulls: 2,
            diffs: 6,
            ..CycleSettings::default()
        });
        // Day 21001 is a DIFF position, but with no earlier run it becomes a FULL.
        let p = plan_set(&s, &[], at(21_001, 3), false, &[]);
        let Action::Run {
            kind,
            note,
            position,
            ..
        } = &p.action
        else {
            panic!("{:?}", p.action)
        };
        assert_eq!((*kind, position.kind), (Kind::Full, Kind::Diff));
        assert!(note.is_some());

        let full = manifest(&s, 21_000, Kind::Full, 0, None);
        let p = plan_set(&s, std::slice::from_ref(&full), at(21_001, 3), false, &[]);
        let Action::Run {
            kind, base, forced, ..
        } = &p.action
        else {
            panic!()
        };
        assert_eq!(*kind, Kind::Diff);
        assert_eq!(base.as_ref().unwrap().run, full.run);
        assert!(!forced);

        // The same day again: skipped unless forced.
        let p = plan_set(&s, std::slice::from_ref(&full), at(21_000, 20), false, &[]);
        assert!(matches!(&p.action, Action::Skip { reason } if reason.contains("already done")));
        let p = plan_set(&s, std::slice::from_ref(&full), at(21_000, 20), true, &[]);
        assert!(matches!(&p.action, Action::Run { forced: true, .. }));
        // Forcing never makes retention retire a committed run.
        assert!(p.verdicts.iter().all(|v| v.keep), "{:?}", p.verdicts);
    }

    #[test]
    fn not_due_days_say_why() {
        let s = set(CycleSettings {
            frequency: 7,
            ..CycleSettings::default()
        });
        let p = plan_set(&s, &[], at(21_001, 3), false, &[]);
        let Action::Skip { reason } = &p.action else {
            panic!()
        };
        assert!(reason.contains("every 7 day(s)"), "{reason}");
        let p = plan_set(&s, &[], at(21_001, 3), true, &[]);
        assert!(matches!(&p.action, Action::Run { forced: true, .. }));
    }

    #[test]
    fn run_ids_never_collide_across_cycles() {
        let s = set(CycleSettings::default());
        let mut other = manifest(&s, 21_000, Kind::Full, 0, None);
        other.cycle = Some("another".into());
        let p = plan_set(&s, std::slice::from_ref(&other), other.run.0, false, &[]);
        let Action::Run { run, .. } = p.action else {
            panic!()
        };
        assert_ne!(run, other.run);
        assert!(
            p.runs.is_empty(),
            "runs of another cycle are not this cycle's"
        );
        // Nor with a run of another cycle planned, not yet committed, in the same run.
        let p = plan_set(&s, &[], other.run.0, false, &[other.run]);
        let Action::Run { run, .. } = p.action else {
            panic!()
        };
        assert_ne!(run, other.run);
    }
}
