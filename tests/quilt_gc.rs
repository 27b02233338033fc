//! `s3nap quilt gc`, `quilt init` and verify's quilt checks against moto, on quilted runs made
//! by hand: format-3 manifests (with their real archive and range-hash objects) of two hosts
//! that share a content object, beside content no manifest references. gc deletes only what no
//! manifest of any host references and is older than the grace period, keeps what a lock
//! holds, stops before any deletion on a manifest it cannot read, and deletes nothing with
//! `-t`; verify names a content object deleted by hand and the run that references it.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::{random_bytes, s3nap, stderr, ConfigBuilder, S3Server};
use s3nap::schema::compression::Compression;
use s3nap::schema::layout::{self, Kind, RunId};
use s3nap::schema::manifest::{sha256_hex, Archive, Manifest, RangeHashes, SourceInfo, RANGE_SIZE};
use s3nap::schema::quilt::{QuiltSecret, QuiltUse, QUILTED_FORMAT};

const SET: &str = "dir/data";

fn secret() -> QuiltSecret {
    QuiltSecret::from_bytes([7; 32])
}

/// The store's root in the bucket: keys (content, manifests) are relative to it, and gc must
/// find them there.
const ROOT: &str = "backups";

fn at(key: &str) -> String {
    format!("{ROOT}/{key}")
}

/// The content key of file content `n`.
fn content(n: u8) -> String {
    secret().content_key(&["AAAA".into()], &[n; 32])
}

/// Stores content object `n` (its bytes do not matter to gc or verify's HEAD checks).
fn put_content(server: &S3Server, bucket: &str, n: u8) {
    server.put(bucket, &at(&content(n)), random_bytes(100, n.into()));
}

/// Stores a quilted FULL of `host` on day `day` referencing `keys`: its archive, range hashes
/// and format-3 manifest, as a run stores them. Returns the manifest's key.
fn put_run(server: &S3Server, bucket: &str, host: &str, day: i64, keys: &[String]) -> String {
    let run = RunId::at(DateTime::from_timestamp(1_800_000_000 + 86_400 * day, 0).unwrap());
    let data = random_bytes(1000, day as u64);
    let archive_key = layout::archive_key(host, SET, run, Kind::Full, "tar");
    let ranges = format!("{}\n", sha256_hex(&data)).into_bytes();
    let ranges_key = layout::run_prefix(host, SET, run, Kind::Full) + "sha256";
    let mut content: Vec<String> = keys.to_vec();
    content.sort();
    let manifest = Manifest {
        format: QUILTED_FORMAT,
        tool: "test".into(),
        host: host.into(),
        set: SET.into(),
        run,
        kind: Kind::Full,
        base_run: None,
        cycle: None,
        slot: None,
        period: None,
        forced: false,
        started: run.0,
        finished: run.0,
        source_started: None,
        archive: Archive {
            key: archive_key.clone(),
            stored_size: data.len() as u64,
            sha256: sha256_hex(&data),
            plaintext_size: data.len() as u64,
            format: "tar".into(),
            compression: Compression::None,
            recipients: vec![],
            parts: 1,
            ranges: Some(RangeHashes {
                key: ranges_key.clone(),
                range_size: RANGE_SIZE,
                count: 1,
                sha256: sha256_hex(&ranges),
            }),
        },
        source: SourceInfo::Directory {
            path: "/data".into(),
            excludes: vec![],
        },
        counts: Default::default(),
        warnings: vec![],
        owner: None,
        quilt: Some(QuiltUse {
            fingerprint: secret().fingerprint(),
            min_size: 65536,
            content,
            uploaded: 0,
            uploaded_bytes: 0,
            reused: 0,
        }),
    };
    let manifest_key = layout::manifest_key(host, SET, run, Kind::Full);
    server.put(bucket, &at(&archive_key), data);
    server.put(bucket, &at(&ranges_key), ranges);
    server.put(bucket, &at(&manifest_key), manifest.to_json());
    manifest_key
}

/// Deletes `key` (under the store's root) by hand.
fn delete(server: &S3Server, bucket: &str, key: &str) {
    server
        .block_on(
            server
                .client
                .delete_object()
                .bucket(bucket)
                .key(at(key))
                .send(),
        )
        .unwrap();
}

fn exists(server: &S3Server, bucket: &str, n: u8) -> bool {
    server.keys(bucket).contains(&at(&content(n)))
}

fn config(dir: &Path, server: &S3Server, bucket: &str) -> PathBuf {
    ConfigBuilder::new(dir)
        .s3(server, &format!("{bucket}/{ROOT}"))
        .host(Some("a"))
        .directory(dir)
        .build()
}

fn run(conf: &Path, args: &[&str]) -> Output {
    let mut all = vec!["-c", conf.to_str().unwrap()];
    all.extend(args);
    s3nap(&all, &[])
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// moto dates objects to the millisecond and its Date header to the second: a second later,
/// everything stored before is past a grace period of 0s on the server's clock.
fn age() {
    std::thread::sleep(Duration::from_millis(1100));
}

#[test]
fn gc_deletes_only_content_that_no_manifest_of_any_host_references() {
    let tmp = tempfile::tempdir().unwrap();
    let server = S3Server::start();
    let bucket = "quilt";
    server.create_bucket(bucket);
    let conf = config(tmp.path(), &server, bucket);
    // Content 1 is shared by hosts a and b, 2 is b's alone, 3 is nobody's.
    for n in 1..=3 {
        put_content(&server, bucket, n);
    }
    let a = put_run(&server, bucket, "a", 0, &[content(1)]);
    let b = put_run(&server, bucket, "b", 1, &[content(1), content(2)]);
    age();

    // -t: says what would go, deletes nothing.
    let out = run(&conf, &["-t", "quilt", "gc", "--grace", "0s"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains(&format!("would delete s3://{bucket}/{ROOT}/{}", content(3))),
        "{text}"
    );
    assert!(
        !text.contains(&content(1)) && !text.contains(&content(2)),
        "{text}"
    );
    assert!((1..=3).all(|n| exists(&server, bucket, n)));

    // The default grace period (7 days) keeps young unreferenced content, and says so.
    let out = run(&conf, &["quilt", "gc"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains(&format!("kept s3://{bucket}/{ROOT}/{}", content(3))),
        "{text}"
    );
    assert!(
        text.contains("younger than the grace period of 7d"),
        "{text}"
    );
    assert!(exists(&server, bucket, 3));

    // Past the grace period: only the unreferenced object goes.
    let out = run(&conf, &["quilt", "gc", "--grace", "0s"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!("deleted s3://{bucket}/{ROOT}/{}", content(3))),
        "{}",
        stdout(&out)
    );
    assert!(!exists(&server, bucket, 3));
    assert!(exists(&server, bucket, 1) && exists(&server, bucket, 2));

    // Host a's run retired (as its retention would): b still references the shared object.
    delete(&server, bucket, &a);
    let out = run(&conf, &["quilt", "gc", "--grace", "0s"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(exists(&server, bucket, 1) && exists(&server, bucket, 2));

    // b's too: now nothing references either.
    delete(&server, bucket, &b);
    let out = run(&conf, &["quilt", "gc", "--grace", "0s"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!exists(&server, bucket, 1) && !exists(&server, bucket, 2));
}

#[test]
fn an_unreadable_manifest_stops_gc_and_verify_names_missing_content_and_locks_hold() {
    let tmp = tempfile::tempdir().unwrap();
    let server = S3Server::start();
    let bucket = "quilt";
    server.create_bucket(bucket);
    let conf = config(tmp.path(), &server, bucket);
    for n in 1..=2 {
        put_content(&server, bucket, n);
    }
    let b = put_run(&server, bucket, "b", 1, &[content(1)]);

    // verify: whole, then a content object deleted by hand is named with the run.
    let out = run(&conf, &["verify", "--host", "b"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    delete(&server, bucket, &content(1));
    let out = run(&conf, &["verify", "--host", "b"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let text = stdout(&out) + &stderr(&out);
    let run_id = layout::parse_manifest_key("b", &b).unwrap().1.to_string();
    assert!(
        text.contains(&format!(
            "s3://{bucket}/{ROOT}/{}: quilt content object is missing",
            content(1)
        )) && text.contains(&run_id),
        "{text}"
    );

    // A garbled manifest of another host: gc deletes nothing, and names it.
    let garbled = "c/dir/x/20270101T000000Z.full.manifest.json";
    server.put(bucket, &at(garbled), b"{\"format\": 3, \"tool\"".to_vec());
    age();
    let out = run(&conf, &["quilt", "gc", "--grace", "0s"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("gc stopped before deleting anything") && err.contains(garbled),
        "{err}"
    );
    assert!(exists(&server, bucket, 2));
    delete(&server, bucket, garbled);

    // Object Lock: unreferenced and old, but locked: kept, and no failure.
    let locked = "locked";
    server
        .block_on(
            server
                .client
                .create_bucket()
                .bucket(locked)
                .object_lock_enabled_for_bucket(true)
                .send(),
        )
        .unwrap();
    let until = Utc::now() + chrono::Duration::hours(1);
    server
        .block_on(
            server
                .client
                .put_object()
                .bucket(locked)
                .key(at(&content(5)))
                .body(b"locked".to_vec().into())
                .object_lock_mode(aws_sdk_s3::types::ObjectLockMode::Governance)
                .object_lock_retain_until_date(aws_smithy_types::DateTime::from_secs(
                    until.timestamp(),
                ))
                .content_md5(md5_base64(b"locked"))
                .send(),
        )
        .unwrap();
    put_content(&server, locked, 6);
    let dir = tmp.path().join("locked");
    std::fs::create_dir_all(&dir).unwrap();
    let conf = config(&dir, &server, locked);
    age();
    let out = run(&conf, &["quilt", "gc", "--grace", "0s"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains(&format!("kept s3://{locked}/{ROOT}/{}", content(5)))
            && text.contains("unreferenced, but locked until"),
        "{text}"
    );
    assert!(exists(&server, locked, 5));
    assert!(!exists(&server, locked, 6));
}

/// What a locked PutObject must carry (S3 requires a checksum).
fn md5_base64(data: &[u8]) -> String {
    use md5::Digest;
    aws_smithy_types::base64::encode(md5::Md5::digest(data))
}

#[test]
fn quilt_init_writes_an_owner_only_secret_once() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("keys/quilt.key");
    let key = path.to_str().unwrap();
    // No configuration needed: the file is made on any machine and installed on the hosts.
    let out = s3nap(
        &["-c", "/nonexistent", "quilt", "init", "--key-file", key],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(&path).unwrap();
    let secret = QuiltSecret::parse(&text).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let said = stdout(&out);
    assert!(said.contains(&secret.fingerprint()), "{said}");
    assert!(!said.contains(text.trim()) && !stderr(&out).contains(text.trim()));
    // Never over an existing file: a usage error, the file as it was.
    let out = s3nap(
        &["-c", "/nonexistent", "quilt", "init", "--key-file", key],
        &[],
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("exists already"), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);

    // Without --key-file: the configuration's QuiltKeyFile, or a usage error naming the file.
    let configured = tmp.path().join("configured.key");
    for sub in ["with", "without"] {
        std::fs::create_dir_all(tmp.path().join(sub)).unwrap();
    }
    let conf = ConfigBuilder::new(&tmp.path().join("with"))
        .line(format!("QuiltKeyFile {}", configured.display()))
        .build();
    let out = s3nap(&["-c", conf.to_str().unwrap(), "quilt", "init"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let made = QuiltSecret::parse(&std::fs::read_to_string(&configured).unwrap()).unwrap();
    assert!(stdout(&out).contains(&made.fingerprint()));
    let conf = ConfigBuilder::new(&tmp.path().join("without")).build();
    let out = s3nap(&["-c", conf.to_str().unwrap(), "quilt", "init"], &[]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(conf.to_str().unwrap()) && stderr(&out).contains("QuiltKeyFile"),
        "{}",
        stderr(&out)
    );
}
