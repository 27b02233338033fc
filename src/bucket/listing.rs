//! Parallel listing of every version under a prefix: pages of ListObjectVersions in, batches of
//! versions (each with the time a newer version superseded it) out over a bounded channel.
//!
//! Work is a queue of key ranges. Listing a range with delimiter `/` discovers common
//! prefixes, which become new ranges; an idle worker with an empty queue steals the upper half
//! of the busiest range in progress (splitting at a key between where its owner is and where
//! it ends), so a flat prefix of many keys is listed by every worker too. A range is
//! `after < key <= until` under its prefix; the owner stops at `until` when a thief moves it.
//! Prefixes may be reported by two ranges, so each is queued once.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use super::client::{BucketClient, VersionPage};
use super::Version;
use crate::store::{ErrorKind, Result, StoreError};

/// A version as listed, with when it stopped being current (`None` while it is).
#[derive(Debug, Clone)]
pub struct Listed {
    pub version: Version,
    pub superseded: Option<DateTime<Utc>>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub versions: u64,
    pub requests: u64,
    /// Ranges split off for idle workers.
    pub splits: u64,
}

struct Task {
    prefix: String,
    after: Option<String>,
    until: Option<String>,
}

struct Range {
    prefix: String,
    /// Where the owner's next page starts: it lists every key up to here. `None` before the
    /// first page and from the last one on: nothing to split then.
    position: Option<String>,
    until: Option<String>,
}

impl Range {
    /// Takes `page`, listed from the position: moves the position to where the next page
    /// starts and returns the range's end as of now, in one step under the range's lock. A
    /// thief then splits above every key of the page, which the owner emits up to that end
    /// (splitting from the old position, it could take part of the page the owner was
    /// emitting, and list it twice).
    fn take_page(range: &Mutex<Range>, page: &VersionPage) -> Option<String> {
        let mut range = range.lock().unwrap();
        range.position = page.next.as_ref().map(|(key, _)| key.clone());
        range.until.clone()
    }
}

#[derive(Default)]
struct Shared {
    queue: Mutex<VecDeque<Task>>,
    active: Mutex<Vec<Arc<Mutex<Range>>>>,
    seen: Mutex<HashSet<String>>,
    busy: AtomicUsize,
    failed: AtomicBool,
    requests: AtomicU64,
    splits: AtomicU64,
    versions: AtomicU64,
}

/// Split keys are made of this many printable ASCII characters after the common part.
const SPLIT_DIGITS: usize = 8;

/// A key strictly between `after` and `until` (or the end of `prefix`) to split a range at,
/// with a measure of how much key space the range spans; `None` when it cannot be split.
pub fn split_point(prefix: &str, after: &str, until: Option<&str>) -> Option<(String, u64)> {
    let upper = match until {
        Some(u) => u.to_string(),
        None => format!("{prefix}{}", "~".repeat(SPLIT_DIGITS)),
    };
    if after >= upper.as_str() {
        return None;
    }
    let common = after
        .bytes()
        .zip(upper.bytes())
        .take_while(|(a, b)| a == b)
        .count();
    let number = |s: &str| {
        let bytes = s.as_bytes();
        (0..SPLIT_DIGITS).fold(0u64, |acc, i| {
            let b = bytes.get(common + i).copied().unwrap_or(b' ');
            acc * 95 + u64::from(b.clamp(b' ', b'~') - b' ')
        })
    };
    let (low, high) = (number(after), number(&upper));
    if high <= low + 1 {
        return None;
    }
    let mut mid = low + (high - low) / 2;
    let mut digits = [0u8; SPLIT_DIGITS];
    for d in digits.iter_mut().rev() {
        *d = b' ' + (mid % 95) as u8;
        mid /= 95;
    }
    let mut key = after.as_bytes()[..common].to_vec();
    key.extend_from_slice(&digits);
    let key = String::from_utf8(key).ok()?;
    (after < key.as_str() && key < upper).then_some((key, high - low))
}

impl Shared {
    fn next_task(&self) -> Option<Task> {
        {
            let mut queue = self.queue.lock().unwrap();
            if let Some(task) = queue.pop_front() {
                self.busy.fetch_add(1, Ordering::SeqCst);
                return Some(task);
            }
        }
        self.steal()
    }

    /// Takes the upper half of the widest range in progress.
    fn steal(&self) -> Option<Task> {
        let active = self.active.lock().unwrap();
        let widest = active
            .iter()
            .filter_map(|r| {
                let range = r.lock().unwrap();
                let position = range.position.as_deref()?;
                let (_, span) = split_point(&range.prefix, position, range.until.as_deref())?;
                Some((span, r))
            })
            .max_by_key(|(span, _)| *span)?
            .1;
        let mut range = widest.lock().unwrap();
        let (mid, _) = split_point(
            &range.prefix,
            range.position.as_deref()?,
            range.until.as_deref(),
        )?;
        let until = range.until.replace(mid.clone());
        // Counted busy before the owner can finish: it needs the `active` lock held here.
        self.busy.fetch_add(1, Ordering::SeqCst);
        self.splits.fetch_add(1, Ordering::Relaxed);
        Some(Task {
            prefix: range.prefix.clone(),
            after: Some(mid),
            until,
        })
    }

    fn finished(&self) -> bool {
        let queue = self.queue.lock().unwrap();
        queue.is_empty() && self.busy.load(Ordering::SeqCst) == 0
    }

    fn discovered(&self, prefixes: Vec<String>) {
        let mut seen = self.seen.lock().unwrap();
        let mut queue = self.queue.lock().unwrap();
        for prefix in prefixes {
            if seen.insert(prefix.clone()) {
                queue.push_back(Task {
                    prefix,
                    after: None,
                    until: None,
                });
            }
        }
    }
}

/// Tracks the version listed just before, to tell when each version was superseded.
#[derive(Default)]
struct Supersession {
    previous: Option<(String, DateTime<Utc>)>,
}

impl Supersession {
    fn listed(&mut self, version: Version) -> Listed {
        let superseded = match &self.previous {
            Some((key, time)) if *key == version.key => Some(*time),
            _ => None,
        };
        self.previous = Some((version.key.clone(), version.last_modified));
        Listed {
            superseded: if version.is_latest { None } else { superseded },
            version,
        }
    }
}

fn stopped(client: &BucketClient, prefix: &str) -> StoreError {
    StoreError::new(
        ErrorKind::Other,
        "list versions of",
        client.locate(prefix),
        "the receiver stopped",
    )
}

async fn run_task(
    shared: &Shared,
    client: &BucketClient,
    task: Task,
    tx: &mpsc::Sender<Vec<Listed>>,
) -> Result<()> {
    let range = Arc::new(Mutex::new(Range {
        prefix: task.prefix.clone(),
        position: None,
        until: task.until,
    }));
    shared.active.lock().unwrap().push(range.clone());
    let result = async {
        let mut marker = task.after.map(|a| (a, None));
        let mut supersession = Supersession::default();
        loop {
            let page = client
                .list_page(&task.prefix, Some("/"), marker.as_ref())
                .await?;
            shared.requests.fetch_add(1, Ordering::Relaxed);
            let until = Range::take_page(&range, &page);
            let beyond = |key: &str| until.as_deref().is_some_and(|u| key > u);
            let mut batch = Vec::with_capacity(page.entries.len());
            let mut past_end = false;
            for version in page.entries {
                if beyond(&version.key) {
                    past_end = true;
                    break;
                }
                batch.push(supersession.listed(version));
            }
            shared.discovered(page.prefixes);
            shared
                .versions
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            if !batch.is_empty() && tx.send(batch).await.is_err() {
                return Err(stopped(client, &task.prefix));
            }
            match page.next {
                Some(next) if !past_end => {
                    let done =
                        beyond(&next.0) || (Some(&next.0) == until.as_ref() && next.1.is_none());
                    if done {
                        return Ok(());
                    }
                    marker = Some(next);
                }
                _ => return Ok(()),
            }
        }
    }
    .await;
    shared
        .active
        .lock()
        .unwrap()
        .retain(|r| !Arc::ptr_eq(r, &range));
    result
}

/// Lists every version under `prefix` with `workers` requests in flight.
pub async fn list_parallel(
    client: Arc<BucketClient>,
    prefix: &str,
    workers: usize,
    tx: mpsc::Sender<Vec<Listed>>,
) -> Result<Stats> {
    let shared = Arc::new(Shared::default());
    shared.discovered(vec![prefix.to_string()]);
    let mut handles = Vec::new();
    for _ in 0..workers.max(1) {
        let (shared, client, tx) = (shared.clone(), client.clone(), tx.clone());
        handles.push(tokio::spawn(async move {
            while !shared.failed.load(Ordering::SeqCst) {
                let Some(task) = shared.next_task() else {
                    if shared.finished() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                };
                let result = run_task(&shared, &client, task, &tx).await;
                shared.busy.fetch_sub(1, Ordering::SeqCst);
                if let Err(e) = result {
                    shared.failed.store(true, Ordering::SeqCst);
                    return Err(e);
                }
            }
            Ok(())
        }));
    }
    drop(tx);
    let mut first_error = None;
    for handle in handles {
        let outcome = handle.await.unwrap_or_else(|e| {
            Err(StoreError::new(
                ErrorKind::Other,
                "list versions of",
                client.locate(prefix),
                format!("listing worker failed: {e}"),
            ))
        });
        if let Err(e) = outcome {
            first_error.get_or_insert(e);
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(Stats {
            versions: shared.versions.load(Ordering::Relaxed),
            requests: shared.requests.load(Ordering::Relaxed),
            splits: shared.splits.load(Ordering::Relaxed),
        }),
    }
}

/// One ListObjectVersions pagination, no delimiter: the baseline the benchmark compares with.
pub async fn list_sequential(
    client: &BucketClient,
    prefix: &str,
    tx: mpsc::Sender<Vec<Listed>>,
) -> Result<Stats> {
    let mut stats = Stats::default();
    let mut marker = None;
    let mut supersession = Supersession::default();
    loop {
        let page = client.list_page(prefix, None, marker.as_ref()).await?;
        stats.requests += 1;
        stats.versions += page.entries.len() as u64;
        let batch: Vec<Listed> = page
            .entries
            .into_iter()
            .map(|v| supersession.listed(v))
            .collect();
        if tx.send(batch).await.is_err() {
            return Err(stopped(client, prefix));
        }
        match page.next {
            Some(next) => marker = Some(next),
            None => return Ok(stats),
        }
    }
}

/// The current, not deleted, object of every key under `prefix`.
pub async fn current_objects(
    client: Arc<BucketClient>,
    prefix: &str,
    workers: usize,
) -> Result<HashMap<String, Version>> {
    let (tx, mut rx) = mpsc::channel(workers.max(1) * 2);
    let listing = tokio::spawn({
        let prefix = prefix.to_string();
        async move { list_parallel(client, &prefix, workers, tx).await }
    });
    let mut current = HashMap::new();
    while let Some(batch) = rx.recv().await {
        for listed in batch {
            if listed.version.is_latest && !listed.version.delete_marker {
                current.insert(listed.version.key.clone(), listed.version);
            }
        }
    }
    listing.await.map_err(|e| {
        StoreError::new(
            ErrorKind::Other,
            "list versions of",
            prefix.to_string(),
            e.to_string(),
        )
    })??;
    Ok(current)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_points_lie_strictly_inside_their_range() {
        // (prefix, after, until, splittable)
        let cases: &[(&str, &str, Option<&str>, bool)] = &[
            ("flat/", "flat/k00010", None, true),
            ("flat/", "flat/k00010", Some("flat/k19999"), true),
            ("flat/", "flat/k00010", Some("flat/k00011"), true),
            ("", "a", Some("b"), true),
            // Beyond printable ASCII: left to the range's owner.
            ("p/", "p/\u{e9}t\u{e9}", None, false),
            // Nothing lies strictly between.
            ("p/", "p/x", Some("p/x "), false),
        ];
        for (prefix, after, until, splittable) in cases {
            let split = split_point(prefix, after, *until);
            assert_eq!(split.is_some(), *splittable, "{after} {until:?}");
            if let Some((mid, span)) = split {
                assert!(*after < mid.as_str(), "{after} < {mid}");
                assert!(until.is_none_or(|u| mid.as_str() < u), "{mid} < {until:?}");
                assert!(mid.starts_with(prefix), "{mid}");
                assert!(span > 1);
            }
        }
        assert_eq!(split_point("p/", "p/z", Some("p/a")), None);
    }

    #[test]
    fn a_thief_splits_above_the_page_its_owner_is_emitting() {
        let shared = Shared::default();
        let range = Arc::new(Mutex::new(Range {
            prefix: "flat/".into(),
            position: Some("flat/k00010".into()),
            until: None,
        }));
        shared.active.lock().unwrap().push(range.clone());
        let page = |last: &str, next: bool| VersionPage {
            entries: vec![crate::bucket::version(last, "v", "e", 1, true)],
            prefixes: vec![],
            next: next.then(|| (last.to_string(), None)),
        };
        // The owner took a page up to k00500 and is emitting it: a thief's range starts above.
        assert_eq!(Range::take_page(&range, &page("flat/k00500", true)), None);
        let stolen = shared.steal().expect("splittable");
        let after = stolen.after.unwrap();
        assert!(after.as_str() > "flat/k00500", "{after}");
        assert_eq!(range.lock().unwrap().until.as_ref(), Some(&after));
        // The owner's next page ends within its shortened range, and is its last: no thief
        // may take anything of it.
        let until = Range::take_page(&range, &page("flat/k00900", false));
        assert_eq!(until, Some(after));
        assert!(shared.steal().is_none());
    }

    #[test]
    fn supersession_follows_each_key_newest_first() {
        let mut s = Supersession::default();
        let listed: Vec<_> = [
            crate::bucket::version("a", "a2", "e", 5, true),
            crate::bucket::version("a", "a1", "e", 3, false),
            crate::bucket::version("b", "b1", "e", 1, false),
        ]
        .into_iter()
        .map(|v| s.listed(v))
        .collect();
        assert_eq!(listed[0].superseded, None);
        assert_eq!(listed[1].superseded, Some(listed[0].version.last_modified));
        // b1 is not current, but nothing newer was listed for it: not known to be superseded.
        assert_eq!(listed[2].superseded, None);
    }
}
