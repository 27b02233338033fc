//! Object Lock terms: a run's place in its cycle in, the date its objects may be locked until
//! out. Pure: both clocks are parameters, nothing is stored here.
//!
//! A lock must never outlast the moment retention could retire the run, or `prune` would be
//! refused; and it should last until then, or a compromised host could delete the run the day
//! after. So the lock runs until the *earliest* moment any rule of [`super::retention`] could
//! retire the run:
//! - a slot holder, until the next backup scheduled into its slot (missed or later days only
//!   delay that);
//! - with RetentionPolicy DAYS, no later than DAYS after the run;
//! - a permanent archive (ArchiveOldestDisc) or a run outside rotation without
//!   RetentionPolicy: never, so the longest lock allowed (ObjectLockMaxDays).
//!
//! The other rules (MinimumRedundancy, a kept DIFF keeping its base) only ever keep a run
//! longer, so they cannot make the earliest moment earlier. The cycle is reckoned on the run's
//! scheduled clock (`--now`), but the server enforces the lock on its own: the span from the
//! run to its earliest retirement is added to the server's time of the commit, plus a margin.

use chrono::{DateTime, Duration, Utc};

use super::cycle::{day_of_period, next_in_slot, CycleSettings, CycleType, Incremental, Position};

/// When retention could retire a run at the earliest, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retirement {
    At(DateTime<Utc>, &'static str),
    Never(&'static str),
}

/// The earliest moment retention could retire a run made at `run` (scheduled clock) in
/// position `pos` of cycle `c` (`None`: a run outside rotation).
pub fn earliest_retirement(
    c: &CycleSettings,
    inc: Incremental,
    run: DateTime<Utc>,
    pos: Option<Position>,
) -> Retirement {
    let by_age = c
        .retention_days
        .map(|days| run + Duration::days(days as i64));
    let permanent = c.cycle_type == CycleType::Hanoi
        && c.archive_oldest_disc
        && pos.is_some_and(|p| p.slot + 1 == c.discs);
    let by_slot = match pos {
        _ if permanent => return Retirement::Never("permanent archive of the oldest disc"),
        Some(p) => {
            let day = day_of_period(c, next_in_slot(c, inc, p));
            DateTime::from_timestamp(day * 86_400, 0)
        }
        None => None,
    };
    match (by_slot, by_age) {
        (Some(s), Some(a)) if a < s => Retirement::At(a, "RetentionPolicy age"),
        (Some(s), _) => Retirement::At(s, "next backup into its slot"),
        (None, Some(a)) => Retirement::At(a, "RetentionPolicy age"),
        (None, None) => Retirement::Never("not part of a rotation"),
    }
}

/// How long locks last beyond the earliest retirement, and at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockTerms {
    pub margin: Duration,
    pub max: Duration,
}

/// The retain-until date for a run committed at `server_now` (the store's clock) that was
/// scheduled at `run` (the run's clock, `--now`): the span to its earliest retirement plus the
/// margin, never beyond `max` from `server_now` and never before it.
pub fn retain_until(
    retirement: &Retirement,
    run: DateTime<Utc>,
    server_now: DateTime<Utc>,
    terms: LockTerms,
) -> DateTime<Utc> {
    let ceiling = server_now + terms.max;
    match retirement {
        Retirement::Never(_) => ceiling,
        Retirement::At(at, _) => {
            let span = (*at - run).max(Duration::zero());
            (server_now + span + terms.margin).min(ceiling)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::cycle::{due, Due};
    use crate::schema::layout::Kind;

    fn day(d: i64, hour: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(d * 86_400 + hour * 3600, 0).unwrap()
    }

    fn pos_of(c: &CycleSettings, inc: Incremental, d: i64) -> Position {
        match due(c, inc, d) {
            Due::Yes(p) => p,
            Due::No { current, .. } => current,
        }
    }

    #[test]
    fn table_of_earliest_retirements() {
        let simple = CycleSettings {
            fulls: 2,
            diffs: 6,
            ..CycleSettings::default()
        };
        let weekly = CycleSettings {
            frequency: 7,
            phase: 3,
            fulls: 2,
            diffs: 1,
            ..CycleSettings::default()
        };
        let hanoi = CycleSettings {
            cycle_type: CycleType::Hanoi,
            discs: 4,
            ..CycleSettings::default()
        };
        let archived = CycleSettings {
            archive_oldest_disc: true,
            ..hanoi.clone()
        };
        let aged = CycleSettings {
            retention_days: Some(5),
            ..simple.clone()
        };
        let yes = Incremental::Yes;
        // (cycle, run day, expected: Some(day of retirement) or None for never)
        let table: Vec<(&CycleSettings, i64, Option<i64>)> = vec![
            (&simple, 20_000, Some(20_014)), // 14 slots, one a day
            (&simple, 20_013, Some(20_027)),
            (&weekly, 20_003, Some(20_031)), // 4 slots a week apart: day 20003 + 28
            (&hanoi, 20_001, Some(20_003)),  // odd period: disc 0, every other day
            (&hanoi, 20_002, Some(20_006)),  // disc 1: every 4 days
            (&hanoi, 20_000, Some(20_008)),  // 20000 = 8·2500: the largest disc, every 8 days
            (&archived, 20_000, None),
            (&archived, 20_002, Some(20_006)),
            (&aged, 20_000, Some(20_005)), // age retires before the slot is reused
        ];
        for (c, d, want) in table {
            let got = earliest_retirement(c, yes, day(d, 3), Some(pos_of(c, yes, d)));
            let got = match got {
                Retirement::At(t, _) => Some(t.timestamp().div_euclid(86_400)),
                Retirement::Never(_) => None,
            };
            assert_eq!(got, want, "run on day {d} of {c:?}");
        }
        assert_eq!(
            earliest_retirement(&simple, yes, day(20_000, 3), None),
            Retirement::Never("not part of a rotation")
        );
    }

    #[test]
    fn the_span_is_counted_from_the_servers_clock_with_margin_and_ceiling() {
        let terms = LockTerms {
            margin: Duration::days(7),
            max: Duration::days(3650),
        };
        let run = day(20_000, 3); // a rehearsal: --now far from the real time
        let server = day(21_000, 12);
        let r = Retirement::At(day(20_014, 0), "slot");
        assert_eq!(
            retain_until(&r, run, server, terms),
            server + (day(20_014, 0) - run) + Duration::days(7)
        );
        let past = Retirement::At(day(19_000, 0), "age");
        assert_eq!(
            retain_until(&past, run, server, terms),
            server + terms.margin
        );
        let short = LockTerms {
            margin: Duration::seconds(5),
            max: Duration::days(1),
        };
        assert_eq!(
            retain_until(&r, run, server, short),
            server + Duration::days(1)
        );
        assert_eq!(
            retain_until(&Retirement::Never("archive"), run, server, terms),
            server + Duration::days(3650)
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        /// Retention, run day by day with missed days, never retires a run before its earliest
        /// retirement: a lock until then never makes `prune` fail.
        #[test]
        fn retention_never_retires_before_the_earliest_moment(
            missed in proptest::collection::vec(proptest::bool::weighted(0.3), 200),
            hanoi in proptest::bool::ANY,
            fulls in 1u64..4,
            diffs in 0u64..5,
            discs in 2u64..6,
            frequency in 1u64..4,
            phase in 0u64..3,
            age in proptest::option::of(1u64..30),
            archive in proptest::bool::ANY,
        ) {
            let c = CycleSettings {
                cycle_type: if hanoi { CycleType::Hanoi } else { CycleType::Simple },
                fulls, diffs, discs, frequency, phase,
                archive_oldest_disc: archive,
                retention_days: age,
                minimum_redundancy: 1,
                ..CycleSettings::default()
            };
            retire_check(&c, &missed);
        }
    }

    fn retire_check(c: &CycleSettings, missed: &[bool]) {
        use crate::policy::retention::{evaluate, Rules, RunRef};
        use crate::schema::layout::RunId;
        let rules = Rules {
            cycle_type: c.cycle_type,
            discs: c.discs,
            archive_oldest_disc: c.archive_oldest_disc,
            retention_days: c.retention_days,
            minimum_redundancy: c.minimum_redundancy,
        };
        let inc = Incremental::Yes;
        let mut runs: Vec<RunRef> = Vec::new();
        let mut earliest = std::collections::HashMap::new();
        for (i, skip) in missed.iter().enumerate() {
            let d = 20_000 + i as i64;
            if let (false, Due::Yes(p)) = (skip, due(c, inc, d)) {
                let latest = runs.last().map(|r| r.run);
                let kind = match (p.kind, latest) {
                    (Kind::Diff, Some(_)) => Kind::Diff,
                    _ => Kind::Full,
                };
                let at = day(d, 3);
                earliest.insert(RunId::at(at), earliest_retirement(c, inc, at, Some(p)));
                runs.push(RunRef {
                    run: RunId::at(at),
                    kind,
                    base: latest.filter(|_| kind == Kind::Diff),
                    slot: Some(p.slot),
                    period: Some(p.period),
                });
            }
            // Prune at any hour of the day, after the backup.
            let now = day(d, 4);
            let verdicts = evaluate(&runs, &rules, now);
            for v in verdicts.iter().filter(|v| !v.keep) {
                match &earliest[&v.run] {
                    Retirement::At(t, _) => assert!(
                        *t <= now,
                        "{} retired on day {d} ({}), before its earliest {t}",
                        v.run,
                        v.reason
                    ),
                    Retirement::Never(why) => panic!("{} retired, but {why}", v.run),
                }
            }
            runs.retain(|r| verdicts.iter().any(|v| v.keep && v.run == r.run));
        }
    }
}
