//! Cycles: a day in, whether a run is due and which slot and kind it takes (README, "Cycles
//! and retention").
//!
//! Pure arithmetic on the UTC day index (days since 1970-01-01), never the day of the year, so
//! a schedule runs straight through 1 January. A run's *period* is its backup number (`n`): two
//! runs with the same period are the same scheduled backup (the second one forced), and a slot
//! is held by the runs of the newest period that used it.

use chrono::{DateTime, Utc};

use crate::schema::layout::Kind;

/// s3napback's cycle settings; cycles and retention act on them in their own module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CycleSettings {
    pub name: Option<String>,
    pub cycle_type: CycleType,
    pub frequency: u64,
    pub phase: u64,
    pub diffs: u64,
    pub fulls: u64,
    pub discs: u64,
    pub archive_oldest_disc: bool,
    pub use_temp_file: bool,
    /// Age-based retention on top of the cycle (backup-my-bucket's RetentionPolicy, in days).
    pub retention_days: Option<u64>,
    /// With RetentionPolicy: the newest N+1 restore points are kept whatever their age.
    pub minimum_redundancy: u64,
}

impl CycleSettings {
    /// `SimpleCycle{sep}every 1 day(s), phase 0, 6 diffs, 4 fulls`, or the Hanoi equivalent.
    pub fn describe(&self, sep: &str) -> String {
        match self.cycle_type {
            CycleType::Simple => format!(
                "SimpleCycle{sep}every {} day(s), phase {}, {} diffs, {} fulls",
                self.frequency, self.phase, self.diffs, self.fulls
            ),
            CycleType::Hanoi => format!(
                "HanoiCycle{sep}every {} day(s), {} discs{}",
                self.frequency,
                self.discs,
                if self.archive_oldest_disc {
                    ", oldest disc archived"
                } else {
                    ""
                }
            ),
        }
    }
}

impl Default for CycleSettings {
    fn default() -> Self {
        CycleSettings {
            name: None,
            cycle_type: CycleType::Simple,
            frequency: 1,
            phase: 0,
            diffs: 6,
            fulls: 4,
            discs: 5,
            archive_oldest_disc: false,
            use_temp_file: false,
            retention_days: None,
            minimum_redundancy: 1,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CycleType {
    Simple,
    Hanoi,
}

/// Days since 1970-01-01 in UTC.
pub fn day_index(t: DateTime<Utc>) -> i64 {
    t.timestamp().div_euclid(86_400)
}

/// Where a run falls in its cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub period: u64,
    pub slot: u64,
    pub kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Due {
    Yes(Position),
    /// Not a scheduled day; `current` is the period the day belongs to (what `-f` would use).
    No {
        reason: String,
        current: Position,
    },
}

/// Can this kind of source make incremental archives? Dumps that cannot (MySQL, PostgreSQL)
/// rotate through `Fulls` slots of FULLs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incremental {
    Yes,
    No,
}

/// The number of slots the cycle rotates through.
pub fn slot_count(c: &CycleSettings, inc: Incremental) -> u64 {
    match (c.cycle_type, inc) {
        (CycleType::Simple, Incremental::Yes) => c.fulls * (c.diffs + 1),
        (CycleType::Simple, Incremental::No) => c.fulls,
        (CycleType::Hanoi, _) => c.discs,
    }
}

fn position(c: &CycleSettings, inc: Incremental, period: u64) -> Position {
    match c.cycle_type {
        CycleType::Simple => {
            let slot = period % slot_count(c, inc);
            let kind = if inc == Incremental::No || slot % (c.diffs + 1) == 0 {
                Kind::Full
            } else {
                Kind::Diff
            };
            Position { period, slot, kind }
        }
        CycleType::Hanoi => Position {
            period,
            // Backup 0 has every bit clear: it belongs to the largest disc.
            slot: u64::from(period.trailing_zeros()).min(c.discs - 1),
            kind: Kind::Full,
        },
    }
}

/// Whether `day` is a scheduled day of cycle `c`, and its position.
pub fn due(c: &CycleSettings, inc: Incremental, day: i64) -> Due {
    let shifted = match c.cycle_type {
        CycleType::Simple => day + c.phase as i64,
        CycleType::Hanoi => day,
    };
    let shifted = shifted.max(0) as u64;
    let period = shifted / c.frequency;
    let pos = position(c, inc, period);
    if shifted % c.frequency == 0 {
        Due::Yes(pos)
    } else {
        let next = (period + 1) * c.frequency - shifted;
        Due::No {
            reason: format!(
                "runs every {} day(s){}; next in {next} day(s)",
                c.frequency,
                match c.cycle_type {
                    CycleType::Simple if c.phase > 0 => format!(" with phase {}", c.phase),
                    _ => String::new(),
                }
            ),
            current: pos,
        }
    }
}

/// The next period after `pos.period` that takes the same slot: the earliest backup that can
/// take the slot over (a forced run joins its day's period, so none comes sooner).
pub fn next_in_slot(c: &CycleSettings, inc: Incremental, pos: Position) -> u64 {
    match c.cycle_type {
        CycleType::Simple => pos.period + slot_count(c, inc),
        // Disc k < Discs-1 holds the periods with exactly k trailing zero bits, 2^(k+1) apart;
        // the largest disc every multiple of 2^(Discs-1).
        CycleType::Hanoi if pos.slot + 1 < c.discs => pos.period + (1u64 << (pos.slot + 1)),
        CycleType::Hanoi => pos.period + (1u64 << pos.slot),
    }
}

/// The day whose scheduled backup is `period` (the inverse of [`due`]).
pub fn day_of_period(c: &CycleSettings, period: u64) -> i64 {
    let shifted = (period * c.frequency) as i64;
    match c.cycle_type {
        CycleType::Simple => shifted - c.phase as i64,
        CycleType::Hanoi => shifted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn simple(frequency: u64, phase: u64, diffs: u64, fulls: u64) -> CycleSettings {
        CycleSettings {
            frequency,
            phase,
            diffs,
            fulls,
            ..CycleSettings::default()
        }
    }

    fn hanoi(frequency: u64, discs: u64) -> CycleSettings {
        CycleSettings {
            cycle_type: CycleType::Hanoi,
            frequency,
            discs,
            ..CycleSettings::default()
        }
    }

    fn at(c: &CycleSettings, inc: Incremental, day: i64) -> Option<(u64, Kind)> {
        match due(c, inc, day) {
            Due::Yes(p) => Some((p.slot, p.kind)),
            Due::No { .. } => None,
        }
    }

    #[test]
    fn day_index_is_utc_days_since_the_epoch() {
        use chrono::TimeZone;
        assert_eq!(
            day_index(Utc.with_ymd_and_hms(1970, 1, 1, 23, 59, 59).unwrap()),
            0
        );
        assert_eq!(
            day_index(Utc.with_ymd_and_hms(1970, 1, 2, 0, 0, 0).unwrap()),
            1
        );
        assert_eq!(
            day_index(Utc.with_ymd_and_hms(2026, 11, 22, 3, 15, 0).unwrap()),
            20_779
        );
    }

    #[test]
    fn simple_cycle_table() {
        use Incremental::*;
        use Kind::*;
        // (settings, incremental, day, expected)
        let d = CycleSettings::default(); // Frequency 1, Phase 0, Diffs 6, Fulls 4
        let weekly = simple(7, 0, 3, 2);
        let phased = simple(2, 1, 1, 2);
        type Row<'a> = (&'a CycleSettings, Incremental, i64, Option<(u64, Kind)>);
        let table: Vec<Row> = vec![
            (&d, Yes, 0, Some((0, Full))),
            (&d, Yes, 1, Some((1, Diff))),
            (&d, Yes, 6, Some((6, Diff))),
            (&d, Yes, 7, Some((7, Full))),
            (&d, Yes, 27, Some((27, Diff))),
            (&d, Yes, 28, Some((0, Full))),
            (&d, No, 0, Some((0, Full))),
            (&d, No, 5, Some((1, Full))),
            (&d, No, 7, Some((3, Full))),
            (&weekly, Yes, 0, Some((0, Full))),
            (&weekly, Yes, 3, None),
            (&weekly, Yes, 7, Some((1, Diff))),
            (&weekly, Yes, 28, Some((4, Full))),
            (&weekly, Yes, 56, Some((0, Full))),
            (&phased, Yes, 0, None),
            (&phased, Yes, 1, Some((1, Diff))),
            (&phased, Yes, 3, Some((2, Full))),
            (&phased, Yes, 7, Some((0, Full))),
        ];
        for (c, inc, day, want) in table {
            assert_eq!(at(c, inc, day), want, "day {day} of {c:?} ({inc:?})");
        }
    }

    #[test]
    fn simple_cycle_runs_straight_through_new_year() {
        use chrono::TimeZone;
        // s3napback used the day of the year, so 31 December and 1 January both came out as
        // slot 0-ish positions; on the day index they are consecutive positions.
        let c = CycleSettings::default();
        let dec31 = day_index(Utc.with_ymd_and_hms(2026, 12, 31, 3, 0, 0).unwrap());
        let jan1 = dec31 + 1;
        let (Due::Yes(a), Due::Yes(b)) = (
            due(&c, Incremental::Yes, dec31),
            due(&c, Incremental::Yes, jan1),
        ) else {
            panic!("both due")
        };
        assert_eq!(b.period, a.period + 1);
        assert_eq!(b.slot, (a.slot + 1) % 28);
    }

    #[test]
    fn hanoi_discs_follow_trailing_zero_bits() {
        let c = hanoi(1, 5);
        let slots: Vec<u64> = (1..=17)
            .map(|d| at(&c, Incremental::Yes, d).unwrap().0)
            .collect();
        assert_eq!(
            slots,
            vec![0, 1, 0, 2, 0, 1, 0, 3, 0, 1, 0, 2, 0, 1, 0, 4, 0]
        );
        assert_eq!(
            at(&c, Incremental::Yes, 0),
            Some((4, Kind::Full)),
            "backup 0 is the largest disc"
        );
        assert_eq!(
            at(&c, Incremental::Yes, 32),
            Some((4, Kind::Full)),
            "capped at Discs - 1"
        );
        let every_other = hanoi(2, 3);
        assert_eq!(at(&every_other, Incremental::Yes, 3), None);
        assert_eq!(at(&every_other, Incremental::Yes, 4), Some((1, Kind::Full)));
        assert!(
            matches!(due(&every_other, Incremental::Yes, 5), Due::No { reason, .. } if reason.contains("next in 1"))
        );
    }
}
