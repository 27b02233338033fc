//! Bucket sets against a real versioned S3 server (moto): a bucket history with puts,
//! overwrites, deletions, prefixes four levels deep, a flat prefix of 20,000 keys and objects
//! uploaded in parts; snapshots at three points in time; restores of each point into a new
//! bucket with --delete that must list exactly that point's keys with identical ETags; diff;
//! gc after retention (by cycle slots, and by age after snapshots stopped) that deletes exactly
//! the versions no kept snapshot needs, while every kept snapshot still restores completely.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use aws_sdk_s3::types::{
    BucketLifecycleConfiguration, CompletedMultipartUpload, CompletedPart, ExpirationStatus,
    LifecycleRule, LifecycleRuleFilter, NoncurrentVersionExpiration,
};
use common::*;
use futures::stream::{self, StreamExt};

/// key → ETag of the current objects.
type State = BTreeMap<String, String>;

struct Env {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    gpg: Gpg,
    server: S3Server,
}

fn env() -> Env {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let gpg = Gpg::new(&dir);
    let server = S3Server::start();
    server.create_bucket("backups");
    Env {
        _tmp: tmp,
        dir,
        gpg,
        server,
    }
}

impl Env {
    fn config(&self, bucket_block: &str) -> PathBuf {
        ConfigBuilder::new(&self.dir)
            .s3(&self.server, "backups/s3nap")
            .gpg(&self.gpg)
            .line(bucket_block)
            .build()
    }

    fn s3nap(&self, conf: &Path, args: &[&str]) -> std::process::Output {
        let mut all = vec!["-c", conf.to_str().unwrap()];
        all.extend_from_slice(args);
        s3nap(&all, &[])
    }

    /// Puts many small objects, 16 at a time.
    fn put_many(&self, bucket: &str, objects: Vec<(String, Vec<u8>)>) {
        let c = &self.server.client;
        let results: Vec<_> = self.server.block_on(
            stream::iter(objects)
                .map(|(key, data)| async move {
                    c.put_object()
                        .bucket(bucket)
                        .key(&key)
                        .body(data.into())
                        .send()
                        .await
                        .map_err(|e| format!("{key}: {e:?}"))
                })
                .buffer_unordered(16)
                .collect(),
        );
        for r in results {
            r.unwrap();
        }
    }

    fn delete(&self, bucket: &str, key: &str) {
        self.server
            .block_on(
                self.server
                    .client
                    .delete_object()
                    .bucket(bucket)
                    .key(key)
                    .send(),
            )
            .unwrap();
    }

    /// An object uploaded in parts of `part` bytes, with a content type and user metadata.
    fn put_multipart(&self, bucket: &str, key: &str, data: &[u8], part: usize) {
        let c = &self.server.client;
        self.server.block_on(async {
            let upload = c
                .create_multipart_upload()
                .bucket(bucket)
                .key(key)
                .content_type("application/x-test")
                .metadata("origin", "multipart")
                .send()
                .await
                .unwrap();
            let id = upload.upload_id().unwrap();
            let mut parts = Vec::new();
            for (i, chunk) in data.chunks(part).enumerate() {
                let n = i as i32 + 1;
                let out = c
                    .upload_part()
                    .bucket(bucket)
                    .key(key)
                    .upload_id(id)
                    .part_number(n)
                    .body(chunk.to_vec().into())
                    .send()
                    .await
                    .unwrap();
                parts.push(
                    CompletedPart::builder()
                        .part_number(n)
                        .e_tag(out.e_tag().unwrap())
                        .build(),
                );
            }
            c.complete_multipart_upload()
                .bucket(bucket)
                .key(key)
                .upload_id(id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
                .await
                .unwrap();
        });
    }

    /// The current objects of `bucket` (paginated ListObjectsV2).
    fn current(&self, bucket: &str) -> State {
        let c = &self.server.client;
        let mut state = State::new();
        let mut token = None;
        loop {
            let out = self
                .server
                .block_on(
                    c.list_objects_v2()
                        .bucket(bucket)
                        .set_continuation_token(token)
                        .send(),
                )
                .unwrap();
            for o in out.contents() {
                state.insert(o.key().unwrap().to_string(), o.e_tag().unwrap().to_string());
            }
            match out.next_continuation_token() {
                Some(t) if out.is_truncated() == Some(true) => token = Some(t.to_string()),
                _ => return state,
            }
        }
    }

    /// Every (key, version id) of `bucket`, delete markers included.
    fn versions(&self, bucket: &str) -> BTreeSet<(String, String)> {
        let c = &self.server.client;
        let mut all = BTreeSet::new();
        let (mut key, mut version) = (None, None);
        loop {
            let out = self
                .server
                .block_on(
                    c.list_object_versions()
                        .bucket(bucket)
                        .set_key_marker(key)
                        .set_version_id_marker(version)
                        .send(),
                )
                .unwrap();
            for v in out.versions() {
                all.insert((
                    v.key().unwrap().to_string(),
                    v.version_id().unwrap().to_string(),
                ));
            }
            for d in out.delete_markers() {
                all.insert((
                    d.key().unwrap().to_string(),
                    d.version_id().unwrap().to_string(),
                ));
            }
            if out.is_truncated() != Some(true) {
                return all;
            }
            key = out.next_key_marker().map(String::from);
            version = out.next_version_id_marker().map(String::from);
        }
    }

    /// The version id of the current version of `key`.
    fn current_version(&self, bucket: &str, key: &str) -> String {
        let out = self
            .server
            .block_on(
                self.server
                    .client
                    .head_object()
                    .bucket(bucket)
                    .key(key)
                    .send(),
            )
            .unwrap();
        out.version_id().unwrap().to_string()
    }

    /// `bucket restore` of the snapshot at `at` into a new bucket holding some stale keys;
    /// returns what the new bucket then holds.
    fn restore_into(&self, conf: &Path, at: &str, target: &str, stale: &State) -> State {
        self.server.create_bucket(target);
        self.put_many(
            target,
            stale
                .keys()
                .map(|k| (k.clone(), b"stale".to_vec()))
                .collect(),
        );
        let to = format!("s3://{target}");
        let out = self.s3nap(
            conf,
            &[
                "bucket",
                "restore",
                "data",
                "--at",
                at,
                "--to",
                &to,
                "--delete",
                "--identity",
                self.gpg.secret.to_str().unwrap(),
            ],
        );
        assert!(out.status.success(), "restore {at}: {}", stderr(&out));
        self.current(target)
    }
}

fn day(n: u32) -> String {
    format!("2026-03-{n:02}T03:00:00Z")
}

fn run_snapshot(e: &Env, conf: &Path, n: u32) {
    let out = e.s3nap(conf, &["--now", &day(n)]);
    assert!(out.status.success(), "snapshot {n}: {}", stderr(&out));
}

#[test]
fn snapshots_restore_every_point_in_time_exactly() {
    let e = env();
    e.server.create_bucket("master");
    e.server.create_bucket("replica");
    e.server.enable_versioning("replica");
    let conf = e.config(
        "<Bucket data>\n  Master s3://master\n  Replica s3://replica\n  Mode copy\n  Workers 6\n</Bucket>\n",
    );

    // Point 1: nested prefixes, a flat prefix of 20,000 keys, an object uploaded in parts.
    let mut objects: Vec<(String, Vec<u8>)> = (0..20_000)
        .map(|i| (format!("flat/k{i:05}"), format!("flat {i} v1").into_bytes()))
        .collect();
    for (a, b, c, d) in [(1, 1, 1, 1), (1, 1, 1, 2), (1, 2, 1, 1), (2, 1, 1, 1)] {
        for f in 0..5 {
            let key = format!("l{a}/l{b}/l{c}/l{d}/file{f}.txt");
            objects.push((key.clone(), format!("{key} v1").into_bytes()));
        }
    }
    objects.push(("top.txt".into(), b"top v1".to_vec()));
    objects.push(("gone-later.txt".into(), b"soon deleted".to_vec()));
    e.put_many("master", objects);
    let big1 = random_bytes(12 << 20, 1);
    e.put_multipart("master", "big/object.bin", &big1, 5 << 20);
    let state1 = e.current("master");
    assert!(state1["big/object.bin"].ends_with("-3\""), "{state1:?}");
    run_snapshot(&e, &conf, 1);
    assert_eq!(
        e.current("replica"),
        state1,
        "the replica mirrors the master"
    );

    // Point 2: overwrites, deletions, new keys, a new multipart version.
    let mut changes: Vec<(String, Vec<u8>)> = (0..20_000)
        .step_by(200)
        .map(|i| (format!("flat/k{i:05}"), format!("flat {i} v2").into_bytes()))
        .collect();
    changes.push(("l1/l1/l1/l1/file0.txt".into(), b"deep v2".to_vec()));
    changes.push(("l3/l1/l1/l1/new.txt".into(), b"new at 2".to_vec()));
    e.put_many("master", changes);
    for key in ["gone-later.txt", "l1/l2/l1/l1/file3.txt", "flat/k00001"] {
        e.delete("master", key);
    }
    e.put_multipart(
        "master",
        "big/object.bin",
        &random_bytes(11 << 20, 2),
        6 << 20,
    );
    let state2 = e.current("master");
    run_snapshot(&e, &conf, 2);

    // Point 3: a deleted key comes back, more overwrites and deletions.
    e.put_many(
        "master",
        vec![
            ("gone-later.txt".into(), b"back again".to_vec()),
            ("top.txt".into(), b"top v3".to_vec()),
        ],
    );
    e.delete("master", "l2/l1/l1/l1/file4.txt");
    let state3 = e.current("master");
    run_snapshot(&e, &conf, 3);
    for (a, b) in [(&state1, &state2), (&state2, &state3), (&state1, &state3)] {
        assert_ne!(a, b, "every point differs");
    }

    // The index is the archive: gpg -d | zstd -d reads it without s3nap.
    let listing = String::from_utf8(e.s3nap(&conf, &["list", "--json"]).stdout).unwrap();
    let runs: serde_json::Value = serde_json::from_str(&listing).unwrap();
    let archive = runs[0]["archive"].as_str().unwrap_or_else(|| {
        panic!("list --json shows each run's archive key: {listing}");
    });
    let plain = pipe(
        std::process::Command::new("zstd").args(["-d", "-c"]),
        &e.gpg
            .decrypt(&e.server.get("backups", &format!("s3nap/{archive}"))),
    );
    let lines = String::from_utf8(plain).unwrap();
    let first: serde_json::Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
    assert!(first["key"].is_string() && first["version_id"].is_string());
    assert!(lines.lines().count() >= state1.len(), "one line per key");

    // -t shows the exact copies and deletions and makes none.
    e.server.create_bucket("preview");
    e.put_many("preview", vec![("extra.txt".into(), b"x".to_vec())]);
    let out = e.s3nap(
        &conf,
        &[
            "-t",
            "bucket",
            "restore",
            "data",
            "--at",
            &day(3),
            "--to",
            "s3://preview",
            "--prefix",
            "l1/",
            "--delete",
            "--identity",
            e.gpg.secret.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let copies = text.lines().filter(|l| l.starts_with("copy ")).count();
    let wanted_l1 = state3.keys().filter(|k| k.starts_with("l1/")).count();
    assert_eq!(copies, wanted_l1, "{text}");
    assert!(
        text.lines()
            .all(|l| !l.starts_with("copy ") || l.contains("-> s3://preview/l1/")),
        "{text}"
    );
    // extra.txt is outside --prefix l1/: not deleted.
    assert!(!text.lines().any(|l| l.starts_with("delete ")), "{text}");
    assert_eq!(e.current("preview").len(), 1, "-t changed nothing");

    // Every point restores exactly: its keys, no others, the same ETags.
    let mut stale = State::new();
    stale.insert("not-in-any-snapshot.txt".into(), String::new());
    stale.insert("top.txt".into(), String::new());
    for (n, want) in [(1, &state1), (2, &state2), (3, &state3)] {
        let got = e.restore_into(&conf, &day(n), &format!("restored{n}"), &stale);
        assert_eq!(got.len(), want.len(), "point {n}: key count");
        assert_eq!(&got, want, "point {n}");
    }
    assert_eq!(e.server.get("restored1", "big/object.bin"), big1);
    let out = e.server.block_on(
        e.server
            .client
            .head_object()
            .bucket("restored1")
            .key("big/object.bin")
            .send(),
    );
    let head = out.unwrap();
    assert_eq!(head.content_type(), Some("application/x-test"));
    assert_eq!(
        head.metadata()
            .and_then(|m| m.get("origin"))
            .map(String::as_str),
        Some("multipart")
    );

    // A second restore of the same point copies nothing: everything is identical.
    let out = e.s3nap(
        &conf,
        &[
            "bucket",
            "restore",
            "data",
            "--at",
            &day(2),
            "--to",
            "s3://restored2",
            "--delete",
            "--identity",
            e.gpg.secret.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("copy 0, delete 0"), "{text}");

    // diff: exactly the changes between points 1 and 2.
    let out = e.s3nap(
        &conf,
        &[
            "bucket",
            "diff",
            "data",
            &day(1),
            &day(2),
            "--identity",
            e.gpg.secret.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let lines = |sign: &str| -> BTreeSet<String> {
        text.lines()
            .filter_map(|l| l.strip_prefix(sign))
            .map(|l| l.split(" (").next().unwrap().to_string())
            .collect()
    };
    let keys = |s: &State| s.keys().cloned().collect::<BTreeSet<_>>();
    let (k1, k2) = (keys(&state1), keys(&state2));
    assert_eq!(lines("+ "), &k2 - &k1);
    assert_eq!(lines("- "), &k1 - &k2);
    let changed: BTreeSet<String> = k1
        .intersection(&k2)
        .filter(|k| state1[*k] != state2[*k])
        .cloned()
        .collect();
    assert_eq!(lines("~ "), changed);
}

/// A versioned master that is its own replica, three snapshots, and history after the last.
struct History {
    /// Version ids written, by name (`a1` is the first version of key `a`).
    ids: BTreeMap<String, String>,
    states: Vec<State>,
}

fn write(e: &Env, h: &mut History, writes: &[(&str, &str)]) {
    for (key, name) in writes {
        e.put_many("master", vec![(key.to_string(), name.as_bytes().to_vec())]);
        h.ids
            .insert(name.to_string(), e.current_version("master", key));
    }
}

/// Writes a1 b1 c1 d1 | snapshot 1 | a2, b deleted | snapshot 2 | a3 c2 | snapshot 3 | d2.
fn history(e: &Env, conf: &Path, days: [u32; 3]) -> History {
    let mut h = History {
        ids: BTreeMap::new(),
        states: Vec::new(),
    };
    write(
        e,
        &mut h,
        &[("a", "a1"), ("b", "b1"), ("c", "c1"), ("d", "d1")],
    );
    h.states.push(e.current("master"));
    run_snapshot(e, conf, days[0]);
    write(e, &mut h, &[("a", "a2")]);
    e.delete("master", "b");
    h.states.push(e.current("master"));
    run_snapshot(e, conf, days[1]);
    write(e, &mut h, &[("a", "a3"), ("c", "c2")]);
    h.states.push(e.current("master"));
    run_snapshot(e, conf, days[2]);
    write(e, &mut h, &[("d", "d2")]);
    h
}

fn gone(e: &Env, h: &History, before: &BTreeSet<(String, String)>) -> BTreeSet<String> {
    let after = e.versions("master");
    before
        .difference(&after)
        .map(|(_, id)| {
            h.ids
                .iter()
                .find(|(_, v)| *v == id)
                .map(|(name, _)| name.clone())
                .unwrap_or_else(|| format!("unnamed version {id}"))
        })
        .collect()
}

#[test]
fn gc_after_slot_retention_deletes_exactly_what_no_kept_snapshot_needs() {
    let e = env();
    e.server.create_bucket("master");
    // Without versioning there is nothing to snapshot: the run fails and commits nothing.
    let conf = e.config(
        "<Bucket data>\n  Master s3://master\n  Replica s3://master\n  Fulls 2\n</Bucket>\n",
    );
    let out = e.s3nap(&conf, &["--now", &day(1)]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("versioning is not enabled"),
        "{}",
        stderr(&out)
    );
    assert!(e.current("backups").is_empty());
    e.server.enable_versioning("master");

    // Days 1 and 3 share a slot of the two: the day-3 run retires snapshot 1 and gc follows.
    let h = history(&e, &conf, [1, 2, 3]);
    let before: BTreeSet<_> = e.versions("master");

    // What went with snapshot 1, by the run's own prune after day 3: a1 and b1 only. (They
    // are gone already, so list what the whole history had.)
    let all_names: BTreeSet<String> = h.ids.keys().cloned().collect();
    let present: BTreeSet<String> = before
        .iter()
        .filter_map(|(_, id)| h.ids.iter().find(|(_, v)| *v == id).map(|(n, _)| n.clone()))
        .collect();
    let deleted: BTreeSet<String> = all_names.difference(&present).cloned().collect();
    assert_eq!(
        deleted,
        ["a1", "b1"].map(String::from).into(),
        "a2 and c1 are referenced by snapshot 2, d1 by all, d2 is current"
    );

    // Nothing more may go: d1 was superseded after the newest snapshot.
    let out = e.s3nap(&conf, &["-t", "prune", "--now", &day(3)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("gc would delete 0 of"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // Both kept snapshots restore completely.
    for (i, n) in [(1, 2), (2, 3)] {
        let got = e.restore_into(&conf, &day(n), &format!("kept{n}"), &State::new());
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            h.states[i].keys().collect::<Vec<_>>()
        );
        for key in got.keys() {
            let content = String::from_utf8(e.server.get(&format!("kept{n}"), key)).unwrap();
            let expected = match (n, key.as_str()) {
                (2, "a") => "a2".to_string(),
                (3, "a") => "a3".to_string(),
                (3, "c") => "c2".to_string(),
                (_, k) => format!("{k}1"),
            };
            assert_eq!(content, expected, "snapshot {n}, key {key}");
        }
    }

    // A lifecycle rule expiring noncurrent versions sooner than the two days kept: a warning
    // naming the rule, exit status 1.
    let c = &e.server.client;
    e.server
        .block_on(
            c.put_bucket_lifecycle_configuration()
                .bucket("master")
                .lifecycle_configuration(
                    BucketLifecycleConfiguration::builder()
                        .rules(
                            LifecycleRule::builder()
                                .id("too-soon")
                                .status(ExpirationStatus::Enabled)
                                .filter(LifecycleRuleFilter::builder().prefix("").build())
                                .noncurrent_version_expiration(
                                    NoncurrentVersionExpiration::builder()
                                        .noncurrent_days(1)
                                        .build(),
                                )
                                .build()
                                .unwrap(),
                        )
                        .build()
                        .unwrap(),
                )
                .send(),
        )
        .unwrap();
    let out = e.s3nap(&conf, &["--now", &day(4)]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("lifecycle rule 'too-soon'"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn gc_after_snapshots_stopped_keeps_what_the_newest_need() {
    let e = env();
    e.server.create_bucket("master");
    e.server.enable_versioning("master");
    let conf = e.config(
        "<Bucket data>\n  Master s3://master\n  Replica s3://master\n  Fulls 30\n  \
         RetentionPolicy 2\n  MinimumRedundancy 1\n</Bucket>\n",
    );
    let h = history(&e, &conf, [1, 2, 3]);
    let before = e.versions("master");
    let present: BTreeSet<&String> = h
        .ids
        .iter()
        .filter(|(_, id)| before.iter().any(|(_, v)| v == *id))
        .map(|(name, _)| name)
        .collect();
    assert_eq!(
        present,
        h.ids.keys().collect(),
        "nothing expired yet: every snapshot is younger than RetentionPolicy"
    );

    // Forty days later every snapshot is past RetentionPolicy; the newest two stay.
    let later = day(31).replace("03-31", "04-12");
    let out = e.s3nap(&conf, &["-t", "prune", "--now", &later]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let would: BTreeSet<&str> = text
        .lines()
        .filter(|l| l.contains("would delete version"))
        .filter_map(|l| l.split("version ").nth(1)?.split(' ').next())
        .collect();
    let named = |ids: &BTreeSet<&str>| -> BTreeSet<String> {
        ids.iter()
            .map(|id| {
                h.ids
                    .iter()
                    .find(|(_, v)| v == id)
                    .map(|(n, _)| n.clone())
                    .unwrap()
            })
            .collect()
    };
    assert_eq!(
        named(&would),
        ["a1", "b1"].map(String::from).into(),
        "{text}"
    );
    assert_eq!(e.versions("master"), before, "-t deletes nothing");

    let out = e.s3nap(&conf, &["prune", "--now", &later]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(gone(&e, &h, &before), ["a1", "b1"].map(String::from).into());
    let listing = String::from_utf8(e.s3nap(&conf, &["list"]).stdout).unwrap();
    assert!(
        !listing.contains("20260301T"),
        "snapshot 1 retired: {listing}"
    );
    for (i, n) in [(1, 2), (2, 3)] {
        let got = e.restore_into(&conf, &day(n), &format!("newest{n}"), &State::new());
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            h.states[i].keys().collect::<Vec<_>>(),
            "snapshot {n}"
        );
        let a = String::from_utf8(e.server.get(&format!("newest{n}"), "a")).unwrap();
        assert_eq!(a, if n == 2 { "a2" } else { "a3" });
    }
}

/// Master objects to copy (one uploaded in parts) and a replica key the master no longer has,
/// so a `Mode copy` snapshot of them would change the replica: copies, a multipart copy, a
/// delete marker. Returns the replica's versions before.
fn pending_changes(e: &Env, big: usize) -> BTreeSet<(String, String)> {
    e.server.create_bucket("master");
    e.server.create_bucket("replica");
    e.server.enable_versioning("replica");
    e.put_many(
        "master",
        (0..50)
            .map(|i| (format!("k{i:02}"), format!("v{i}").into_bytes()))
            .collect(),
    );
    e.put_multipart("master", "big.bin", &random_bytes(big, 3), 5 << 20);
    e.put_many(
        "replica",
        vec![("stale.txt".into(), b"gone from the master".to_vec())],
    );
    e.versions("replica")
}

#[test]
fn a_bucket_set_that_fails_its_checks_leaves_the_replica_untouched() {
    let e = env();
    let before = pending_changes(&e, 15 << 20);
    // A set after it keeps the process alive for a while, as a longer run would.
    let slow = e.dir.join("slow.sh");
    std::fs::write(&slow, "#!/bin/sh\nsleep 3\necho data\n").unwrap();
    std::fs::set_permissions(&slow, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let conf = e.config(&format!(
        "<Bucket data>\n  Master s3://master\n  Replica s3://replica\n  Mode copy\n</Bucket>\n\
         <Command slow>\n  Run {}\n</Command>\n",
        slow.display()
    ));
    // The run's archive key is taken, so the set fails before it reads anything.
    let taken = format!(
        "s3nap/h/bucket/data/{}.full.jsonl.zst.gpg",
        "20260301T030000Z"
    );
    e.server
        .put("backups", &taken, b"an earlier object".to_vec());

    let out = e.s3nap(&conf, &["--now", &day(1)]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("already exists"), "{err}");
    assert!(
        e.server
            .keys("backups")
            .iter()
            .any(|k| k.starts_with("s3nap/h/cmd/slow/") && k.ends_with(".manifest.json")),
        "the run went on with the next set"
    );
    assert_eq!(
        e.versions("replica"),
        before,
        "a failed set copied into or marked deletions in the replica"
    );
    assert!(e.server.open_uploads("replica").is_empty());
    assert_eq!(e.server.get("backups", &taken), b"an earlier object");
}

/// The snapshot's mirror stopped mid-copy (as when its set fails while it runs): the multipart
/// copy it had open is aborted, nothing further is copied and no deletion is marked.
#[test]
fn a_stopped_mirror_aborts_its_multipart_copy_and_marks_no_deletions() {
    use s3nap::bucket::client::BucketClient;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let e = env();
    // Sixteen parts: the copy is still under way when the test sees its upload open.
    let before = pending_changes(&e, 80 << 20);
    let retry = s3nap::store::retry::RetryPolicy::default();
    let master = Arc::new(BucketClient::new(e.server.client.clone(), "master", retry));
    let replica = Arc::new(BucketClient::new(e.server.client.clone(), "replica", retry));
    let stop = tokio_util::sync::CancellationToken::new();
    let done = AtomicBool::new(false);
    let (result, seen) = e.server.block_on(async {
        let mirror = async {
            let r = s3nap::bucket::mirror::mirror(master, replica, "", 1, &stop).await;
            done.store(true, Ordering::SeqCst);
            r
        };
        let watch = async {
            while !done.load(Ordering::SeqCst) {
                let open = e
                    .server
                    .client
                    .list_multipart_uploads()
                    .bucket("replica")
                    .send()
                    .await
                    .unwrap();
                if !open.uploads().is_empty() {
                    stop.cancel();
                    return true;
                }
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
            false
        };
        tokio::join!(mirror, watch)
    });
    assert!(seen, "the multipart copy never showed as an open upload");
    let err = format!("{:#}", result.expect_err("a stopped mirror fails"));
    assert!(err.contains("stopped"), "{err}");
    assert!(
        e.server.open_uploads("replica").is_empty(),
        "the multipart copy was left open"
    );
    // One worker copies in key order, big.bin first: nothing after it started.
    assert_eq!(
        e.versions("replica"),
        before,
        "the stopped mirror changed the replica"
    );
}
