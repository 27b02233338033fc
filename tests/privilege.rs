//! Least privilege: runs with the shipped IAM policies (conf/iam-*.json) against moto enforcing
//! them — a backup-only run with `PruneAfterRun no` commits and deletes nothing, the recover
//! credentials recover it, `prune` retires with its own `PruneKeyfile` credentials, and none of
//! them reaches beyond its host's prefix — and the host's own files created owner-only. With
//! `Quilt yes` (and Object Lock), the quilt statements let a backup store and reuse content,
//! the recover credentials recover and verify it, and `conf/iam-quilt-gc.json` lets
//! `quilt gc` delete unreferenced content (every version on a bucket that keeps them), each
//! refused outside its grant. moto takes PutObjectRetention for `s3:PutObject` and does not ask
//! for `s3:GetObjectRetention` on HEAD: those two actions are granted as S3 needs them, untested.
//!
//! moto enforces each policy's actions and resource ARNs (bucket calls on
//! `arn:aws:s3:::BUCKET`, object calls on `arn:aws:s3:::BUCKET/KEY`), not Condition elements
//! (scripts/s3-test-server.py), which the shipped policies do not use.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{assert_same_tree, output_within, s3nap, stderr, untar, ConfigBuilder, S3Server};

const BUCKET: &str = "backups";
const HOST: &str = "h";

/// The shipped policy `conf/iam-NAME.json` for `BUCKET` and the host prefix `h` (no
/// configured prefix: `PREFIX/HOST` is `h`, `PREFIX/quilt` is `quilt`, `PREFIX/*` is `*`),
/// written into `dir`.
fn policy(name: &str, dir: &Path) -> PathBuf {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("conf/iam-{name}.json"));
    let text = fs::read_to_string(&shipped)
        .unwrap()
        .replace("PREFIX/HOST", HOST)
        .replace("PREFIX/", "")
        .replace("BUCKET", BUCKET);
    assert!(!text.contains("PREFIX") && !text.contains("HOST"), "{text}");
    let path = dir.join(format!("{name}.policy.json"));
    fs::write(&path, text).unwrap();
    path
}

fn day(i: u32) -> String {
    format!("2026-11-{:02}T03:00:00Z", 10 + i)
}

fn run_id(i: u32) -> String {
    format!("202611{:02}T030000Z", 10 + i)
}

/// The error code of an S3 call made with a user's client.
fn code<T, E: aws_sdk_s3::error::ProvideErrorMetadata>(result: Result<T, E>) -> String {
    match result {
        Ok(_) => "allowed".into(),
        Err(e) => e.code().unwrap_or("no code").to_string(),
    }
}

#[test]
fn a_backup_only_run_commits_deletes_nothing_recovers_and_prune_retires_with_its_own_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let users = [
        ("backup", policy("backup", dir)),
        ("prune", policy("prune", dir)),
        ("recover", policy("recover-verify", dir)),
    ];
    let users: Vec<(&str, &Path)> = users.iter().map(|(n, p)| (*n, p.as_path())).collect();
    let server = S3Server::start_with_users(&users);
    server.create_bucket(BUCKET);
    // Another host's object: out of every policy's reach.
    server.put(BUCKET, "other/dir/x.manifest.json", b"{}".to_vec());
    let tree = dir.join("tree");
    fs::create_dir_all(tree.join("etc")).unwrap();
    fs::write(tree.join("etc/hosts"), b"127.0.0.1 localhost\n").unwrap();

    // One slot: each run's FULL retires the one before (once something deletes it).
    let backup_keys = server.user_keyfile("backup", dir);
    let prune_keys = server.user_keyfile("prune", dir);
    let base = ConfigBuilder::new(dir)
        .s3(&server, BUCKET)
        .host(Some(HOST))
        .cycle("c", |c| c.line("Diffs 0\nFulls 1").directory(&tree));
    let text = base.text().replace(
        &format!("S3Keyfile {}", dir.join("s3key.txt").display()),
        &format!(
            "S3Keyfile {}\nPruneKeyfile {}\nPruneAfterRun no",
            backup_keys.display(),
            prune_keys.display()
        ),
    );
    assert!(text.contains("PruneAfterRun no"), "{text}");
    let conf = common::write_config(dir, &text);
    let conf = conf.to_str().unwrap();

    // config check shows both key files, secrets masked.
    let check = s3nap(&["-c", conf, "config", "check"], &[]);
    assert_eq!(check.status.code(), Some(0), "{}", stderr(&check));
    let shown = String::from_utf8_lossy(&check.stdout);
    for line in [
        format!("PruneKeyfile     {}", prune_keys.display()),
        "PruneAfterRun    no: deletions are left to s3nap prune".to_string(),
    ] {
        assert!(shown.contains(&line), "{line} in {shown}");
    }
    for (_, secret) in server.users.values() {
        assert!(!shown.contains(secret.as_str()), "{shown}");
    }

    let first = s3nap(&["-c", conf, "--now", &day(0)], &[]);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    fs::write(tree.join("etc/hosts"), b"127.0.0.1 localhost changed\n").unwrap();
    let second = s3nap(&["-c", conf, "--now", &day(1)], &[]);
    assert_eq!(second.status.code(), Some(0), "{}", stderr(&second));
    let log = stderr(&second);
    assert!(
        log.contains(&format!("s3nap prune will retire {}", run_id(0))),
        "{log}"
    );
    // -t says who deletes.
    let plan = s3nap(&["-c", conf, "-t", "--now", &day(1)], &[]);
    assert_eq!(plan.status.code(), Some(0), "{}", stderr(&plan));
    let printed = String::from_utf8_lossy(&plan.stdout);
    assert!(
        printed.contains("PruneAfterRun no: the run deletes nothing"),
        "{printed}"
    );
    // Nothing was deleted: both runs are there, whole.
    let manifests = |server: &S3Server| -> Vec<String> {
        let mut m: Vec<String> = server
            .keys(BUCKET)
            .into_iter()
            .filter(|k| k.starts_with("h/") && k.ends_with(".manifest.json"))
            .collect();
        m.sort();
        m
    };
    let listed = manifests(&server);
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(listed[0].contains(&run_id(0)) && listed[1].contains(&run_id(1)));
    let archive = server
        .keys(BUCKET)
        .into_iter()
        .find(|k| k.contains(&run_id(0)) && k.contains(".tar"))
        .unwrap();

    // The backup credentials cannot delete an archive, nor reach another host's objects.
    let backup = server.user_client("backup");
    let denied = |r: String| assert_eq!(r, "AccessDenied");
    denied(code(server.block_on(
        backup.delete_object().bucket(BUCKET).key(&archive).send(),
    )));
    denied(code(
        server.block_on(
            backup
                .get_object()
                .bucket(BUCKET)
                .key("other/dir/x.manifest.json")
                .send(),
        ),
    ));
    denied(code(
        server.block_on(
            backup
                .put_object()
                .bucket(BUCKET)
                .key("other/dir/y")
                .body(b"x".to_vec().into())
                .send(),
        ),
    ));
    // s3nap's own writes are conditional: the same credentials never replace a key.
    assert_eq!(
        code(
            server.block_on(
                backup
                    .put_object()
                    .bucket(BUCKET)
                    .key(&archive)
                    .if_none_match("*")
                    .body(b"x".to_vec().into())
                    .send(),
            )
        ),
        "PreconditionFailed"
    );

    // The recover credentials recover the latest run, and cannot delete either.
    let recover_keys = server.user_keyfile("recover", dir);
    let recover_conf = dir.join("recover.conf");
    fs::write(
        &recover_conf,
        text.replace(
            &format!("S3Keyfile {}", backup_keys.display()),
            &format!("S3Keyfile {}", recover_keys.display()),
        ),
    )
    .unwrap();
    let recover_conf = recover_conf.to_str().unwrap();
    let out = s3nap(
        &["-c", recover_conf, "recover", tree.to_str().unwrap()],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let dest = dir.join("restored");
    untar(&out.stdout, &dest);
    assert_same_tree(&tree, &dest.join(tree.strip_prefix("/").unwrap()));
    // And verify every byte, the debris listing included (ListMultipartUploads).
    let out = s3nap(&["-c", recover_conf, "verify", "--read", "--all"], &[]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}{}", stderr(&out));
    assert!(said.contains("2 run(s) read whole"), "{said}");
    assert!(
        !stderr(&out).contains("debris not listed"),
        "{}",
        stderr(&out)
    );
    let recover = server.user_client("recover");
    denied(code(server.block_on(
        recover.delete_object().bucket(BUCKET).key(&archive).send(),
    )));
    denied(code(
        server.block_on(
            recover
                .put_object()
                .bucket(BUCKET)
                .key("h/new")
                .body(b"x".to_vec().into())
                .send(),
        ),
    ));

    // prune deletes with PruneKeyfile's credentials (S3Keyfile's cannot): the first run goes.
    let out = s3nap(&["-c", conf, "prune", "--now", &day(1)], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.contains(&format!("retired {}", run_id(0))),
        "{printed}"
    );
    let listed = manifests(&server);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert!(listed[0].contains(&run_id(1)));
    assert!(!server.keys(BUCKET).iter().any(|k| k.contains(&run_id(0))));
    // Not beyond its host.
    assert!(server
        .keys(BUCKET)
        .contains(&"other/dir/x.manifest.json".to_string()));
    let prune = server.user_client("prune");
    denied(code(
        server.block_on(
            prune
                .delete_object()
                .bucket(BUCKET)
                .key("other/dir/x.manifest.json")
                .send(),
        ),
    ));
}

#[test]
fn with_backup_only_keys_and_prune_after_run_yes_the_run_commits_and_retention_fails_loudly() {
    // The default, PruneAfterRun yes, with credentials that cannot delete and no PruneKeyfile:
    // the run commits, but its retention is refused, and says so (exit 2).
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let backup_policy = policy("backup", dir);
    let server = S3Server::start_with_users(&[("backup", &backup_policy)]);
    server.create_bucket(BUCKET);
    let tree = dir.join("tree");
    fs::create_dir_all(&tree).unwrap();
    fs::write(tree.join("f"), b"x").unwrap();
    let backup_keys = server.user_keyfile("backup", dir);
    let text = ConfigBuilder::new(dir)
        .s3(&server, BUCKET)
        .host(Some(HOST))
        .cycle("c", |c| c.line("Diffs 0\nFulls 1").directory(&tree))
        .text()
        .replace(
            &format!("S3Keyfile {}", dir.join("s3key.txt").display()),
            &format!("S3Keyfile {}", backup_keys.display()),
        );
    let conf = common::write_config(dir, &text);
    let conf = conf.to_str().unwrap();
    let first = s3nap(&["-c", conf, "--now", &day(0)], &[]);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let second = s3nap(&["-c", conf, "--now", &day(1)], &[]);
    assert_eq!(second.status.code(), Some(2), "{}", stderr(&second));
    let log = stderr(&second);
    assert!(log.contains("committed, but pruning failed"), "{log}");
    assert!(log.contains("AccessDenied"), "{log}");
}

/// Every version (and delete marker) of `key` in the bucket, as the admin sees them.
fn versions(server: &S3Server, key: &str) -> usize {
    let out = server
        .block_on(
            server
                .client
                .list_object_versions()
                .bucket(BUCKET)
                .prefix(key)
                .send(),
        )
        .unwrap();
    out.versions().len() + out.delete_markers().len()
}

/// The configuration `text` with `keys` as its S3Keyfile, written to `dir/NAME.conf`.
fn with_keys(text: &str, dir: &Path, name: &str, keys: &Path) -> String {
    let admin = format!("S3Keyfile {}", dir.join("s3key.txt").display());
    assert!(text.contains(&admin), "{text}");
    let path = dir.join(format!("{name}.conf"));
    fs::write(
        &path,
        text.replace(&admin, &format!("S3Keyfile {}", keys.display())),
    )
    .unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn quilted_runs_store_recover_and_gc_each_with_its_own_policy_and_nothing_more() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let users = [
        ("backup", policy("backup", dir)),
        ("recover", policy("recover-verify", dir)),
        ("gc", policy("quilt-gc", dir)),
    ];
    let users: Vec<(&str, &Path)> = users.iter().map(|(n, p)| (*n, p.as_path())).collect();
    let server = S3Server::start_with_users(&users);
    // Object Lock: content is locked (PutObjectRetention), and the bucket keeps versions, so
    // gc deletes every version of what it removes.
    server
        .block_on(
            server
                .client
                .create_bucket()
                .bucket(BUCKET)
                .object_lock_enabled_for_bucket(true)
                .send(),
        )
        .expect("create a bucket with Object Lock");
    let gpg = common::Gpg::new(dir);
    let key = dir.join("quilt.key");
    fs::write(&key, format!("{}\n", "5a".repeat(32))).unwrap();
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    let tree = dir.join("tree");
    fs::create_dir_all(tree.join("sub")).unwrap();
    fs::write(tree.join("sub/big.bin"), common::random_bytes(256 << 10, 7)).unwrap();
    fs::write(tree.join("small.txt"), b"inline\n").unwrap();

    let text = ConfigBuilder::new(dir)
        .s3(&server, BUCKET)
        .gpg(&gpg)
        .host(Some(HOST))
        .line(format!("QuiltKeyFile {}", key.display()))
        .line("PruneAfterRun no")
        .cycle("c", |c| {
            c.line("Diffs 0\nFulls 1\nQuilt yes\nObjectLock governance\nObjectLockMargin 60s")
                .directory(&tree)
        })
        .text();
    let backup_conf = with_keys(&text, dir, "backup", &server.user_keyfile("backup", dir));
    let recover_conf = with_keys(&text, dir, "recover", &server.user_keyfile("recover", dir));
    let gc_conf = with_keys(&text, dir, "gc", &server.user_keyfile("gc", dir));

    // Two quilted runs with the backup policy: the first claims the quilt and uploads the
    // large file's content, the second reuses it (HEAD) and extends its lock.
    let content = |server: &S3Server| -> Vec<String> {
        let mut keys: Vec<String> = server
            .keys(BUCKET)
            .into_iter()
            .filter(|k| k.starts_with("quilt/content/"))
            .collect();
        keys.sort();
        keys
    };
    let first = s3nap(&["-c", &backup_conf, "--now", &day(0)], &[]);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let stored = content(&server);
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert!(server.keys(BUCKET).contains(&"quilt/secret.id".to_string()));
    let lock_of = |server: &S3Server| {
        let head = server
            .block_on(
                server
                    .client
                    .head_object()
                    .bucket(BUCKET)
                    .key(&stored[0])
                    .send(),
            )
            .unwrap();
        let until = head
            .object_lock_retain_until_date()
            .expect("content is locked");
        until.secs()
    };
    let first_lock = lock_of(&server);
    // The second run keeps its objects an hour longer: the content it reuses gets its lock.
    fs::write(tree.join("small.txt"), b"inline, changed\n").unwrap();
    fs::write(
        &backup_conf,
        fs::read_to_string(&backup_conf)
            .unwrap()
            .replace("ObjectLockMargin 60s", "ObjectLockMargin 3660s"),
    )
    .unwrap();
    let second = s3nap(&["-c", &backup_conf, "--now", &day(1)], &[]);
    assert_eq!(second.status.code(), Some(0), "{}", stderr(&second));
    assert_eq!(content(&server), stored, "the second run uploads nothing");
    assert!(
        lock_of(&server) >= first_lock + 3600,
        "the reused content's lock is extended: {first_lock} -> {}",
        lock_of(&server)
    );
    let mut manifests: Vec<String> = server
        .keys(BUCKET)
        .into_iter()
        .filter(|k| k.starts_with("h/") && k.ends_with(".manifest.json"))
        .collect();
    manifests.sort();
    assert_eq!(manifests.len(), 2, "{manifests:?}");
    let latest: serde_json::Value =
        serde_json::from_slice(&server.get(BUCKET, &manifests[1])).unwrap();
    assert_eq!(latest["format"], 3, "{latest}");
    assert_eq!(
        latest["quilt"]["content"],
        serde_json::json!(stored),
        "{latest}"
    );
    assert_eq!(latest["quilt"]["uploaded"], 0, "{latest}");

    let denied = |r: String| assert_eq!(r, "AccessDenied");
    let put = |client: &aws_sdk_s3::Client, key: &str| {
        code(
            server.block_on(
                client
                    .put_object()
                    .bucket(BUCKET)
                    .key(key)
                    .body(b"x".to_vec().into())
                    .send(),
            ),
        )
    };
    let delete = |client: &aws_sdk_s3::Client, key: &str| {
        code(server.block_on(client.delete_object().bucket(BUCKET).key(key).send()))
    };
    let get = |client: &aws_sdk_s3::Client, key: &str| {
        code(server.block_on(client.get_object().bucket(BUCKET).key(key).send()))
    };
    // The backup credentials cannot delete content, nor the quilt's secret id.
    let backup = server.user_client("backup");
    denied(delete(&backup, &stored[0]));
    denied(delete(&backup, "quilt/secret.id"));

    // The recover credentials recover the latest run exactly, its content from the quilt, and
    // verify reads every run whole and finds the content.
    let out = s3nap(
        &[
            "-c",
            &recover_conf,
            "recover",
            tree.to_str().unwrap(),
            "--identity",
            gpg.secret.to_str().unwrap(),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let dest = dir.join("restored");
    untar(&out.stdout, &dest);
    assert_same_tree(&tree, &dest.join(tree.strip_prefix("/").unwrap()));
    let out = s3nap(&["-c", &recover_conf, "verify", "--read", "--all"], &[]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}{}", stderr(&out));
    assert!(said.contains("2 run(s) read whole"), "{said}");
    assert!(!said.contains("DAMAGED"), "{said}");
    // Read-only, and only the content under quilt/.
    let recover = server.user_client("recover");
    denied(put(&recover, "quilt/content/new"));
    denied(put(&recover, "quilt/secret.id"));
    denied(delete(&recover, &stored[0]));
    denied(get(&recover, "quilt/secret.id"));

    // gc: an unreferenced content object (every version) and a killed run's open content
    // upload go; the referenced content, the runs and the secret id stay.
    let orphan = format!("quilt/content/{}.zst.gpg", "0".repeat(64));
    server.put(BUCKET, &orphan, b"unreferenced".to_vec());
    server.put(BUCKET, &orphan, b"unreferenced, again".to_vec());
    assert_eq!(versions(&server, &orphan), 2);
    let open = format!("quilt/content/{}.zst.gpg", "1".repeat(64));
    server
        .block_on(
            server
                .client
                .create_multipart_upload()
                .bucket(BUCKET)
                .key(&open)
                .send(),
        )
        .unwrap();
    let before = server.keys(BUCKET);
    let out = s3nap(&["-c", &gc_conf, "quilt", "gc", "--grace", "0s"], &[]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{said}{}", stderr(&out));
    assert!(said.contains("1 deleted"), "{said}");
    assert_eq!(versions(&server, &orphan), 0, "every version of {orphan}");
    assert!(!server.open_uploads(BUCKET).contains(&open), "{said}");
    let after = server.keys(BUCKET);
    let gone: Vec<&String> = before.iter().filter(|k| !after.contains(k)).collect();
    assert_eq!(gone, [&orphan], "{said}");
    // gc reads manifests and the quilt's content, deletes only content.
    let gc = server.user_client("gc");
    denied(delete(&gc, &manifests[0]));
    denied(delete(&gc, "quilt/secret.id"));
    let archive = before
        .iter()
        .find(|k| k.starts_with("h/") && k.contains(".tar"))
        .unwrap();
    denied(get(&gc, archive));
    denied(put(&gc, "quilt/content/new"));
}

#[test]
fn quilt_gc_deletes_with_its_policy_on_a_plain_and_on_a_versioned_bucket() {
    // Without ObjectLock gc asks the bucket whether it keeps versions: unversioned it deletes
    // the key (s3:DeleteObject), versioned every version (s3:DeleteObjectVersion).
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let gc_policy = policy("quilt-gc", dir);
    let server = S3Server::start_with_users(&[("gc", &gc_policy)]);
    server.create_bucket(BUCKET);
    let tree = dir.join("tree");
    fs::create_dir_all(&tree).unwrap();
    let text = ConfigBuilder::new(dir)
        .s3(&server, BUCKET)
        .host(Some(HOST))
        .directory(&tree)
        .text();
    let conf = with_keys(&text, dir, "gc", &server.user_keyfile("gc", dir));
    let orphan = |n: char| format!("quilt/content/{}.zst.gpg", n.to_string().repeat(64));
    let gc = |expect: &str| {
        let out = s3nap(&["-c", &conf, "quilt", "gc", "--grace", "0s"], &[]);
        let said = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{said}{}", stderr(&out));
        assert!(said.contains(expect), "{said}");
        let log = stderr(&out);
        assert!(!log.contains("deletions will not name versions"), "{log}");
    };

    server.put(BUCKET, &orphan('a'), b"unreferenced".to_vec());
    gc("1 deleted");
    assert_eq!(versions(&server, &orphan('a')), 0);

    server.enable_versioning(BUCKET);
    server.put(BUCKET, &orphan('b'), b"unreferenced".to_vec());
    server.put(BUCKET, &orphan('b'), b"unreferenced, again".to_vec());
    gc("1 deleted");
    assert_eq!(versions(&server, &orphan('b')), 0, "every version");
}

/// Every directory and file below `root` (and `root` itself) with its permission bits.
fn modes(root: &Path) -> Vec<(PathBuf, u32)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let meta = fs::symlink_metadata(&p).unwrap();
        out.push((p.clone(), meta.permissions().mode() & 0o777));
        if meta.is_dir() {
            for e in fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
    out
}

/// s3nap with `args` under umask 022 (what makes files 0644 and directories 0755).
fn s3nap_under_umask_022(args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("umask 022 && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_s3nap"))
        .args(args)
        .stdin(Stdio::null());
    output_within(&mut cmd, common::DEADLINE)
}

#[test]
fn diff_dir_log_file_and_local_store_are_created_owner_only_whatever_the_umask() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let tree = dir.join("tree");
    fs::create_dir_all(tree.join("sub")).unwrap();
    fs::write(tree.join("sub/secret-name.txt"), b"x").unwrap();
    let diff_dir = dir.join("var/state");
    let log = dir.join("log/s3nap.log");
    let conf = ConfigBuilder::new(dir)
        .diff_dir(&diff_dir)
        .line(format!("LogFile {}", log.display()))
        .directory(&tree)
        .build();
    let conf = conf.to_str().unwrap();
    let out = s3nap_under_umask_022(&["-c", conf]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let mut checked = 0;
    for root in [dir.join("var"), dir.join("store"), dir.join("log")] {
        for (path, mode) in modes(&root) {
            let want = if path.is_dir() { 0o700 } else { 0o600 };
            assert_eq!(mode, want, "{}: {mode:04o}", path.display());
            checked += 1;
        }
    }
    // The state, the lock, the archive, its range hashes and manifest, the log.
    assert!(checked >= 10, "{checked}");
    assert!(fs::read_to_string(&log).unwrap().contains("committed"));

    // An existing DiffDir others may read is warned about; the run's status is its sets'.
    fs::set_permissions(&diff_dir, fs::Permissions::from_mode(0o755)).unwrap();
    let out = s3nap_under_umask_022(&["-c", conf, "-f"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let warned = format!(
        "DiffDir {} is readable by others (mode 0755)",
        diff_dir.display()
    );
    assert!(stderr(&out).contains(&warned), "{}", stderr(&out));
    assert!(fs::read_to_string(&log).unwrap().contains(&warned));
}
