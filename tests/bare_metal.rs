//! Bare-metal recovery, as README's walk-through does it: host A backs up a directory tree (a
//! FULL, then a DIFF), a MariaDB database, a Subversion repository (a FULL, then a DIFF) and a
//! bucket set into S3 (moto); then a new machine — a fresh configuration naming the same bucket
//! and key file, another `Host`, an empty DiffDir, and only the exported secret key — lists A's
//! runs (`list --host A`, `list --all-hosts`), recovers each set exactly (`recover --host A`:
//! the tree byte for byte, the dump loaded back with `mariadb`, the repository with `svnadmin
//! load`; `bucket restore --host A` into a new bucket), verifies them (`verify --host A
//! --deep`), and then backs up and prunes its own sets as itself.
//! Through all of it, nothing under A's prefix changes and the new machine's reading commands
//! create no local state.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::{Command, Output};

use common::databases::*;
use common::*;

const BUCKET: &str = "backups";
/// The `Bucket` prefix both machines use: hosts are the key component below it.
const ROOT: &str = "s3nap";

fn s3nap_ok(args: &[&str]) -> Output {
    let out = s3nap(args, &[]);
    assert!(out.status.success(), "s3nap {args:?}: {}", stderr(&out));
    out
}

/// Each key of `bucket` with its content.
fn contents(server: &S3Server, bucket: &str) -> BTreeMap<String, Vec<u8>> {
    server
        .keys(bucket)
        .into_iter()
        .map(|k| {
            let data = server.get(bucket, &k);
            (k, data)
        })
        .collect()
}

/// What a prefix holds: each object's key with what would show any change to it (ETag, size,
/// date), and the keys of the multipart uploads open there.
type Held = (BTreeMap<String, (String, i64, String)>, Vec<String>);

fn objects_under(server: &S3Server, prefix: &str) -> Held {
    server.block_on(async {
        let mut pages = server
            .client
            .list_objects_v2()
            .bucket(BUCKET)
            .prefix(prefix)
            .into_paginator()
            .send();
        let mut objects = BTreeMap::new();
        while let Some(page) = pages.next().await {
            for o in page.unwrap().contents() {
                objects.insert(
                    o.key().unwrap().to_string(),
                    (
                        o.e_tag().unwrap_or_default().to_string(),
                        o.size().unwrap_or_default(),
                        o.last_modified().map(|t| t.to_string()).unwrap_or_default(),
                    ),
                );
            }
        }
        let uploads = server
            .client
            .list_multipart_uploads()
            .bucket(BUCKET)
            .prefix(prefix)
            .send()
            .await
            .unwrap();
        let uploads = uploads
            .uploads()
            .iter()
            .map(|u| u.key().unwrap().to_string())
            .collect();
        (objects, uploads)
    })
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            stderr(out)
        )
    })
}

#[test]
fn a_new_machine_with_the_configuration_and_the_key_recovers_everything_another_host_stored() {
    let tmp = tempfile::tempdir().unwrap();
    let server = S3Server::start();
    server.create_bucket(BUCKET);

    // ---- The old machine, host A. ----
    let a = tmp.path().join("a");
    fs::create_dir_all(&a).unwrap();
    let gpg = Gpg::new(&a);

    let tree = a.join("srv/www");
    fs::create_dir_all(tree.join("site/img")).unwrap();
    fs::write(tree.join("site/index.html"), "<h1>shop</h1>\n").unwrap();
    fs::write(tree.join("site/img/logo.bin"), random_bytes(300_000, 7)).unwrap();
    fs::write(tree.join("site/old.txt"), "removed before the DIFF\n").unwrap();
    fs::write(tree.join("notes.txt"), "first\n").unwrap();
    symlink("site/index.html", tree.join("index")).unwrap();

    let db = Mariadb::start(&a);
    db.sql(
        "CREATE DATABASE shop;
         USE shop;
         CREATE TABLE shop.items (id INT PRIMARY KEY, name VARCHAR(40), picture BLOB);
         INSERT INTO shop.items SELECT seq, CONCAT('item ', seq), RANDOM_BYTES(64) FROM seq_1_to_2000;",
    );

    let repo = a.join("svn/project");
    fs::create_dir_all(repo.parent().unwrap()).unwrap();
    run(Command::new("svnadmin").arg("create").arg(&repo));
    let wc = a.join("wc");
    run(Command::new("svn")
        .args(["checkout", "-q"])
        .arg(format!("file://{}", repo.display()))
        .arg(&wc));
    for i in 0..5 {
        svn_commit(&wc, &format!("trunk/file{}.txt", i % 3), &format!("r{i}\n"));
    }

    // A versioned bucket protected by a bucket set, its replica in the same bucket.
    server.create_bucket("www");
    server.enable_versioning("www");
    server.put("www", "index.html", b"<h1>v1</h1>".to_vec());
    server.put(
        "www",
        "gone.txt",
        b"deleted before the second snapshot".to_vec(),
    );
    server.put("www", "img/logo.bin", random_bytes(20_000, 3));

    // The configuration, as the sysadmin keeps it (sets and all); each machine's copy differs
    // only in Host and DiffDir.
    let sets = format!(
        "Directory {}\nMySQLOptions {}\nMySQL shop\nSubversion {}\n\
         <Bucket www>\n  Master s3://www\n  Replica s3://www\n</Bucket>\n",
        tree.display(),
        db.defaults(),
        repo.display()
    );
    let conf_a = ConfigBuilder::new(&a)
        .s3(&server, &format!("{BUCKET}/{ROOT}"))
        .gpg(&gpg)
        .host(Some("A"))
        .line(&sets)
        .build();
    let ca = conf_a.to_str().unwrap();
    // 2026-01-01 is a FULL day of the default SimpleCycle (slot 14 of 4×(6+1)); the next a DIFF.
    s3nap_ok(&["-c", ca, "--now", "2026-01-01T03:00:00Z"]);

    // A day of changes: the DIFF records a new, a changed, a deleted and a renamed file.
    fs::write(tree.join("notes.txt"), "second, longer than the first\n").unwrap();
    fs::write(tree.join("site/new.txt"), "added for the DIFF\n").unwrap();
    fs::remove_file(tree.join("site/old.txt")).unwrap();
    fs::rename(tree.join("site/img"), tree.join("site/images")).unwrap();
    db.sql("DELETE FROM shop.items WHERE id > 1500; UPDATE shop.items SET name = 'changed' WHERE id = 7;");
    for i in 5..9 {
        svn_commit(&wc, &format!("trunk/file{}.txt", i % 3), &format!("r{i}\n"));
    }
    server.put("www", "index.html", b"<h1>v2</h1>".to_vec());
    server
        .block_on(
            server
                .client
                .delete_object()
                .bucket("www")
                .key("gone.txt")
                .send(),
        )
        .unwrap();
    let site = contents(&server, "www");
    assert_eq!(site.len(), 2);
    let out = s3nap_ok(&["-c", ca, "--now", "2026-01-02T03:00:00Z", "--json"]);
    let kinds: Vec<(String, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|o| {
            (
                o["set"].as_str().unwrap().into(),
                o["kind"].as_str().unwrap().into(),
            )
        })
        .collect();
    let tree_set = format!("dir{}", tree.display());
    let svn_set = format!("svn{}", repo.display());
    assert!(
        kinds.contains(&(tree_set.clone(), "diff".into())),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&(svn_set.clone(), "diff".into())),
        "{kinds:?}"
    );
    let checksums = db.sql("CHECKSUM TABLE shop.items");
    let youngest = run(Command::new("svnlook").arg("youngest").arg(&repo));
    assert_eq!(youngest.trim(), "9");

    // ---- The machine is gone. A new one has the configuration and the secret key only. ----
    let b = tmp.path().join("b");
    fs::create_dir_all(&b).unwrap();
    let key = b.join("backup-key.asc");
    fs::copy(&gpg.secret, &key).unwrap();
    // The public key, for the new machine's own backups (the reading commands need none).
    let cert = b.join("backup.pub");
    fs::copy(&gpg.cert, &cert).unwrap();
    let b_state = b.join("state");
    let conf_b = ConfigBuilder::new(&b)
        .s3(&server, &format!("{BUCKET}/{ROOT}"))
        .gpg_recipient(&gpg.email, &cert)
        .host(Some("B"))
        .diff_dir(&b_state)
        .line(&sets)
        .build();
    let cb = conf_b.to_str().unwrap();
    let key_arg = key.to_str().unwrap();
    let a_prefix = format!("{ROOT}/A/");
    let a_before = objects_under(&server, &a_prefix);
    assert!(a_before.0.len() >= 12, "{:?}", a_before.0.keys());

    // Its own Host has nothing yet; --host A lists the old machine's runs.
    let own = s3nap_ok(&["-c", cb, "list", "--json"]);
    assert_eq!(json(&own), serde_json::json!([]));
    let listed = json(&s3nap_ok(&["-c", cb, "list", "--host", "A", "--json"]));
    let runs: Vec<(&str, &str)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["set"].as_str().unwrap(), r["kind"].as_str().unwrap()))
        .collect();
    let mut want = vec![
        (tree_set.as_str(), "full"),
        (tree_set.as_str(), "diff"),
        ("mysql/shop", "full"),
        ("mysql/shop", "full"),
        ("bucket/www", "full"),
        ("bucket/www", "full"),
        (svn_set.as_str(), "full"),
        (svn_set.as_str(), "diff"),
    ];
    want.sort();
    let mut got = runs.clone();
    got.sort();
    assert_eq!(got, want);
    let text =
        String::from_utf8_lossy(&s3nap_ok(&["-c", cb, "list", "--host", "A"]).stdout).into_owned();
    for set in [&tree_set, "mysql/shop", &svn_set, "bucket/www"] {
        assert!(text.contains(set), "{text}");
    }

    // Every host in the bucket, found by its prefix.
    let hosts = json(&s3nap_ok(&["-c", cb, "list", "--all-hosts", "--json"]));
    assert_eq!(hosts.as_array().unwrap().len(), 1, "{hosts}");
    assert_eq!(hosts[0]["host"], "A");
    assert_eq!(hosts[0]["runs"].as_array().unwrap().len(), 8, "{hosts}");
    let text =
        String::from_utf8_lossy(&s3nap_ok(&["-c", cb, "list", "--all-hosts"]).stdout).into_owned();
    assert!(text.starts_with("HOST A: 8 run(s) of 4 set(s)\n"), "{text}");

    // A host nothing is stored under: a usage error naming it and the hosts that are there.
    for args in [
        vec!["list", "--host", "C"],
        vec!["recover", "--host", "C", &tree_set, "--identity", key_arg],
        vec!["verify", "--host", "C"],
    ] {
        let out = s3nap(&[&["-c", cb][..], &args].concat(), &[]);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains("no backups of host 'C'") && err.contains("hosts there: A"),
            "{args:?}: {err}"
        );
    }

    // Not a host name; a host and all hosts at once: usage errors.
    let out = s3nap(&["-c", cb, "list", "--host", "A/dir"], &[]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("'A/dir' is not a host name"),
        "{}",
        stderr(&out)
    );
    let out = s3nap(&["-c", cb, "list", "--host", "A", "--all-hosts"], &[]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot be used with"),
        "{}",
        stderr(&out)
    );

    // The tree: the FULL and the DIFF on top, replayed by tar -G, equal the tree as it was.
    let out = s3nap_ok(&[
        "-c",
        cb,
        "recover",
        "--host",
        "A",
        &tree_set,
        "--identity",
        key_arg,
    ]);
    let dest = b.join("restore");
    untar_incremental(&out.stdout, &dest);
    assert_same_tree(&tree, &dest.join(tree.strip_prefix("/").unwrap()));

    // The dump: into the mariadb client, as `mysql < dump` would.
    let out = s3nap_ok(&[
        "-c",
        cb,
        "recover",
        "--host",
        "A",
        "mysql/shop",
        "--identity",
        key_arg,
    ]);
    db.sql("DROP DATABASE shop");
    pipe(Command::new("mariadb").arg(db.defaults()), &out.stdout);
    assert_eq!(db.sql("CHECKSUM TABLE shop.items"), checksums);
    assert_eq!(
        db.sql("SELECT name FROM shop.items WHERE id = 7").trim(),
        "changed"
    );

    // The repository: the FULL's and the DIFF's dumps, loaded into a new repository.
    let out = s3nap_ok(&[
        "-c",
        cb,
        "recover",
        "--host",
        "A",
        &svn_set,
        "--identity",
        key_arg,
    ]);
    let copy = b.join("project");
    run(Command::new("svnadmin").arg("create").arg(&copy));
    pipe(
        Command::new("svnadmin").args(["load", "-q"]).arg(&copy),
        &out.stdout,
    );
    let look =
        |r: &Path, args: &[&str]| run(Command::new("svnlook").arg(args[0]).arg(r).args(&args[1..]));
    assert_eq!(look(&copy, &["youngest"]), youngest);
    assert_eq!(look(&copy, &["cat", "trunk/file2.txt"]), "r8\n");
    assert_eq!(look(&copy, &["tree"]), look(&repo, &["tree"]));

    // The bucket, as the second snapshot recorded it, into a new bucket.
    server.create_bucket("www-restored");
    s3nap_ok(&[
        "-c",
        cb,
        "bucket",
        "restore",
        "--host",
        "A",
        "www",
        "--to",
        "s3://www-restored",
        "--identity",
        key_arg,
    ]);
    assert_eq!(contents(&server, "www-restored"), site);

    // Every run whole, down to the last tar header and dump byte, with the key alone.
    let out = s3nap_ok(&[
        "-c",
        cb,
        "verify",
        "--host",
        "A",
        "--deep",
        "--identity",
        key_arg,
    ]);
    let summary = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        summary.contains("verify: 8 run(s) of 4 set(s) checked: 8 OK, 0 with problems"),
        "{summary}"
    );

    // Reading another host's backups needs no local state and makes none, and changes
    // nothing of A's.
    assert!(!b_state.exists(), "the reading commands created DiffDir");
    assert_eq!(objects_under(&server, &a_prefix), a_before);

    // The new machine carries on as itself: its runs and prune stay under its own prefix. (Not
    // the bucket set: one Host only may gc a replica, README says.)
    let own_sets = [tree_set.as_str(), "mysql/shop", svn_set.as_str()];
    let now = "2026-01-03T03:00:00Z";
    s3nap_ok(&[&["-c", cb, "--now", now, "run"][..], &own_sets].concat());
    s3nap_ok(&[&["-c", cb, "--now", now, "prune"][..], &own_sets].concat());
    assert_eq!(objects_under(&server, &a_prefix), a_before);
    let b_objects = objects_under(&server, &format!("{ROOT}/B/")).0;
    assert!(
        b_objects.keys().any(|k| k.ends_with(".manifest.json")),
        "{b_objects:?}"
    );
    let hosts = json(&s3nap_ok(&["-c", cb, "list", "--all-hosts", "--json"]));
    let names: Vec<&str> = hosts
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["host"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["A", "B"]);
    assert_eq!(hosts[1]["runs"].as_array().unwrap().len(), 3, "{hosts}");

    // Or it carries on as A (README, step 6): the old machine's configuration made the sets'
    // latest runs, so a plain run fails them, naming --take-over; one run with it commits,
    // and plain runs commit from then on.
    let as_a = b.join("as-a");
    fs::create_dir_all(&as_a).unwrap();
    let conf_as_a = ConfigBuilder::new(&as_a)
        .s3(&server, &format!("{BUCKET}/{ROOT}"))
        .gpg_recipient(&gpg.email, &cert)
        .host(Some("A"))
        .diff_dir(&as_a.join("state"))
        .line(&sets)
        .build();
    let c = conf_as_a.to_str().unwrap();
    let a_runs = || {
        objects_under(&server, &a_prefix)
            .0
            .keys()
            .filter(|k| k.ends_with(".manifest.json"))
            .count()
    };
    let before = a_runs();
    let plain = s3nap(
        &[
            &["-c", c, "--now", "2026-01-03T03:00:00Z", "run"][..],
            &own_sets,
        ]
        .concat(),
        &[],
    );
    let err = stderr(&plain);
    assert_eq!(plain.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "{tree_set} under Host A is backed up by another configuration"
        )) && err.contains("--take-over"),
        "{err}"
    );
    assert_eq!(a_runs(), before, "a refused run stored a manifest");
    let taking = [
        &[
            "-c",
            c,
            "--take-over",
            "--now",
            "2026-01-03T03:00:00Z",
            "run",
        ][..],
        &own_sets,
    ];
    let out = s3nap(&taking.concat(), &[]);
    assert!(matches!(out.status.code(), Some(0 | 1)), "{}", stderr(&out));
    assert_eq!(a_runs(), before + own_sets.len());
    let plain = [
        &["-c", c, "--now", "2026-01-04T03:00:00Z", "run"][..],
        &own_sets,
    ];
    let out = s3nap(&plain.concat(), &[]);
    assert!(matches!(out.status.code(), Some(0 | 1)), "{}", stderr(&out));
    assert_eq!(a_runs(), before + 2 * own_sets.len());
}
