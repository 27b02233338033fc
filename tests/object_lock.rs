//! Object Lock tied to the cycle, against moto with a bucket created with Object Lock: every
//! object of a run carries the lock (mode and retain-until date, read by HEAD), the backup's
//! own credentials cannot delete a locked version, a delete marker hides nothing from `list`,
//! `prune` keeps a run retention retires while it is locked ("kept: locked until …") and
//! retires it, every version, once the lock has expired on the server's clock. A bucket
//! without Object Lock, and a local Bucket, are clear errors.
//!
//! A short lock: the runs are scheduled (`--now`) a few seconds before midnight, when the next
//! backup into their only slot is due, so their earliest retirement is seconds away, and
//! ObjectLockMargin is seconds. moto keeps the lock given on PutObject; the one given on
//! CreateMultipartUpload it ignores, and the PutObjectRetention s3nap sends after completion
//! sets it (both are checked here through the archive's HEAD).

mod common;

use std::fs;
use std::path::Path;
use std::time::Duration;

use aws_sdk_s3::types::ObjectLockMode;
use chrono::{DateTime, Utc};
use common::{random_bytes, s3nap, stderr, ConfigBuilder, Gpg, S3Server};

const BUCKET: &str = "locked";
/// Seconds before midnight each run is scheduled at: its slot is reused at midnight.
const BEFORE_MIDNIGHT: i64 = 5;
/// The lock's margin: the window in which a test sees a run locked (debug builds, shared CI).
const MARGIN: i64 = 40;

fn create_locked_bucket(server: &S3Server, name: &str) {
    server
        .block_on(
            server
                .client
                .create_bucket()
                .bucket(name)
                .object_lock_enabled_for_bucket(true)
                .send(),
        )
        .expect("create a bucket with Object Lock");
}

fn night(day: u32) -> String {
    format!("2026-11-{:02}T23:59:{:02}Z", 10 + day, 60 - BEFORE_MIDNIGHT)
}

fn run_id(day: u32) -> String {
    format!("202611{:02}T2359{:02}Z", 10 + day, 60 - BEFORE_MIDNIGHT)
}

/// The keys of run `day` in the bucket's current listing.
fn run_keys(server: &S3Server, day: u32) -> Vec<String> {
    let mut keys: Vec<String> = server
        .keys(BUCKET)
        .into_iter()
        .filter(|k| k.contains(&run_id(day)))
        .collect();
    keys.sort();
    keys
}

/// (mode, retain-until) of `key` as HeadObject reports them.
fn lock_of(server: &S3Server, key: &str) -> (Option<ObjectLockMode>, Option<DateTime<Utc>>) {
    let head = server
        .block_on(server.client.head_object().bucket(BUCKET).key(key).send())
        .unwrap_or_else(|e| panic!("HEAD {key}: {e:?}"));
    let until = head
        .object_lock_retain_until_date()
        .and_then(|t| DateTime::<Utc>::from_timestamp(t.secs(), 0));
    (head.object_lock_mode().cloned(), until)
}

/// Every (key, version id, delete marker?) under `prefix`.
fn versions(server: &S3Server, prefix: &str) -> Vec<(String, String, bool)> {
    let out = server
        .block_on(
            server
                .client
                .list_object_versions()
                .bucket(BUCKET)
                .prefix(prefix)
                .send(),
        )
        .unwrap();
    let mut all: Vec<(String, String, bool)> = out
        .versions()
        .iter()
        .map(|v| {
            (
                v.key().unwrap().into(),
                v.version_id().unwrap().into(),
                false,
            )
        })
        .chain(out.delete_markers().iter().map(|m| {
            (
                m.key().unwrap().into(),
                m.version_id().unwrap().into(),
                true,
            )
        }))
        .collect();
    all.sort();
    all
}

fn config(dir: &Path, server: &S3Server, bucket: &str, tree: &Path) -> String {
    let conf = ConfigBuilder::new(dir)
        .s3(server, bucket)
        .cycle("c", |c| {
            c.line(format!(
                "Diffs 0\nFulls 1\nObjectLock governance\nObjectLockMargin {MARGIN}s"
            ))
            .directory(tree)
        })
        .build();
    conf.to_str().unwrap().to_string()
}

#[test]
fn runs_are_locked_until_their_slot_is_reused_and_prune_keeps_them_until_the_lock_expires() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let server = S3Server::start();
    create_locked_bucket(&server, BUCKET);
    let tree = dir.join("tree");
    fs::create_dir_all(&tree).unwrap();
    fs::write(tree.join("hosts"), b"127.0.0.1 localhost\n").unwrap();
    let conf = config(dir, &server, BUCKET, &tree);

    let before = Utc::now();
    let first = s3nap(&["-c", &conf, "--now", &night(0)], &[]);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let after = Utc::now();

    // Archive, range hashes and manifest: each locked in governance mode until the slot's
    // reuse (BEFORE_MIDNIGHT seconds after the scheduled run) plus the margin, counted on the
    // server's clock (moto runs on this machine's) from the commit.
    let keys = run_keys(&server, 0);
    assert_eq!(keys.len(), 3, "{keys:?}");
    let span = chrono::Duration::seconds(BEFORE_MIDNIGHT + MARGIN);
    let mut latest = before;
    for key in &keys {
        let (mode, until) = lock_of(&server, key);
        assert_eq!(mode, Some(ObjectLockMode::Governance), "{key}");
        let until = until.unwrap_or_else(|| panic!("{key} has no retain-until date"));
        assert!(
            until >= before + span - chrono::Duration::seconds(1)
                && until <= after + span + chrono::Duration::seconds(1),
            "{key} locked until {until}, expected {span} after {before}..{after}"
        );
        latest = latest.max(until);
    }

    // The backup's own credentials cannot delete a locked version; a delete without a version
    // id only lays a delete marker on it, which hides the run from nobody.
    let manifest = keys.iter().find(|k| k.ends_with(".manifest.json")).unwrap();
    let archive = keys
        .iter()
        .find(|k| !k.ends_with(".manifest.json") && !k.ends_with(".sha256"))
        .unwrap();
    let version = versions(&server, archive)[0].1.clone();
    let refused = server.block_on(
        server
            .client
            .delete_object()
            .bucket(BUCKET)
            .key(archive)
            .version_id(&version)
            .send(),
    );
    assert!(refused.is_err(), "a locked version was deleted");
    server
        .block_on(
            server
                .client
                .delete_object()
                .bucket(BUCKET)
                .key(manifest)
                .send(),
        )
        .unwrap();
    assert!(!server.keys(BUCKET).contains(manifest), "no delete marker?");
    let listed = s3nap(&["-c", &conf, "list", "--json"], &[]);
    assert_eq!(listed.status.code(), Some(0), "{}", stderr(&listed));
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains(&run_id(0)),
        "the run under a delete marker is not listed: {}",
        String::from_utf8_lossy(&listed.stdout)
    );

    // The next day's run takes the only slot: retention retires the first run, but it is
    // still locked, so it is kept — by the run's own retention and by prune.
    fs::write(tree.join("hosts"), b"127.0.0.1 localhost changed\n").unwrap();
    let second = s3nap(&["-c", &conf, "--now", &night(1), "--json"], &[]);
    assert_eq!(second.status.code(), Some(0), "{}", stderr(&second));
    assert!(
        Utc::now() < latest,
        "the test ran too slowly to see the lock"
    );
    let until = latest.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let outcome: serde_json::Value = serde_json::from_slice(&second.stdout).unwrap();
    assert_eq!(outcome["outcome"], "committed", "{outcome}");
    assert_eq!(outcome["retired"], serde_json::json!([]), "{outcome}");
    assert_eq!(
        outcome["kept_locked"],
        serde_json::json!([{ "run": run_id(0), "until": until }]),
        "{outcome}"
    );
    assert!(
        stderr(&second).contains(&format!("{} kept: locked until {until}", run_id(0))),
        "{}",
        stderr(&second)
    );
    let pruned = s3nap(&["-c", &conf, "prune", "--now", &night(1)], &[]);
    assert_eq!(pruned.status.code(), Some(0), "{}", stderr(&pruned));
    let printed = String::from_utf8_lossy(&pruned.stdout);
    assert!(
        printed.contains(&format!("{} kept: locked until {until}", run_id(0))),
        "{printed}"
    );
    for key in &keys {
        assert!(
            !versions(&server, key).is_empty(),
            "{key} is gone while locked"
        );
    }

    // Once the lock has expired on the server's clock, prune retires the run: every version
    // of each of its objects, the delete marker too.
    let wait = (latest - Utc::now()).num_milliseconds().max(0) as u64 + 1500;
    std::thread::sleep(Duration::from_millis(wait));
    let pruned = s3nap(&["-c", &conf, "prune", "--now", &night(1)], &[]);
    assert_eq!(pruned.status.code(), Some(0), "{}", stderr(&pruned));
    let printed = String::from_utf8_lossy(&pruned.stdout);
    assert!(
        printed.contains(&format!("retired {}", run_id(0))),
        "{printed}"
    );
    for key in &keys {
        assert_eq!(versions(&server, key), vec![], "{key} left versions behind");
    }
    assert_eq!(run_keys(&server, 1).len(), 3);
}

#[test]
fn a_bucket_without_object_lock_fails_the_set_and_stores_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let server = S3Server::start();
    server.create_bucket("plain");
    let tree = dir.join("tree");
    fs::create_dir_all(&tree).unwrap();
    fs::write(tree.join("hosts"), b"127.0.0.1 localhost\n").unwrap();
    let conf = config(dir, &server, "plain", &tree);
    let out = s3nap(&["-c", &conf, "--now", &night(0)], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("s3://plain/ does not have Object Lock enabled"),
        "{}",
        stderr(&out)
    );
    assert_eq!(server.keys("plain"), Vec::<String>::new());
    assert!(server.open_uploads("plain").is_empty());
    // The bucket as it is seen: no lock configuration.
    let config = server.block_on(
        server
            .client
            .get_object_lock_configuration()
            .bucket("plain")
            .send(),
    );
    assert!(config.is_err_and(|e| format!("{e:?}").contains("ObjectLockConfigurationNotFound")));
}

#[test]
fn object_lock_on_a_local_bucket_is_a_configuration_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let conf = ConfigBuilder::new(dir)
        .line("ObjectLock compliance")
        .directory(&dir.join("tree"))
        .build();
    let out = s3nap(&["-c", conf.to_str().unwrap(), "config", "check"], &[]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("has ObjectLock, but Bucket"),
        "{}",
        stderr(&out)
    );
}

/// S3 refuses a part of a locked upload without a Content-MD5 (or checksum) header; moto does
/// not, so the proxy enforces S3's rule (and checks the digest) on every part.
#[test]
fn parts_of_a_locked_upload_carry_their_content_md5() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let server = S3Server::start();
    create_locked_bucket(&server, BUCKET);
    let proxy = common::proxy::FaultProxy::start(&server);
    let rule = proxy.add(serde_json::json!({
        "method": "PUT", "target": "partNumber=", "action": "require_md5", "times": 0
    }));
    let tree = dir.join("tree");
    fs::create_dir_all(&tree).unwrap();
    fs::write(tree.join("data"), common::random_bytes(3 << 20, 7)).unwrap();
    let conf = ConfigBuilder::new(dir)
        .s3_via(&server, &proxy, BUCKET)
        .cycle("c", |c| {
            c.line("Diffs 0\nFulls 1\nObjectLock governance\nObjectLockMargin 5s")
                .directory(&tree)
        })
        .build();
    let out = s3nap(&["-c", conf.to_str().unwrap(), "--now", &night(0)], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(proxy.hits_of(rule) >= 1, "no part went through the rule");
    assert_eq!(run_keys(&server, 0).len(), 3);
}

/// A bucket that keeps versions without any set locking (versioning enabled by its owner, or a
/// prune host's configuration without ObjectLock): the store asks the bucket, so a retired run
/// leaves no version and no delete marker behind, billed for ever.
#[test]
fn a_versioned_bucket_without_object_lock_retires_every_version() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let server = S3Server::start();
    server.create_bucket(BUCKET);
    server.enable_versioning(BUCKET);
    let tree = dir.join("tree");
    fs::create_dir_all(&tree).unwrap();
    fs::write(tree.join("hosts"), b"127.0.0.1 localhost\n").unwrap();
    let conf = ConfigBuilder::new(dir)
        .s3(&server, BUCKET)
        .cycle("c", |c| c.line("Diffs 0\nFulls 1").directory(&tree))
        .build();
    let conf = conf.to_str().unwrap();
    for day in [0, 1] {
        let out = s3nap(&["-c", conf, "--now", &night(day)], &[]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    // Run 1 took the only slot over, and its run retired run 0: every version of its keys.
    assert_eq!(run_keys(&server, 1).len(), 3);
    let left: Vec<_> = versions(&server, "h/")
        .into_iter()
        .filter(|(key, _, _)| key.contains(&run_id(0)))
        .collect();
    assert_eq!(left, vec![], "run 0 left versions or delete markers behind");
}

/// Quilted content is locked with the run that uploads it, and a later run that reuses it
/// extends its lock to that run's date: content outlives, locked, every run that references it.
#[test]
fn quilt_content_is_locked_until_the_latest_run_that_references_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let server = S3Server::start();
    create_locked_bucket(&server, BUCKET);
    let gpg = Gpg::new(dir);
    let tree = dir.join("tree");
    fs::create_dir_all(&tree).unwrap();
    fs::write(tree.join("big.bin"), random_bytes(100 << 10, 7)).unwrap();
    let key = dir.join("quilt.key");
    fs::write(&key, format!("{}\n", "3c".repeat(32))).unwrap();
    fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let conf = ConfigBuilder::new(dir)
        .s3(&server, BUCKET)
        .gpg(&gpg)
        .line(format!("QuiltKeyFile {}", key.display()))
        .cycle("c", |c| {
            c.line(format!(
                "Diffs 0\nFulls 1\nObjectLock governance\nObjectLockMargin {MARGIN}s\nQuilt yes"
            ))
            .directory(&tree)
        })
        .build();
    let conf = conf.to_str().unwrap();
    let archive_of = |day: u32| {
        run_keys(&server, day)
            .into_iter()
            .find(|k| k.ends_with(".tar.zst.gpg"))
            .unwrap_or_else(|| panic!("no archive of run {day}"))
    };

    let out = s3nap(&["-c", conf, "--now", &night(0)], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let content: Vec<String> = server
        .keys(BUCKET)
        .into_iter()
        .filter(|k| k.starts_with("quilt/content/"))
        .collect();
    assert_eq!(content.len(), 1, "{content:?}");
    let first = lock_of(&server, &archive_of(0));
    assert_eq!(lock_of(&server, &content[0]), first);

    // A second later (moto's dates are whole seconds), the next run reuses the content.
    std::thread::sleep(Duration::from_millis(2100));
    let out = s3nap(&["-c", conf, "--now", &night(1)], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let second = lock_of(&server, &archive_of(1));
    assert!(second.1 > first.1, "{second:?} after {first:?}");
    assert_eq!(
        lock_of(&server, &content[0]),
        second,
        "extended to the later run's date"
    );
}
