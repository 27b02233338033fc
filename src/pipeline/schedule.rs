//! Part sizes: the size expected for a stream and the memory limit in, the size of each part
//! out.
//!
//! S3 allows 10,000 parts of at most 5 GiB per upload, and a part must stay in memory until it
//! is stored (a failed part is sent again), so the part size is what memory grows with. Parts
//! are as small as the stream allows:
//! - the same set's previous run says how large it will be (the estimate), and every part is
//!   `base` — the estimate plus 10 % in 6,000 parts, at least ChunkSize — until the stream
//!   passes that (a first run, without an estimate: ChunkSize, growing from the first part);
//! - then parts double every `period` parts, up to the memory limit: the longest period with
//!   which the parts left (less a reserve) could bring half as much again as the limit allows;
//! - the last parts are a reserve: whatever happened before, they can still take the stream
//!   to S3's largest object (5 TiB) in parts of up to 5 GiB. Only a stream that gets there
//!   holds parts larger than the limit (the stream then reports it).

/// S3's limits for multipart uploads.
pub const MIN_PART: u64 = 5 * 1024 * 1024;
pub const MAX_PART: u64 = 5 * 1024 * 1024 * 1024;
pub const MAX_PARTS: u32 = 10_000;
/// S3's largest object: every schedule can reach it.
pub const MAX_OBJECT: u64 = 5 * 1024 * 1024 * 1024 * 1024;

const MIB: u64 = 1024 * 1024;
/// Parts the estimate (plus its headroom) is spread over.
const ESTIMATE_PARTS: u64 = 6_000;
/// Headroom over the estimate, in percent, before parts grow.
const HEADROOM_PERCENT: u64 = 110;
/// Parts kept out of the growth plan: what 5 TiB in 5 GiB parts needs, and some.
const RESERVE_PARTS: u32 = 1_100;

/// How the parts of one stream are sized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// Size of every part until the stream passes `grow_after` bytes.
    pub base: u64,
    /// Bytes streamed before parts start to grow (0: from the first part).
    pub grow_after: u64,
    /// The largest part growth makes (the memory limit, or `base` when that is larger).
    pub cap: u64,
}

/// The state of one stream along its schedule.
#[derive(Debug, Clone)]
pub struct Parts {
    schedule: Schedule,
    /// Part number the growth started at, and its doubling period.
    growth: Option<(u32, u32)>,
    current: u64,
}

fn round_up_mib(bytes: u64) -> u64 {
    bytes.div_ceil(MIB) * MIB
}

impl Schedule {
    /// The schedule for a stream of about `estimate` bytes (`None`: unknown) whose parts are at
    /// least `chunk` bytes, under a memory limit of `limit` bytes.
    pub fn new(chunk: u64, estimate: Option<u64>, limit: u64) -> Schedule {
        let chunk = chunk.clamp(MIN_PART, MAX_PART);
        let (base, grow_after) = match estimate {
            None | Some(0) => (chunk, 0),
            Some(estimate) => {
                let expected = estimate.saturating_mul(HEADROOM_PERCENT) / 100;
                let spread = round_up_mib(expected.div_ceil(ESTIMATE_PARTS));
                (spread.clamp(chunk, MAX_PART), expected)
            }
        };
        Schedule {
            base,
            grow_after,
            cap: limit.clamp(base, MAX_PART),
        }
    }

    pub fn start(self) -> Parts {
        let current = self.base;
        Parts {
            schedule: self,
            growth: None,
            current,
        }
    }

    /// Every part size of a stream of `total` bytes, for benchmarks and tests; `None` when it
    /// does not fit in S3's part limit.
    pub fn sizes_for(&self, total: u64) -> Option<Vec<u64>> {
        let mut parts = self.clone().start();
        let (mut sizes, mut streamed) = (Vec::new(), 0u64);
        while streamed < total {
            let number = sizes.len() as u32 + 1;
            if number > MAX_PARTS {
                return None;
            }
            let size = parts.size(number, streamed).min(total - streamed);
            sizes.push(size);
            streamed += size;
        }
        Some(sizes)
    }
}

impl Parts {
    /// The size of part `number` (from 1), once `streamed` bytes went into the parts before.
    pub fn size(&mut self, number: u32, streamed: u64) -> u64 {
        let left = MAX_PARTS.saturating_sub(number - 1).max(1);
        let to_max = MAX_OBJECT.saturating_sub(streamed);
        if u64::from(left) <= to_max.div_ceil(MAX_PART) + 1 {
            // The reserve: the parts left must still reach S3's largest object.
            let needed = round_up_mib(to_max.div_ceil(u64::from(left)));
            self.current = needed.clamp(self.current, MAX_PART);
            return self.current;
        }
        let cap = self.schedule.cap;
        if self.growth.is_none() && streamed >= self.schedule.grow_after {
            let usable = left.saturating_sub(RESERVE_PARTS).max(1);
            let goal = u64::from(usable) * cap / 2;
            self.growth = Some((number, gentlest_period(self.current, cap, usable, goal)));
        }
        if let Some((from, period)) = self.growth {
            if number > from && (number - from) % period == 0 {
                self.current = (self.current * 2).min(cap.max(self.current));
            }
        }
        self.current
    }
}

/// Bytes `left` parts hold starting at `size` and doubling every `period` parts, up to `cap`.
fn reach(size: u64, cap: u64, left: u32, period: u32) -> u64 {
    let (mut total, mut size) = (0u64, size);
    for i in 0..left {
        if i > 0 && i % period == 0 {
            size = (size * 2).min(cap.max(size));
        }
        total = total.saturating_add(size);
    }
    total
}

/// The longest doubling period with which `left` parts from `size` on (up to `cap`) hold
/// `goal` bytes (1 when even doubling every part cannot).
fn gentlest_period(size: u64, cap: u64, left: u32, goal: u64) -> u32 {
    let fits = |period: u32| reach(size, cap, left, period) >= goal;
    let (mut low, mut high) = (1u32, left.max(1));
    if fits(high) {
        return high;
    }
    while low < high {
        let mid = (low + high).div_ceil(2);
        if fits(mid) {
            low = mid;
        } else {
            high = mid - 1;
        }
    }
    low
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;
    const TIB: u64 = 1 << 40;
    const LIMIT: u64 = 256 * MIB;

    fn largest(schedule: &Schedule, total: u64) -> u64 {
        let sizes = schedule.sizes_for(total).expect("fits in 10,000 parts");
        assert_eq!(sizes.iter().sum::<u64>(), total);
        let last = sizes.len() - 1;
        assert!(sizes[..last]
            .iter()
            .all(|s| (MIN_PART..=MAX_PART).contains(s)));
        *sizes.iter().max().unwrap()
    }

    #[test]
    fn every_schedule_reaches_s3s_largest_object() {
        for estimate in [
            None,
            Some(GIB),
            Some(100 * GIB),
            Some(TIB),
            Some(4 * TIB),
            Some(5 * TIB),
        ] {
            for chunk in [MIN_PART, 16 * MIB, 512 * MIB] {
                for limit in [2 * MIN_PART, LIMIT, 8 * GIB] {
                    let schedule = Schedule::new(chunk, estimate, limit);
                    assert!(
                        schedule.sizes_for(MAX_OBJECT).is_some(),
                        "{schedule:?} cannot store 5 TiB"
                    );
                }
            }
        }
    }

    #[test]
    fn a_stream_as_large_as_expected_keeps_parts_near_the_floor() {
        // The floor: a stream of S bytes needs parts of at least S / 10,000.
        for total in [20 * GIB, TIB, 5 * TIB] {
            let floor = total / u64::from(MAX_PARTS);
            let part = largest(&Schedule::new(16 * MIB, Some(total), LIMIT), total);
            assert!(
                part <= floor * 19 / 10 + MIB || part == 16 * MIB,
                "{total}: parts of {part}, floor {floor}"
            );
        }
    }

    #[test]
    fn parts_stay_within_the_memory_limit_up_to_a_tebibyte() {
        // First run (no estimate), as expected, and 30 % larger than the run before.
        for estimate in [None, Some(TIB), Some(TIB / 10 * 7)] {
            let part = largest(&Schedule::new(16 * MIB, estimate, LIMIT), TIB);
            assert!(part <= LIMIT, "{estimate:?}: parts of {part}");
        }
        // Beyond what the limit can hold in 10,000 parts, parts outgrow it, but the stream is
        // stored.
        assert!(largest(&Schedule::new(16 * MIB, None, LIMIT), 5 * TIB) > LIMIT);
    }

    #[test]
    fn parts_grow_only_past_the_estimate_and_gently() {
        let schedule = Schedule::new(16 * MIB, Some(100 * GIB), LIMIT);
        assert_eq!(largest(&schedule, 100 * GIB), schedule.base);
        // 10 % over: no growth yet. 50 % over: parts grow, but stay within a few times the base.
        assert_eq!(largest(&schedule, 110 * GIB), schedule.base);
        let part = largest(&schedule, 150 * GIB);
        assert!(part > schedule.base && part <= 4 * schedule.base, "{part}");
    }

    #[test]
    fn without_an_estimate_parts_start_at_chunk_size_and_grow() {
        let schedule = Schedule::new(16 * MIB, None, LIMIT);
        assert_eq!(schedule.base, 16 * MIB);
        assert_eq!(schedule.sizes_for(20 * GIB).unwrap()[0], 16 * MIB);
        // The old schedule doubled every 1,000 parts: 32 MiB parts at 20 GiB, 512 MiB at 1 TiB.
        assert_eq!(largest(&schedule, 20 * GIB), 16 * MIB);
        assert_eq!(largest(&schedule, TIB), 256 * MIB);
        assert_eq!(
            Schedule::new(1, None, LIMIT).base,
            MIN_PART,
            "S3's minimum part"
        );
    }
}
