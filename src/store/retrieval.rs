//! Retrieving archived objects: keys in, a HEAD of each, a retrieval request for each archived
//! one that is neither readable nor already on its way, and a [`Report`] of what is still
//! waiting out.
//!
//! Whether an object must be retrieved is decided by HEAD ([`ObjectInfo::needs_retrieval`]),
//! never by the configuration: a lifecycle rule may have moved an archive to GLACIER after its
//! upload. A retrieval that is ongoing is not requested again (S3 would refuse it with
//! `RestoreAlreadyInProgress`). Readers (`recover`, `verify`) call [`request`] before reading
//! any byte, then either stop with [`RetrievalPending`] (exit status 5) or [`wait`].

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{DynStore, ObjectInfo, RestoreStatus, RetrievalTier, StorageClass, StoreError};

/// How archived objects are retrieved (`RetrievalTier`, `RetrievalDays`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retrieval {
    pub tier: RetrievalTier,
    /// How long the retrieved copy stays readable (and billed).
    pub days: u32,
}

impl Default for Retrieval {
    fn default() -> Self {
        Retrieval {
            tier: RetrievalTier::Standard,
            days: 3,
        }
    }
}

/// An archived object that cannot be read yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    /// As the store names it (`s3://bucket/key`).
    pub target: String,
    /// Its storage class, as HEAD reported it.
    pub class: String,
    /// The tier its retrieval was requested with now; `None`: it was already ongoing.
    pub requested: Option<RetrievalTier>,
}

/// What [`request`] found and did: the objects that cannot be read yet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub waiting: Vec<Waiting>,
}

impl Report {
    /// Every object can be read now.
    pub fn ready(&self) -> bool {
        self.waiting.is_empty()
    }

    /// The longest a waiting object's retrieval may take, as AWS documents it.
    pub fn longest_wait(&self, tier: RetrievalTier) -> Duration {
        self.waiting
            .iter()
            .map(|w| expected_wait(&w.class, w.requested.unwrap_or(tier)).1)
            .max()
            .unwrap_or_default()
    }
}

/// The tier actually used for an object of `class`: DEEP_ARCHIVE has no Expedited retrievals
/// (S3 refuses the request), so those are made at Standard.
pub fn tier_for(class: &str, tier: RetrievalTier) -> RetrievalTier {
    match (StorageClass::parse(class), tier) {
        (Some(StorageClass::DeepArchive), RetrievalTier::Expedited) => RetrievalTier::Standard,
        _ => tier,
    }
}

/// How long a retrieval of an object of `class` at `tier` takes, as AWS documents it ("Archive
/// retrieval options"): the text and the upper bound.
pub fn expected_wait(class: &str, tier: RetrievalTier) -> (&'static str, Duration) {
    const MINUTE: u64 = 60;
    const HOUR: u64 = 60 * MINUTE;
    let deep = StorageClass::parse(class) == Some(StorageClass::DeepArchive);
    let (text, upper) = match (deep, tier_for(class, tier)) {
        (false, RetrievalTier::Expedited) => ("1-5 minutes", 5 * MINUTE),
        (false, RetrievalTier::Standard) => ("3-5 hours", 5 * HOUR),
        (false, RetrievalTier::Bulk) => ("5-12 hours", 12 * HOUR),
        (true, RetrievalTier::Bulk) => ("up to 48 hours", 48 * HOUR),
        (true, _) => ("up to 12 hours", 12 * HOUR),
    };
    (text, Duration::from_secs(upper))
}

impl fmt::Display for Waiting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.requested {
            Some(tier) => write!(
                f,
                "{} ({}): {tier} retrieval requested, {}",
                self.target,
                self.class,
                expected_wait(&self.class, tier).0
            ),
            None => write!(
                f,
                "{} ({}): retrieval already pending",
                self.target, self.class
            ),
        }
    }
}

/// The objects a reader needs are archived and being retrieved: nothing was read. Exit status
/// 5 (`error.rs`); run again once the retrievals are done.
#[derive(Debug, thiserror::Error)]
pub struct RetrievalPending {
    pub report: Report,
    /// When every waiting retrieval should be done (local clock, upper bound).
    pub after: DateTime<Utc>,
}

impl fmt::Display for RetrievalPending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let objects: Vec<String> = self.report.waiting.iter().map(|w| w.to_string()).collect();
        write!(
            f,
            "retrieval requested; run again after {} (or wait with --wait-retrieval): {}",
            self.after.format("%Y-%m-%d %H:%M UTC"),
            objects.join("; ")
        )
    }
}

/// HEADs every key of `keys` and requests the retrieval of each archived one that is not
/// readable and not already being retrieved; the report lists those that cannot be read yet.
/// A missing object is not this function's business (the reader's own check names it).
pub async fn request(
    store: &DynStore,
    keys: &[String],
    retrieval: &Retrieval,
) -> Result<Report, StoreError> {
    let mut report = Report::default();
    for key in keys {
        let Some(info) = store.head(key).await? else {
            continue;
        };
        if let Some(waiting) = request_one(store, &info, retrieval).await? {
            report.waiting.push(waiting);
        }
    }
    Ok(report)
}

async fn request_one(
    store: &DynStore,
    info: &ObjectInfo,
    retrieval: &Retrieval,
) -> Result<Option<Waiting>, StoreError> {
    if !info.needs_retrieval() {
        return Ok(None);
    }
    let class = info.storage_class.clone().unwrap_or_default();
    let requested = if info.restore == RestoreStatus::Ongoing {
        None
    } else {
        let tier = tier_for(&class, retrieval.tier);
        if tier != retrieval.tier {
            log::warn!(
                "{}: {class} has no {} retrievals; requesting {tier}",
                store.locate(&info.key),
                retrieval.tier
            );
        }
        store.restore(&info.key, retrieval.days, tier).await?;
        Some(tier)
    };
    Ok(Some(Waiting {
        target: store.locate(&info.key),
        class,
        requested,
    }))
}

/// The first wait between checks, and the longest: a retrieval takes minutes to days, and a
/// HEAD per object every quarter of an hour costs nothing worth saving.
const FIRST_POLL: Duration = Duration::from_secs(30);
const MAX_POLL: Duration = Duration::from_secs(15 * 60);

/// Requests what [`request`] would and checks again (at once, then after 30 s, doubling up to
/// 15 minutes) until every object of `keys` can be read; `progress` hears of each wait.
pub async fn wait(
    store: &DynStore,
    keys: &[String],
    retrieval: &Retrieval,
    mut progress: impl FnMut(&Report, Duration),
) -> Result<(), StoreError> {
    let mut pause = Duration::ZERO;
    loop {
        let report = request(store, keys, retrieval).await?;
        if report.ready() {
            return Ok(());
        }
        progress(&report, pause);
        tokio::time::sleep(pause).await;
        pause = next_pause(pause);
    }
}

/// The wait after one of `previous`: 30 s after the first check, then doubling up to the cap.
fn next_pause(previous: Duration) -> Duration {
    if previous.is_zero() {
        FIRST_POLL
    } else {
        (previous * 2).min(MAX_POLL)
    }
}

/// [`request`], and [`RetrievalPending`] (exit status 5) unless everything can be read now.
pub async fn require_readable(
    store: &DynStore,
    keys: &[String],
    retrieval: &Retrieval,
) -> anyhow::Result<()> {
    let report = request(store, keys, retrieval).await?;
    if report.ready() {
        return Ok(());
    }
    let after = Utc::now()
        + chrono::Duration::from_std(report.longest_wait(retrieval.tier)).unwrap_or_default();
    Err(RetrievalPending { report, after }.into())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::store::memory::MemoryStore;
    use crate::store::{Store, UploadOptions};

    async fn archive(store: &MemoryStore, key: &str, class: StorageClass) {
        let options = UploadOptions {
            storage_class: class,
            ..UploadOptions::default()
        };
        let id = store.create_upload(key, &options).await.unwrap();
        let part = store
            .upload_part(key, &id, 1, Bytes::from_static(b"data"))
            .await
            .unwrap();
        store.complete_upload(key, &id, vec![part]).await.unwrap();
    }

    #[test]
    fn the_restore_header_is_read_as_s3_writes_it() {
        assert_eq!(
            RestoreStatus::parse("ongoing-request=\"true\""),
            RestoreStatus::Ongoing
        );
        let done = RestoreStatus::parse(
            "ongoing-request=\"false\", expiry-date=\"Fri, 21 Dec 2012 00:00:00 GMT\"",
        );
        let until = DateTime::parse_from_rfc3339("2012-12-21T00:00:00Z").unwrap();
        assert_eq!(
            done,
            RestoreStatus::Restored {
                until: Some(until.with_timezone(&Utc))
            }
        );
        assert_eq!(RestoreStatus::parse(""), RestoreStatus::None);
    }

    #[test]
    fn only_archive_classes_without_a_readable_copy_need_a_retrieval() {
        let info = |class: Option<&str>, restore| ObjectInfo {
            key: "k".into(),
            storage_class: class.map(str::to_string),
            restore,
            ..ObjectInfo::default()
        };
        for class in StorageClass::ALL {
            let archived = info(Some(class.name()), RestoreStatus::None);
            assert_eq!(archived.needs_retrieval(), class.is_archive(), "{class}");
            let pending = info(Some(class.name()), RestoreStatus::Ongoing);
            assert_eq!(pending.needs_retrieval(), class.is_archive(), "{class}");
            let restored = info(Some(class.name()), RestoreStatus::Restored { until: None });
            assert!(!restored.needs_retrieval(), "{class}");
        }
        assert!(!info(None, RestoreStatus::None).needs_retrieval());
        assert!(StorageClass::Glacier.is_archive() && StorageClass::DeepArchive.is_archive());
        assert!(!StorageClass::GlacierIr.is_archive());
    }

    #[tokio::test]
    async fn archived_objects_are_requested_once_and_pending_ones_not_again() {
        let memory = Arc::new(MemoryStore::new());
        archive(&memory, "h/a", StorageClass::Glacier).await;
        archive(&memory, "h/b", StorageClass::StandardIa).await;
        archive(&memory, "h/c", StorageClass::DeepArchive).await;
        let store: DynStore = memory.clone();
        let keys: Vec<String> = ["h/a", "h/b", "h/c", "h/missing"]
            .map(String::from)
            .to_vec();
        let retrieval = Retrieval {
            tier: RetrievalTier::Expedited,
            days: 2,
        };
        let first = request(&store, &keys, &retrieval).await.unwrap();
        let requested: Vec<_> = first
            .waiting
            .iter()
            .map(|w| (w.target.as_str(), w.requested))
            .collect();
        // DEEP_ARCHIVE has no Expedited tier: Standard is asked for instead.
        assert_eq!(
            requested,
            vec![
                ("memory:/h/a", Some(RetrievalTier::Expedited)),
                ("memory:/h/c", Some(RetrievalTier::Standard))
            ]
        );
        assert_eq!(
            memory.restore_requests(),
            vec![
                ("h/a".to_string(), 2, RetrievalTier::Expedited),
                ("h/c".to_string(), 2, RetrievalTier::Standard)
            ]
        );
        assert_eq!(
            first.longest_wait(retrieval.tier),
            Duration::from_secs(12 * 3600)
        );

        // Still ongoing: reported as pending, not requested again.
        let second = require_readable(&store, &keys, &retrieval)
            .await
            .unwrap_err();
        let pending = second.downcast_ref::<RetrievalPending>().expect("pending");
        assert!(pending.report.waiting.iter().all(|w| w.requested.is_none()));
        let text = second.to_string();
        assert!(
            text.starts_with("retrieval requested; run again after ")
                && text.contains("memory:/h/a (GLACIER): retrieval already pending")
                && text.contains("memory:/h/c (DEEP_ARCHIVE): retrieval already pending"),
            "{text}"
        );
        assert_eq!(memory.restore_requests().len(), 2);

        memory.finish_retrievals();
        require_readable(&store, &keys, &retrieval).await.unwrap();
        assert_eq!(&memory.get("h/a").await.unwrap()[..], b"data");
        assert_eq!(memory.restore_requests().len(), 2);
    }

    #[tokio::test]
    async fn waiting_checks_again_at_once_and_then_less_and_less_often() {
        let memory = Arc::new(MemoryStore::new());
        archive(&memory, "h/a", StorageClass::Glacier).await;
        let store: DynStore = memory.clone();
        let keys = vec!["h/a".to_string()];
        let mut pauses = Vec::new();
        let retrieval = Retrieval::default();
        let waited = wait(&store, &keys, &retrieval, |report, pause| {
            assert_eq!(report.waiting.len(), 1);
            pauses.push(pause);
            // Done while the first pause (none: the check right after the request) passes.
            memory.finish_retrievals();
        });
        waited.await.unwrap();
        assert_eq!(pauses, vec![Duration::ZERO]);
        assert_eq!(memory.restore_requests().len(), 1);
        let mut schedule = vec![Duration::ZERO];
        for _ in 0..7 {
            schedule.push(next_pause(*schedule.last().unwrap()));
        }
        let secs: Vec<u64> = schedule.iter().map(Duration::as_secs).collect();
        assert_eq!(secs, vec![0, 30, 60, 120, 240, 480, 900, 900]);
    }
}
