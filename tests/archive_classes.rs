//! Storage classes and archive retrieval against a real S3 server (moto) and the real binary:
//! `StorageClass` puts a set's archives (only them) in the class; `recover` of an archived
//! archive requests its retrieval and exits 5 before writing a byte, or with
//! `--wait-retrieval` waits and recovers; the class is read from HEAD, so an archive a
//! lifecycle rule moved is handled too.
//!
//! moto refuses a GET of a GLACIER or DEEP_ARCHIVE object (InvalidObjectState, 403) until
//! RestoreObject, and completes every retrieval the moment it is requested (HEAD then shows
//! `ongoing-request="false"`); a retrieval still ongoing is tested above the store, with the
//! in-memory store (src/store/retrieval.rs).

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use aws_sdk_s3::types::{MetadataDirective, StorageClass};
use common::*;

const BUCKET: &str = "classes";

struct Fixture {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    server: S3Server,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let server = S3Server::start();
    server.create_bucket(BUCKET);
    Fixture {
        _tmp: tmp,
        dir,
        server,
    }
}

/// A small tree of its own under `dir/name`.
fn tree(dir: &Path, name: &str) -> PathBuf {
    let root = dir.join(name);
    fs::create_dir_all(root.join("sub")).unwrap();
    fs::write(
        root.join("sub/data"),
        random_bytes(300_000, name.len() as u64),
    )
    .unwrap();
    fs::write(root.join("note"), format!("{name}\n")).unwrap();
    root
}

/// `<Directory root>` with `StorageClass class` inside.
fn set_in(root: &Path, class: &str) -> String {
    format!(
        "<Directory {}>\n  StorageClass {class}\n</Directory>",
        root.display()
    )
}

/// HEAD's storage class (`None`: STANDARD, which S3 leaves out) and `x-amz-restore`.
fn head(server: &S3Server, key: &str) -> (Option<String>, Option<String>) {
    let out = server
        .block_on(server.client.head_object().bucket(BUCKET).key(key).send())
        .unwrap();
    (
        out.storage_class().map(|c| c.as_str().to_string()),
        out.restore().map(str::to_string),
    )
}

/// The keys of `root`'s set ending in `suffix`.
fn keys_of(server: &S3Server, root: &Path, suffix: &str) -> Vec<String> {
    let prefix = format!("h/dir{}/", root.display());
    server
        .keys(BUCKET)
        .into_iter()
        .filter(|k| k.starts_with(&prefix) && k.ends_with(suffix))
        .collect()
}

fn recover(conf: &Path, root: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "-c",
        conf.to_str().unwrap(),
        "recover",
        root.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    s3nap(&args, &[])
}

/// `tar -x` of a recovery's output equals `root`.
fn assert_recovers(dir: &Path, out: &std::process::Output, root: &Path, label: &str) {
    assert_eq!(out.status.code(), Some(0), "{label}: {}", stderr(out));
    let dest = dir.join(format!("restored-{label}"));
    untar(&out.stdout, &dest);
    assert_same_tree(root, &dest.join(root.strip_prefix("/").unwrap()));
}

#[test]
fn archived_archives_are_retrieved_before_a_byte_is_written() {
    let f = fixture();
    let glacier = tree(&f.dir, "glacier");
    let deep = tree(&f.dir, "deep");
    let infrequent = tree(&f.dir, "infrequent");
    let conf = ConfigBuilder::new(&f.dir)
        .s3(&f.server, BUCKET)
        .line("RetrievalTier Bulk\nRetrievalDays 2")
        .line(set_in(&glacier, "GLACIER"))
        .line(set_in(&deep, "deep_archive"))
        .line(set_in(&infrequent, "STANDARD_IA"))
        .build();
    let out = s3nap(&["-c", conf.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(0), "backup: {}", stderr(&out));

    // Only the archive takes the class: the manifest and the range hashes stay STANDARD.
    for (root, class) in [
        (&glacier, "GLACIER"),
        (&deep, "DEEP_ARCHIVE"),
        (&infrequent, "STANDARD_IA"),
    ] {
        let [archive] = &keys_of(&f.server, root, ".full.tar.zst")[..] else {
            panic!("one archive of {}", root.display())
        };
        assert_eq!(head(&f.server, archive), (Some(class.to_string()), None));
        for small in [".manifest.json", ".sha256"] {
            let [key] = &keys_of(&f.server, root, small)[..] else {
                panic!("one {small} of {}", root.display())
            };
            assert_eq!(head(&f.server, key), (None, None), "{key}");
        }
    }
    // What the server does with an archived object before its retrieval: refuses to read it.
    let archive = keys_of(&f.server, &glacier, ".full.tar.zst").remove(0);
    let refused = f
        .server
        .block_on(
            f.server
                .client
                .get_object()
                .bucket(BUCKET)
                .key(&archive)
                .send(),
        )
        .unwrap_err();
    let refused = format!("{:?}", refused.into_service_error());
    assert!(refused.contains("InvalidObjectState"), "{refused}");

    // A STANDARD_IA archive is read directly.
    let direct = recover(&conf, &infrequent, &[]);
    assert_recovers(&f.dir, &direct, &infrequent, "infrequent");
    assert!(!stderr(&direct).contains("retriev"), "{}", stderr(&direct));

    // GLACIER: the retrieval is requested, named with its wait, and nothing is written.
    let first = recover(&conf, &glacier, &[]);
    let said = stderr(&first);
    assert_eq!(first.status.code(), Some(5), "{said}");
    assert!(
        first.stdout.is_empty(),
        "{} bytes written",
        first.stdout.len()
    );
    assert!(
        said.contains("retrieval requested; run again after ")
            && said.contains(&format!(
                "s3://{BUCKET}/{archive} (GLACIER): Bulk retrieval requested, 5-12 hours"
            )),
        "{said}"
    );
    // The request was made: HEAD reports the retrieval (done at once by moto).
    let (class, restore) = head(&f.server, &archive);
    assert_eq!(class.as_deref(), Some("GLACIER"));
    let restore = restore.expect("x-amz-restore after the request");
    assert!(restore.contains("ongoing-request="), "{restore}");
    // Run again: the copy is readable now, and the recovery goes through.
    let second = recover(&conf, &glacier, &[]);
    assert_recovers(&f.dir, &second, &glacier, "glacier");

    // DEEP_ARCHIVE, waiting: requested, checked again, recovered in the same run.
    let waited = recover(&conf, &deep, &["--wait-retrieval"]);
    let deep_archive = keys_of(&f.server, &deep, ".full.tar.zst").remove(0);
    assert!(
        stderr(&waited).contains(&format!(
            "{deep_archive} (DEEP_ARCHIVE): Bulk retrieval requested, up to 48 hours"
        )),
        "{}",
        stderr(&waited)
    );
    assert_recovers(&f.dir, &waited, &deep, "deep");

    // A lifecycle rule on the whole prefix moves the STANDARD_IA archive and its range hashes
    // to GLACIER (here: copies onto themselves in the new class): recover goes by what HEAD
    // says, not by the configuration, for every object it will read.
    let moved = keys_of(&f.server, &infrequent, ".full.tar.zst").remove(0);
    let hashes = keys_of(&f.server, &infrequent, ".sha256").remove(0);
    for key in [&moved, &hashes] {
        f.server
            .block_on(
                f.server
                    .client
                    .copy_object()
                    .bucket(BUCKET)
                    .key(key)
                    .copy_source(format!("{BUCKET}/{key}"))
                    .storage_class(StorageClass::Glacier)
                    .metadata_directive(MetadataDirective::Copy)
                    .send(),
            )
            .unwrap();
        assert_eq!(head(&f.server, key).0.as_deref(), Some("GLACIER"));
    }
    let after_rule = recover(&conf, &infrequent, &[]);
    assert_eq!(after_rule.status.code(), Some(5), "{}", stderr(&after_rule));
    assert!(after_rule.stdout.is_empty());
    for key in [&moved, &hashes] {
        assert!(
            stderr(&after_rule).contains(key.as_str()),
            "{key}: {}",
            stderr(&after_rule)
        );
    }
    // Both retrievals were requested (moto completes them at once): the next recover reads.
    let again = recover(&conf, &infrequent, &[]);
    assert_recovers(&f.dir, &again, &infrequent, "moved");
}

#[test]
fn a_storage_class_that_cannot_be_had_is_a_configuration_error() {
    let f = fixture();
    let root = tree(&f.dir, "t");
    let check = |conf: &Path| s3nap(&["-c", conf.to_str().unwrap(), "config", "check"], &[]);

    let conf = ConfigBuilder::new(&f.dir)
        .s3(&f.server, BUCKET)
        .line(set_in(&root, "COLD"))
        .build();
    let out = check(&conf);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let line = conf.display().to_string();
    assert!(
        stderr(&out).contains(&line)
            && stderr(&out).contains(
                "StorageClass must be one of STANDARD, STANDARD_IA, ONEZONE_IA, \
                 INTELLIGENT_TIERING, GLACIER_IR, GLACIER, DEEP_ARCHIVE, not 'COLD'"
            ),
        "{}",
        stderr(&out)
    );

    // The local store has no classes: refused, not silently ignored.
    let local = ConfigBuilder::new(&f.dir)
        .line(set_in(&root, "GLACIER"))
        .build();
    let out = check(&local);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("StorageClass GLACIER (for set 'dir")
            && stderr(&out).contains("needs an S3 store"),
        "{}",
        stderr(&out)
    );

    // Accepted, config check shows it on the set's line.
    let fine = ConfigBuilder::new(&f.dir)
        .s3(&f.server, BUCKET)
        .line("RetrievalTier expedited")
        .line(set_in(&root, "GLACIER_IR"))
        .build();
    let out = check(&fine);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("; StorageClass GLACIER_IR\n"), "{shown}");
    assert!(shown.contains("RetrievalTier    Expedited\n"), "{shown}");
    assert!(shown.contains("RetrievalDays    3\n"), "{shown}");

    // Exit status 5 is part of the contract --help (and so the man page) states.
    let help = s3nap(&["--help"], &[]);
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains(
            "5  recover (verify --include-archived, bucket restore, bucket diff): archives in"
        ),
        "{help}"
    );
    let help = s3nap(&["recover", "--help"], &[]);
    assert!(String::from_utf8_lossy(&help.stdout).contains("--wait-retrieval"));
}

/// `verify --read` skips an archived archive and names it; `--include-archived` requests its
/// retrieval and exits 5 until it can be read, then reads it.
#[test]
fn verify_reads_archived_archives_only_when_asked() {
    let f = fixture();
    let glacier = tree(&f.dir, "glacier");
    let conf = ConfigBuilder::new(&f.dir)
        .s3(&f.server, BUCKET)
        .line(set_in(&glacier, "GLACIER"))
        .build();
    let out = s3nap(&["-c", conf.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(0), "backup: {}", stderr(&out));
    let archive = keys_of(&f.server, &glacier, ".full.tar.zst").remove(0);
    let verify = |extra: &[&str]| {
        let mut args = vec!["-c", conf.to_str().unwrap(), "verify", "--read"];
        args.extend_from_slice(extra);
        s3nap(&args, &[])
    };

    let out = verify(&[]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    assert!(
        text.contains("not read: archived in GLACIER"),
        "skipped and said so:\n{text}"
    );
    assert_eq!(head(&f.server, &archive).1, None, "no retrieval requested");

    let out = verify(&["--include-archived"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(5), "{text}{}", stderr(&out));
    assert!(
        text.contains("WAITING") && text.contains(&archive) && text.contains("retrieval requested"),
        "{text}"
    );
    assert!(
        head(&f.server, &archive).1.is_some(),
        "the retrieval was requested"
    );

    // moto completes retrievals at once: the next verify reads the archive whole.
    let out = verify(&["--include-archived"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    assert!(text.contains("1 run(s) read whole"), "{text}");
}
