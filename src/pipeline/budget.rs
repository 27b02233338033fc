//! Memory budget: reservations of part buffers in, blocking while the limit is reached.
//!
//! The part writer reserves a part's size before it allocates the part's buffer; the
//! reservation travels with the part to the uploader and is released when the part is stored
//! (or dropped with a failed upload). So the parts being filled, queued and in flight never
//! hold more than `MemoryLimit`, and fewer parts travel at once as parts grow. A part larger
//! than the whole limit waits until it is alone, then takes the whole budget: the stream goes
//! on one part at a time, over the limit by that part's excess, which the stream reports.

use std::sync::{Arc, Condvar, Mutex};

#[derive(Debug)]
pub struct MemoryBudget {
    limit: u64,
    used: Mutex<Used>,
    freed: Condvar,
}

#[derive(Debug, Default)]
struct Used {
    now: u64,
    peak: u64,
}

/// Bytes of the budget held until dropped (released, not committed, on drop: a part's memory
/// is free whichever way the part ends).
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<MemoryBudget>,
    size: u64,
}

impl MemoryBudget {
    pub fn new(limit: u64) -> Arc<MemoryBudget> {
        Arc::new(MemoryBudget {
            limit: limit.max(1),
            used: Mutex::new(Used::default()),
            freed: Condvar::new(),
        })
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Blocks until `size` bytes (at most the whole limit) are free, and holds them. Called
    /// on the pipeline's blocking thread only.
    pub fn reserve(self: &Arc<Self>, size: u64) -> Reservation {
        let size = size.min(self.limit);
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        while used.now + size > self.limit {
            used = self.freed.wait(used).unwrap_or_else(|e| e.into_inner());
        }
        used.now += size;
        used.peak = used.peak.max(used.now);
        Reservation {
            budget: self.clone(),
            size,
        }
    }

    /// The most ever held at once.
    pub fn peak(&self) -> u64 {
        self.used.lock().unwrap_or_else(|e| e.into_inner()).peak
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut used = self.budget.used.lock().unwrap_or_else(|e| e.into_inner());
        used.now -= self.size;
        self.budget.freed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn reservations_wait_for_room_and_never_exceed_the_limit() {
        let budget = MemoryBudget::new(100);
        let a = budget.reserve(60);
        let b = budget.reserve(40);
        let waiting = {
            let budget = budget.clone();
            std::thread::spawn(move || budget.reserve(30).size)
        };
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            !waiting.is_finished(),
            "the budget is full: the third must wait"
        );
        drop(a);
        assert_eq!(waiting.join().unwrap(), 30);
        drop(b);
        // Larger than the limit: waits for the whole budget, and takes no more.
        let whole = budget.reserve(1_000);
        assert_eq!(whole.size, 100);
        assert_eq!(budget.peak(), 100);
    }
}
