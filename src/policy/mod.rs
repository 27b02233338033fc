//! Policies: pure decisions about when to run and what to keep, with `now` injected and a
//! reason for every verdict (tested as tables, like rustic's retention).

pub mod cycle;
pub mod gc;
pub mod lock;
pub mod quilt;
pub mod retention;

#[cfg(test)]
mod simulation {
    //! Years of simulated days through `cycle::due` and `retention::evaluate`, the way the
    //! executor uses them: run when due (a DIFF with no earlier run becomes a FULL), then retire
    //! what the policy no longer keeps.

    use std::collections::{BTreeSet, HashMap};

    use chrono::{DateTime, Duration, Utc};

    use super::cycle::{due, CycleSettings, CycleType, Due, Incremental};
    use super::retention::{evaluate, restorable, Rules, RunRef};
    use crate::schema::layout::{Kind, RunId};

    const YEARS3: i64 = 3 * 365 + 1;

    fn time(day: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(day * 86_400 + 3 * 3600, 0).unwrap()
    }

    fn rules(c: &CycleSettings) -> Rules {
        Rules {
            cycle_type: c.cycle_type,
            discs: c.discs,
            archive_oldest_disc: c.archive_oldest_disc,
            retention_days: None,
            minimum_redundancy: 0,
        }
    }

    /// Runs the simulation; calls `check(day, kept runs)` after every day.
    fn simulate(
        c: &CycleSettings,
        rules: &Rules,
        inc: Incremental,
        start: i64,
        days: i64,
        missed: impl Fn(i64) -> bool,
        mut check: impl FnMut(i64, &[RunRef]),
    ) {
        let mut runs: Vec<RunRef> = Vec::new();
        for day in start..start + days {
            if !missed(day) {
                if let Due::Yes(p) = due(c, inc, day) {
                    let latest = runs.last().map(|r| r.run);
                    let kind = if p.kind == Kind::Diff && latest.is_some() {
                        Kind::Diff
                    } else {
                        Kind::Full
                    };
                    runs.push(RunRef {
                        run: RunId::at(time(day)),
                        kind,
                        base: if kind == Kind::Diff { latest } else { None },
                        slot: Some(p.slot),
                        period: Some(p.period),
                    });
                }
            }
            // Prune runs every day, even when the backup did not.
            let verdicts = evaluate(&runs, rules, time(day) + Duration::hours(1));
            let kept: BTreeSet<RunId> = verdicts.iter().filter(|v| v.keep).map(|v| v.run).collect();
            runs.retain(|r| kept.contains(&r.run));
            check(day, &runs);
        }
    }

    fn days_of(runs: &[RunRef]) -> Vec<i64> {
        runs.iter()
            .map(|r| r.run.0.timestamp().div_euclid(86_400))
            .collect()
    }

    fn assert_chains_complete(day: i64, runs: &[RunRef]) {
        let by_id: HashMap<RunId, &RunRef> = runs.iter().map(|r| (r.run, r)).collect();
        for r in runs {
            assert!(
                restorable(r, &by_id),
                "day {day}: kept {} lacks part of its chain",
                r.run
            );
        }
    }

    #[test]
    fn simple_cycle_three_years_every_day() {
        let c = CycleSettings {
            fulls: 2,
            diffs: 6,
            ..CycleSettings::default()
        };
        let start = 20_000; // a period-aligned day: 20000 % 14 == 8, so the first FULL is mid-way
        simulate(
            &c,
            &rules(&c),
            Incremental::Yes,
            start,
            YEARS3,
            |_| false,
            |day, runs| {
                assert_chains_complete(day, runs);
                // Slot holders are the last 14 days; the oldest one's chain reaches back to its FULL
                // (FULLs fall on days where day % 7 == 0).
                let first_full = (start..start + 7).find(|d| d % 7 == 0).unwrap();
                let oldest_holder = (day - 13).max(start);
                let from = if oldest_holder < first_full {
                    start // the first chain starts with the first run
                } else {
                    oldest_holder - oldest_holder.rem_euclid(7)
                };
                let want: Vec<i64> = (from.max(start)..=day).collect();
                let got = days_of(runs);
                if oldest_holder >= first_full + 7 {
                    assert_eq!(got, want, "day {day}");
                }
                for r in runs {
                    let d = r.run.0.timestamp().div_euclid(86_400);
                    // The very first run has nothing to build on: a FULL whatever its slot.
                    let expect_kind = if d % 7 == 0 || d == start {
                        Kind::Full
                    } else {
                        Kind::Diff
                    };
                    assert_eq!(r.kind, expect_kind, "day {d}");
                    assert_eq!(r.slot, Some((d as u64) % 14), "day {d}");
                }
            },
        );
    }

    #[test]
    fn simple_cycle_with_missed_days_keeps_every_chain_whole() {
        let c = CycleSettings {
            fulls: 2,
            diffs: 6,
            ..CycleSettings::default()
        };
        simulate(
            &c,
            &rules(&c),
            Incremental::Yes,
            20_000,
            YEARS3,
            |d| d % 5 == 0 || d % 11 == 3,
            |day, runs| {
                assert_chains_complete(day, runs);
                // A missed FULL day lets its chain run on to the next FULL: chains grow, but stay
                // bounded.
                assert!(runs.len() <= 3 * 14, "day {day}: {} runs kept", runs.len());
                assert!(day < 20_010 || !runs.is_empty());
            },
        );
    }

    #[test]
    fn full_only_dumps_keep_fulls_slots() {
        let c = CycleSettings {
            fulls: 14,
            ..CycleSettings::default()
        };
        simulate(
            &c,
            &rules(&c),
            Incremental::No,
            20_000,
            YEARS3,
            |_| false,
            |day, runs| {
                let want: Vec<i64> = ((day - 13).max(20_000)..=day).collect();
                assert_eq!(days_of(runs), want, "day {day}");
                assert!(runs.iter().all(|r| r.kind == Kind::Full));
            },
        );
    }

    fn hanoi_disc(n: i64, discs: u64) -> u64 {
        u64::from((n as u64).trailing_zeros()).min(discs - 1)
    }

    #[test]
    fn hanoi_keeps_the_newest_backup_of_each_disc() {
        let c = CycleSettings {
            cycle_type: CycleType::Hanoi,
            discs: 5,
            ..CycleSettings::default()
        };
        let start = 20_000;
        simulate(
            &c,
            &rules(&c),
            Incremental::Yes,
            start,
            YEARS3,
            |_| false,
            |day, runs| {
                let mut want: Vec<i64> = (0..5)
                    .filter_map(|k| (start..=day).rev().find(|n| hanoi_disc(*n, 5) == k))
                    .collect();
                want.sort();
                assert_eq!(days_of(runs), want, "day {day}");
                if day > start + 40 {
                    let oldest = day - days_of(runs)[0];
                    // s3napback's promise for 5 discs: the oldest is between 8 and 16 days old.
                    assert!(
                        (8..=16).contains(&oldest),
                        "day {day}: oldest is {oldest} days old"
                    );
                }
            },
        );
    }

    #[test]
    fn hanoi_archive_oldest_disc_keeps_every_largest_disc_run() {
        let c = CycleSettings {
            cycle_type: CycleType::Hanoi,
            discs: 4,
            archive_oldest_disc: true,
            ..CycleSettings::default()
        };
        simulate(
            &c,
            &rules(&c),
            Incremental::Yes,
            20_000,
            YEARS3,
            |_| false,
            |day, runs| {
                let archived = (20_000..=day).filter(|n| hanoi_disc(*n, 4) == 3).count();
                let largest = runs.iter().filter(|r| r.slot == Some(3)).count();
                assert_eq!(largest, archived, "day {day}");
                assert_eq!(
                    runs.len() - largest,
                    (0..3)
                        .filter(|k| (20_000..=day).any(|n| hanoi_disc(n, 4) == *k))
                        .count()
                );
            },
        );
    }

    #[test]
    fn retention_by_age_never_goes_below_minimum_redundancy() {
        let c = CycleSettings {
            fulls: 4,
            diffs: 6,
            ..CycleSettings::default()
        };
        let mut r = rules(&c);
        r.retention_days = Some(10);
        r.minimum_redundancy = 2;
        // Runs stop after 40 days (the machine was switched off): age would retire everything.
        simulate(
            &c,
            &r,
            Incremental::Yes,
            20_000,
            100,
            |d| d >= 20_040,
            |day, runs| {
                assert_chains_complete(day, runs);
                let by_id: HashMap<RunId, &RunRef> = runs.iter().map(|r| (r.run, r)).collect();
                let points = runs.iter().filter(|r| restorable(r, &by_id)).count();
                assert!(
                    day < 20_003 || points >= 3,
                    "day {day}: only {points} restore points"
                );
                if day < 20_040 {
                    let oldest = day - days_of(runs)[0];
                    assert!(
                        oldest <= 10 + 6,
                        "day {day}: oldest kept is {oldest} days old"
                    );
                }
            },
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Whatever days are missed, every kept DIFF has its FULL and every DIFF between.
        #[test]
        fn kept_diffs_always_have_their_chain(
            missed in proptest::collection::vec(proptest::bool::weighted(0.3), 400),
            fulls in 1u64..4,
            diffs in 0u64..8,
            frequency in 1u64..3,
        ) {
            let c = CycleSettings { fulls, diffs, frequency, ..CycleSettings::default() };
            simulate(&c, &rules(&c), Incremental::Yes, 20_000, 400, |d| missed[(d - 20_000) as usize], |day, runs| {
                assert_chains_complete(day, runs);
            });
        }
    }
}
