//! Restore: a snapshot's index and the target's current objects in, the copies and deletions
//! that make the target equal that point in time out ([`plan`], pure), then carried out
//! server-side with bounded parallelism ([`execute`]). A key that fails does not stop the
//! others; every failure is reported. [`restore`] is the whole of `s3nap bucket restore`:
//! read the index back, list the target, plan, and (unless a dry run) execute.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::stream::{self, StreamExt};

use super::client::BucketClient;
use super::{Version, SINGLE_COPY_LIMIT};
use crate::config::{BucketSpec, BucketUrl, S3Spec};
use crate::pipeline::decrypt::DecryptWith;
use crate::schema::manifest::Manifest;
use crate::store::retry::RetryPolicy;
use crate::store::DynStore;

/// What `s3nap bucket restore` asks for.
pub struct Request<'a> {
    pub spec: &'a BucketSpec,
    pub s3: &'a S3Spec,
    pub retry: RetryPolicy,
    /// The snapshot restored.
    pub snapshot: &'a Manifest,
    /// Where to: the master, or another bucket and prefix.
    pub target: &'a BucketUrl,
    /// Only snapshot keys starting with this.
    pub only: &'a str,
    /// Delete target keys absent at the snapshot's point in time.
    pub delete: bool,
    /// Plan only: nothing is copied or deleted.
    pub dry_run: bool,
}

/// What a restore did, or (in a dry run) would do.
pub struct Restored {
    pub plan: Plan,
    /// `None` in a dry run.
    pub outcome: Option<Outcome>,
    /// The clients the plan's keys belong to, for naming them.
    pub replica: Arc<BucketClient>,
    pub target: Arc<BucketClient>,
}

/// Restores `request.snapshot` into its target. Blocking: call it outside the runtime
/// `handle` belongs to (the index is read back through the recovery pipeline).
pub fn restore(
    handle: &tokio::runtime::Handle,
    store: &DynStore,
    decrypt: &DecryptWith,
    request: &Request,
) -> anyhow::Result<Restored> {
    let index = super::load_index(handle, store, request.snapshot, decrypt)?;
    let spec = request.spec;
    let (master, replica) =
        handle.block_on(super::client::connect(spec, request.s3, request.retry))?;
    // Through the master's client: signed for the master's region and without the replica's
    // ServerSideEncryption. A `--to` bucket is taken to be in the master's region too.
    let target = Arc::new(master.for_bucket(&request.target.bucket));
    let source_prefix = spec.master.key_prefix();
    let scope = Scope {
        source_prefix: &source_prefix,
        target_prefix: &request.target.key_prefix(),
        only: request.only,
        delete: request.delete,
    };
    let current = handle.block_on(super::listing::current_objects(
        target.clone(),
        &scope.target_listing_prefix(),
        spec.workers,
    ))?;
    let plan = plan(&index, &current, &scope);
    let outcome = (!request.dry_run).then(|| {
        handle.block_on(execute(
            &plan,
            replica.clone(),
            target.clone(),
            spec.workers,
        ))
    });
    Ok(Restored {
        plan,
        outcome,
        replica,
        target,
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copy {
    pub version: Version,
    /// Key in the target bucket.
    pub to: String,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub copies: Vec<Copy>,
    /// Target keys absent at the point in time (with `--delete`).
    pub deletes: Vec<String>,
    /// Keys the target already holds with identical content.
    pub identical: u64,
}

/// Where a restore goes and what it covers.
pub struct Scope<'a> {
    /// The prefix the snapshot's keys start with (the master's).
    pub source_prefix: &'a str,
    /// The prefix they are placed under in the target.
    pub target_prefix: &'a str,
    /// Only snapshot keys starting with this.
    pub only: &'a str,
    pub delete: bool,
}

impl Scope<'_> {
    /// The target prefix to list: narrowed by `only` where it lies under the source prefix.
    pub fn target_listing_prefix(&self) -> String {
        match self.only.strip_prefix(self.source_prefix) {
            Some(rest) => format!("{}{rest}", self.target_prefix),
            None => self.target_prefix.to_string(),
        }
    }

    fn target_key(&self, key: &str) -> String {
        let relative = key.strip_prefix(self.source_prefix).unwrap_or(key);
        format!("{}{relative}", self.target_prefix)
    }

    /// Whether a target key is one the restore covers.
    fn covers_target(&self, key: &str) -> bool {
        key.strip_prefix(self.target_prefix)
            .is_some_and(|rel| format!("{}{rel}", self.source_prefix).starts_with(self.only))
    }
}

/// What makes `target` (its current objects by key) equal `index` within `scope`.
pub fn plan(index: &[Version], target: &HashMap<String, Version>, scope: &Scope) -> Plan {
    let mut plan = Plan::default();
    let mut wanted = HashSet::new();
    for v in index
        .iter()
        .filter(|v| !v.delete_marker && v.key.starts_with(scope.only))
    {
        let to = scope.target_key(&v.key);
        match target.get(&to) {
            Some(t) if t.size == v.size && t.etag == v.etag => plan.identical += 1,
            _ => plan.copies.push(Copy {
                version: v.clone(),
                to: to.clone(),
            }),
        }
        wanted.insert(to);
    }
    if scope.delete {
        plan.deletes = target
            .keys()
            .filter(|k| scope.covers_target(k) && !wanted.contains(*k))
            .cloned()
            .collect();
    }
    plan.copies.sort_by(|a, b| a.to.cmp(&b.to));
    plan.deletes.sort();
    plan
}

#[derive(Debug, Default)]
pub struct Outcome {
    pub copied: u64,
    pub deleted: u64,
    /// One line per key that failed, naming it.
    pub failures: Vec<String>,
}

pub async fn execute(
    plan: &Plan,
    replica: Arc<BucketClient>,
    target: Arc<BucketClient>,
    workers: usize,
) -> Outcome {
    let mut outcome = Outcome::default();
    // A restore runs to its end: nothing stops it.
    let never = tokio_util::sync::CancellationToken::new();
    let results: Vec<_> = stream::iter(plan.copies.iter())
        .map(|c| {
            let (replica, target, never) = (replica.clone(), target.clone(), &never);
            async move {
                target
                    .copy_from(&replica, &c.version, &c.to, SINGLE_COPY_LIMIT, never)
                    .await
                    .map_err(|e| {
                        format!(
                            "{} (version {}): {e}",
                            target.locate(&c.to),
                            c.version.version_id
                        )
                    })
            }
        })
        .buffer_unordered(workers.max(1))
        .collect()
        .await;
    for result in results {
        match result {
            Ok(_) => outcome.copied += 1,
            Err(e) => outcome.failures.push(e),
        }
    }
    let batch: Vec<_> = plan.deletes.iter().map(|k| (k.clone(), None)).collect();
    let refused = target.delete_all(&batch).await;
    outcome.deleted = (batch.len() - refused.len()) as u64;
    outcome.failures.extend(
        refused
            .into_iter()
            .map(|(key, _, why)| format!("{}: {why}", target.locate(&key))),
    );
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bucket::version;

    #[test]
    fn restore_plans_copy_what_differs_and_delete_what_was_absent() {
        let mut gone = version("m/gone", "g2", "", 9, true);
        gone.delete_marker = true;
        let index = vec![
            version("m/same", "s1", "\"es\"", 1, true),
            version("m/old", "o1", "\"eo1\"", 1, true),
            version("m/missing", "x1", "\"ex\"", 1, true),
            version("m/sub/a", "a1", "\"ea\"", 1, true),
            gone,
        ];
        let target: HashMap<String, Version> = [
            version("t/same", "T1", "\"es\"", 5, true),
            version("t/old", "T2", "\"eo2\"", 5, true),
            version("t/gone", "T3", "\"eg\"", 5, true),
            version("t/new", "T4", "\"en\"", 5, true),
            version("other/x", "T5", "\"ex\"", 5, true),
        ]
        .into_iter()
        .map(|v| (v.key.clone(), v))
        .collect();
        // (only, --delete, copied to, deleted, identical)
        type Case<'a> = (&'a str, bool, &'a [&'a str], &'a [&'a str], u64);
        let cases: &[Case] = &[
            (
                "",
                true,
                &["t/missing", "t/old", "t/sub/a"],
                &["t/gone", "t/new"],
                1,
            ),
            ("", false, &["t/missing", "t/old", "t/sub/a"], &[], 1),
            ("m/sub/", true, &["t/sub/a"], &[], 0),
            ("m/o", true, &["t/old"], &[], 0),
            ("m/g", true, &[], &["t/gone"], 0),
        ];
        for (only, delete, copies, deletes, identical) in cases {
            let scope = Scope {
                source_prefix: "m/",
                target_prefix: "t/",
                only,
                delete: *delete,
            };
            let p = plan(&index, &target, &scope);
            let copied: Vec<&str> = p.copies.iter().map(|c| c.to.as_str()).collect();
            assert_eq!(&copied, copies, "{only} {delete}");
            assert_eq!(&p.deletes, deletes, "{only} {delete}");
            assert_eq!(p.identical, *identical, "{only} {delete}");
        }
    }
}
