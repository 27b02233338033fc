//! `MaxUploadRate`: the archive parts of every upload of the process in, each one's moment to
//! be sent out, so that all of them together go at most at the configured bytes per second.
//!
//! One schedule for the whole process ([`limit_process`], set once at start; sets run one
//! after another, their parts in parallel): a part of N bytes takes the next N / rate seconds
//! of it and is sent when they are over, so by any moment no more bytes have been handed to
//! the store than the rate allows since the first part (time left unused is not saved up for
//! later bursts). A part goes out whole, at the link's speed: the limit holds on average over
//! a part's duration, not within it (smaller `ChunkSize`, smoother sending). Retries of a part
//! inside the store are not counted again. The local store is paced the same way.

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use tokio::time::Instant;

/// A rate and the moment its schedule is taken up to.
#[derive(Debug)]
pub struct RateLimit {
    per_second: u64,
    next: Mutex<Option<Instant>>,
}

impl RateLimit {
    pub fn new(per_second: u64) -> Self {
        RateLimit {
            per_second: per_second.max(1),
            next: Mutex::new(None),
        }
    }

    /// Takes `bytes` of the schedule and waits until they have passed.
    pub async fn take(&self, bytes: u64) {
        let until = {
            let mut next = self.next.lock().expect("not poisoned");
            let now = Instant::now();
            let start = next.filter(|t| *t > now).unwrap_or(now);
            let end = start + Duration::from_secs_f64(bytes as f64 / self.per_second as f64);
            *next = Some(end);
            end
        };
        tokio::time::sleep_until(until).await;
    }
}

static PROCESS: OnceLock<RateLimit> = OnceLock::new();

/// Limits every later upload of the process to `per_second` bytes per second. Once only: a
/// second call is ignored.
pub fn limit_process(per_second: u64) {
    let _ = PROCESS.set(RateLimit::new(per_second));
}

/// Waits for the moment a part of `bytes` may be sent (at once without a limit).
pub async fn pace(bytes: u64) {
    if let Some(limit) = PROCESS.get() {
        limit.take(bytes).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn parts_in_parallel_share_one_rate() {
        let limit = std::sync::Arc::new(RateLimit::new(1_000_000));
        let started = std::time::Instant::now();
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let limit = limit.clone();
                tokio::spawn(async move { limit.take(100_000).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        // 400 kB at 1 MB/s: never sooner than 0.4 s, however the tasks ran.
        assert!(
            started.elapsed() >= Duration::from_millis(400),
            "{:?}",
            started.elapsed()
        );

        // Time left unused is not saved up: after a pause the next part waits its own share.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let again = std::time::Instant::now();
        limit.take(200_000).await;
        assert!(
            again.elapsed() >= Duration::from_millis(200),
            "{:?}",
            again.elapsed()
        );
    }
}
