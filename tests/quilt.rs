//! Quilting, the backup side, against moto with real gpg, zstd and GNU tar: two hosts (two
//! configurations with different `Host`, one bucket, one quilt secret) back up trees that share
//! a 30 MB file; its content is stored once, under `quilt/content/`, and the second host
//! uploads nothing for it. Each run's archive stays a tar that GNU tar lists, the large file a
//! size-0 member whose PAX header names its content. A second FULL of the unchanged tree
//! stores under 2 % of the first. A host with another quilt secret is refused before it
//! stores anything.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::quilt::{assert_quilted_recovery, assert_s3nap_recovers, quilt_recover_script};
use common::*;
use serde_json::Value;

const BUCKET: &str = "quilt-test";
const BIG: usize = 30 << 20;

fn night(day: u32) -> String {
    format!("2026-11-{:02}T03:00:00Z", 10 + day)
}

/// A quilt key file (64 hex digits, owner-only) made from `byte`.
fn key_file(dir: &Path, byte: u8) -> PathBuf {
    let path = dir.join("quilt.key");
    fs::write(&path, format!("{}\n", format!("{byte:02x}").repeat(32))).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// A host's configuration in `dir`, backing up `tree` with Quilt, every run a FULL.
fn host(dir: &Path, server: &S3Server, gpg: &Gpg, name: &str, key: &Path, tree: &Path) -> String {
    fs::create_dir_all(dir).unwrap();
    ConfigBuilder::new(dir)
        .s3(server, BUCKET)
        .gpg(gpg)
        .host(Some(name))
        .line(format!("QuiltKeyFile {}", key.display()))
        .cycle("c", |c| {
            c.line("Diffs 0\nFulls 2\nQuilt yes").directory(tree)
        })
        .build()
        .to_str()
        .unwrap()
        .to_string()
}

fn tree(dir: &Path, big: &[u8], small: &str) -> PathBuf {
    let tree = dir.join("tree");
    fs::create_dir_all(tree.join("sub")).unwrap();
    fs::write(tree.join("sub/big.bin"), big).unwrap();
    fs::write(tree.join("small.txt"), small).unwrap();
    fs::write(tree.join("sub/note"), b"a small file stays inline\n").unwrap();
    tree
}

/// Bytes of every object in the bucket, as stored.
fn bucket_bytes(server: &S3Server) -> u64 {
    server
        .keys(BUCKET)
        .iter()
        .map(|k| server.get(BUCKET, k).len() as u64)
        .sum()
}

fn content_keys(server: &S3Server) -> Vec<String> {
    server
        .keys(BUCKET)
        .into_iter()
        .filter(|k| k.starts_with("quilt/content/"))
        .collect()
}

/// The manifests under `host/`, oldest first, parsed.
fn manifests(server: &S3Server, host: &str) -> Vec<Value> {
    let mut keys: Vec<String> = server
        .keys(BUCKET)
        .into_iter()
        .filter(|k| k.starts_with(&format!("{host}/")) && k.ends_with(".manifest.json"))
        .collect();
    keys.sort();
    keys.iter()
        .map(|k| serde_json::from_slice(&server.get(BUCKET, k)).unwrap())
        .collect()
}

#[test]
fn two_hosts_store_a_shared_file_once_and_a_host_with_another_secret_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let server = S3Server::start();
    server.create_bucket(BUCKET);
    let gpg = Gpg::new(dir);
    let key = key_file(dir, 0x5a);
    let big = random_bytes(BIG, 16);
    let tree_a = tree(&dir.join("a"), &big, "host a\n");
    let tree_b = tree(&dir.join("b"), &big, "host b\n");
    let conf_a = host(&dir.join("a"), &server, &gpg, "alpha", &key, &tree_a);
    let conf_b = host(&dir.join("b"), &server, &gpg, "beta", &key, &tree_b);

    // -t says the set is quilted, and stores nothing.
    let out = s3nap(&["-c", &conf_a, "--now", &night(0), "-t"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let plan = String::from_utf8_lossy(&out.stdout);
    assert!(
        plan.contains("quilted: files of 65536 bytes or more"),
        "{plan}"
    );
    assert!(server.keys(BUCKET).is_empty(), "{:?}", server.keys(BUCKET));

    let out = s3nap(&["-c", &conf_a, "--now", &night(0)], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let first = bucket_bytes(&server);
    let content = content_keys(&server);
    assert_eq!(content.len(), 1, "{content:?}");
    assert!(server.keys(BUCKET).contains(&"quilt/secret.id".to_string()));
    // The content object is OpenPGP(zstd(file)) to the recipients.
    let stored = server.get(BUCKET, &content[0]);
    let plain = pipe(
        Command::new("zstd").args(["-d", "-c"]),
        &gpg.decrypt(&stored),
    );
    assert!(plain == big, "the content object holds the file");

    let out = s3nap(&["-c", &conf_b, "--now", &night(0)], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(content_keys(&server), content, "no new content object");

    let a = &manifests(&server, "alpha")[0];
    let b = &manifests(&server, "beta")[0];
    for m in [a, b] {
        assert_eq!(m["format"], 3, "{m}");
        assert_eq!(m["quilt"]["content"], serde_json::json!(content), "{m}");
        assert!(
            m["counts"]["content_bytes"].as_u64().unwrap() >= BIG as u64,
            "content_bytes counts the quilted file: {m}"
        );
    }
    assert_eq!(a["quilt"]["uploaded"], 1, "{a}");
    assert_eq!(b["quilt"]["uploaded"], 0, "{b}");
    assert!(b["quilt"]["reused"].as_u64().unwrap() >= 1, "{b}");
    assert_eq!(b["quilt"]["uploaded_bytes"], 0, "{b}");

    // Both hosts' runs recover exactly, with s3nap and with the stock-tool script, from the
    // one content object.
    for (conf, tree, m, name) in [(&conf_a, &tree_a, a, "a"), (&conf_b, &tree_b, b, "b")] {
        assert_quilted_recovery(
            Path::new(conf),
            tree,
            &server,
            BUCKET,
            m["archive"]["key"].as_str().unwrap(),
            &gpg,
            &dir.join(format!("recovered-{name}")),
        );
    }

    // The archive: gpg -d | zstd -d gives a tar GNU tar lists, big.bin as a size-0 member
    // whose PAX header carries the reference.
    let archive = server.get(BUCKET, a["archive"]["key"].as_str().unwrap());
    assert!(
        archive.len() < 1 << 20,
        "the archive holds no copy of the big file: {} bytes",
        archive.len()
    );
    let tar = pipe(
        Command::new("zstd").args(["-d", "-c"]),
        &gpg.decrypt(&archive),
    );
    let listing = pipe(Command::new("tar").args(["-tvf", "-"]), &tar);
    let listing = String::from_utf8_lossy(&listing);
    let line = listing
        .lines()
        .find(|l| l.ends_with("sub/big.bin"))
        .unwrap_or_else(|| panic!("{listing}"));
    assert!(line.split_whitespace().nth(2) == Some("0"), "{line}");
    assert!(listing.contains("small.txt"), "{listing}");
    let mut records = None;
    let mut reader = ::tar::Archive::new(&tar[..]);
    for entry in reader.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path().unwrap().ends_with("sub/big.bin") {
            assert_eq!(entry.header().size().unwrap(), 0);
            let pax: Vec<(String, String)> = entry
                .pax_extensions()
                .unwrap()
                .expect("a PAX header")
                .map(|r| {
                    let r = r.unwrap();
                    (r.key().unwrap().to_string(), r.value().unwrap().to_string())
                })
                .collect();
            records = Some(pax);
        }
    }
    let records = records.expect("big.bin is in the archive");
    let get = |k: &str| records.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert_eq!(get("S3NAP.quilt.key").as_ref(), Some(&content[0]));
    assert_eq!(get("S3NAP.quilt.size"), Some(BIG.to_string()));
    assert_eq!(get("S3NAP.quilt.sha256").map(|s| s.len()), Some(64));

    // A second FULL of the unchanged tree stores under 2 % of the first (which stored the
    // archive and the 30 MB content object).
    let before = bucket_bytes(&server);
    let out = s3nap(&["-c", &conf_a, "--now", &night(1)], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let runs = manifests(&server, "alpha");
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[1]["kind"], "full", "{}", runs[1]);
    let second = bucket_bytes(&server) - before;
    eprintln!("first FULL stored {first} bytes, the second {second}");
    assert!(
        (second as f64) < 0.02 * first as f64,
        "second FULL stored {second} bytes, the first {first}"
    );
    assert_eq!(content_keys(&server), content);

    // A host configured with another secret is refused (exit status 2, naming its key file
    // and the quilt's secret.id) and stores nothing.
    let other_dir = dir.join("c");
    fs::create_dir_all(&other_dir).unwrap();
    let other_key = key_file(&other_dir, 0x11);
    let tree_c = tree(&other_dir, &big, "host c\n");
    let conf_c = host(&other_dir, &server, &gpg, "gamma", &other_key, &tree_c);
    let out = s3nap(&["-c", &conf_c, "--now", &night(0)], &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&other_key.display().to_string()) && err.contains("quilt/secret.id"),
        "{err}"
    );
    assert!(
        !server.keys(BUCKET).iter().any(|k| k.starts_with("gamma/")),
        "{:?}",
        server.keys(BUCKET)
    );
    assert!(server.open_uploads(BUCKET).is_empty());
    assert_eq!(content_keys(&server), content);
}

#[test]
fn a_key_file_that_others_can_read_fails_the_set_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let server = S3Server::start();
    server.create_bucket(BUCKET);
    let gpg = Gpg::new(dir);
    let key = key_file(dir, 0x22);
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    let tree = tree(dir, &random_bytes(100 << 10, 3), "x\n");
    let conf = host(&dir.join("h"), &server, &gpg, "h", &key, &tree);
    let out = s3nap(&["-c", &conf], &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&key.display().to_string()) && err.contains("chmod 600"),
        "{err}"
    );
    assert!(!err.contains(&"22".repeat(32)), "never the secret: {err}");
    assert!(server.keys(BUCKET).is_empty(), "{:?}", server.keys(BUCKET));
}

#[test]
fn a_diff_stores_a_changed_large_file_in_the_quilt_and_references_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let server = S3Server::start();
    server.create_bucket(BUCKET);
    let gpg = Gpg::new(dir);
    let key = key_file(dir, 0x33);
    let tree = tree(dir, &random_bytes(1 << 20, 1), "x\n");
    fs::write(tree.join("unchanged.bin"), random_bytes(1 << 20, 9)).unwrap();
    let conf = ConfigBuilder::new(dir)
        .s3(&server, BUCKET)
        .gpg(&gpg)
        .host(Some("d"))
        .line(format!("QuiltKeyFile {}", key.display()))
        .cycle("c", |c| c.line("Diffs 6\nQuilt yes").directory(&tree))
        .build();
    let conf = conf.to_str().unwrap();
    let out = s3nap(&["-c", conf, "--now", &night(0)], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let before = content_keys(&server);
    assert_eq!(before.len(), 2, "{before:?}");

    fs::write(tree.join("sub/big.bin"), random_bytes(1 << 20, 5)).unwrap();
    let out = s3nap(&["-c", conf, "--now", &night(1)], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let runs = manifests(&server, "d");
    let diff = &runs[1];
    assert_eq!(diff["kind"], "diff", "{diff}");
    assert_eq!(diff["format"], 3, "{diff}");
    // Only the changed file's new content: uploaded once, and the only key the DIFF names.
    assert_eq!(diff["quilt"]["uploaded"], 1, "{diff}");
    let after = content_keys(&server);
    assert_eq!(after.len(), 3, "{after:?}");
    let new: Vec<&String> = after.iter().filter(|k| !before.contains(k)).collect();
    assert_eq!(diff["quilt"]["content"], serde_json::json!(new), "{diff}");

    // The chain recovers: s3nap splices the FULL's and the DIFF's content back in, and the
    // stock-tool script rebuilds the FULL, then the DIFF (tar -G), from the raw objects.
    assert_s3nap_recovers(Path::new(conf), &tree, &gpg, &dir.join("by-s3nap"));
    let dest = dir.join("by-script");
    for run in &runs {
        let out = quilt_recover_script(
            &server,
            &gpg,
            &[
                &format!("s3://{BUCKET}"),
                run["archive"]["key"].as_str().unwrap(),
                dest.to_str().unwrap(),
                "--",
                "-G",
            ],
        );
        assert!(out.status.success(), "quilt-recover: {}", stderr(&out));
    }
    assert_same_tree(&tree, &dest.join(tree.strip_prefix("/").unwrap()));
}
