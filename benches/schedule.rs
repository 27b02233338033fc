//! The part schedule s3nap computes for large streams, and the memory it then holds under the
//! default settings (ChunkSize 16 MiB, ParallelUploads 4, MemoryLimit 256 MiB): parts of a
//! stream of each size, first run (no estimate) and later runs (the previous run as estimate,
//! the same size or 30 % smaller). Pure computation, no data: `cargo bench --bench schedule`.

use s3nap::pipeline::schedule::{Schedule, MAX_PARTS};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const TIB: u64 = 1 << 40;
const CHUNK: u64 = 16 * MIB;
const PARALLEL: u64 = 4;
const LIMIT: u64 = 256 * MIB;

/// Parts the pipeline holds besides those in flight: two queued and one being filled.
const QUEUED_AND_FILLING: u64 = 3;

/// Memory the part buffers hold at most: as many of the largest parts as the limit and the
/// pipeline allow, and one alone when it is larger than the limit.
fn held(largest: u64) -> u64 {
    let fit = (LIMIT / largest).clamp(1, PARALLEL + QUEUED_AND_FILLING);
    fit * largest
}

fn main() {
    println!(
        "{:>8} {:>12} {:>7} {:>12} {:>12} {:>14}",
        "stream", "estimate", "parts", "first part", "largest", "parts memory"
    );
    for total in [20 * GIB, TIB, 5 * TIB] {
        for estimate in [None, Some(total), Some(total / 10 * 7)] {
            let sizes = Schedule::new(CHUNK, estimate, LIMIT)
                .sizes_for(total)
                .expect("every stream up to 5 TiB fits");
            assert!(sizes.len() <= MAX_PARTS as usize);
            let largest = *sizes.iter().max().unwrap();
            println!(
                "{:>6}Gi {:>12} {:>7} {:>10}Mi {:>10}Mi {:>12}Mi{}",
                total / GIB,
                estimate.map_or("none".to_string(), |e| format!("{}Gi", e / GIB)),
                sizes.len(),
                sizes[0] / MIB,
                largest / MIB,
                held(largest) / MIB,
                if largest > LIMIT {
                    " (over the limit)"
                } else {
                    ""
                }
            );
        }
    }
    println!(
        "floor: a stream of S bytes needs parts of at least S/{MAX_PARTS}; MemoryLimit {} MiB holds \
         one part of up to {} MiB at a time: at most {:.2} TiB in {MAX_PARTS} parts",
        LIMIT / MIB,
        LIMIT / MIB,
        (LIMIT * u64::from(MAX_PARTS)) as f64 / TIB as f64
    );
}
