//! Incremental directory backups against the real S3 server and real GNU tar: a scripted
//! 10-day history of a ~2,000-file tree, recovered after every day both with
//! `s3nap recover | tar -x -G` and with the stock tools on the raw objects
//! (`gpg -d | zstd -d | tar -x -G`, FULL then each DIFF); an unchanged tree's DIFF is small;
//! a DIFF whose upload failed is made up for by the next one.

mod common;

use std::ffi::CString;
use std::fs::{self, File};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use common::*;

// 2026-01-01 is day 20454, a multiple of 14: day 0 is a FULL, days 1-6 DIFFs, day 7 a FULL.
fn day_time(i: u32) -> String {
    format!("2026-01-{:02}T03:00:00Z", 1 + i)
}

fn remove_xattr(path: &Path, name: &str) {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    assert_eq!(unsafe { libc::lremovexattr(p.as_ptr(), n.as_ptr()) }, 0);
}

fn write(path: &Path, text: impl AsRef<[u8]>) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

fn set_mtime(path: &Path, t: SystemTime) {
    File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(t)
        .unwrap();
}

/// Day 0: 20 directories of 100 files, some nested, a symlink, a hard link pair, xattrs, a FIFO.
fn initial_tree(root: &Path) {
    for d in 0..20 {
        for f in 0..100 {
            write(
                &root.join(format!("dir{d:02}/file{f:03}.txt")),
                format!("dir {d} file {f}\n"),
            );
        }
    }
    write(&root.join("dir00/nested/deeper/leaf.txt"), "leaf\n");
    symlink("../dir01/file001.txt", root.join("dir00/link")).unwrap();
    fs::hard_link(root.join("dir02/file000.txt"), root.join("dir02/hardlink")).unwrap();
    set_xattr(&root.join("dir04/file000.txt"), "user.color", b"blue");
    set_xattr(&root.join("dir04"), "user.owner", b"team-a");
    let fifo = CString::new(root.join("dir05/pipe").as_os_str().as_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
}

/// What happens on day `i` (1..=9) before that day's run.
fn mutate(root: &Path, i: u32) {
    let r = |p: &str| root.join(p);
    match i {
        1 => {
            for f in 0..50 {
                let p = r(&format!("dir06/file{f:03}.txt"));
                let mut text = fs::read(&p).unwrap();
                text.extend_from_slice(b"changed on day 1\n");
                fs::write(&p, text).unwrap();
            }
            for f in 0..30 {
                fs::remove_file(r(&format!("dir07/file{f:03}.txt"))).unwrap();
            }
            for f in 0..20 {
                write(&r(&format!("dir08/new{f:02}.txt")), format!("new {f}\n"));
            }
        }
        2 => {
            for f in 0..10 {
                fs::rename(
                    r(&format!("dir09/file{f:03}.txt")),
                    r(&format!("dir09/renamed{f:03}.txt")),
                )
                .unwrap();
            }
            fs::rename(r("dir03"), r("dir03-renamed")).unwrap();
        }
        3 => {
            // File → symlink, symlink → directory, directory → file.
            fs::remove_file(r("dir10/file000.txt")).unwrap();
            symlink("file001.txt", r("dir10/file000.txt")).unwrap();
            fs::remove_file(r("dir00/link")).unwrap();
            write(&r("dir00/link/inside.txt"), "now a directory\n");
            fs::remove_dir_all(r("dir00/nested")).unwrap();
            write(&r("dir00/nested"), "now a file\n");
        }
        4 => {
            for d in ["empty1", "empty2/empty3"] {
                fs::create_dir_all(r(d)).unwrap();
            }
            for f in 0..20 {
                fs::set_permissions(
                    r(&format!("dir11/file{f:03}.txt")),
                    fs::Permissions::from_mode(0o600),
                )
                .unwrap();
            }
            fs::set_permissions(r("dir12"), fs::Permissions::from_mode(0o700)).unwrap();
            set_mtime(
                &r("dir12/file000.txt"),
                SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000),
            );
        }
        5 => {
            // Same size, same mtime, new content: only ctime tells.
            for f in 0..5 {
                let p = r(&format!("dir13/file{f:03}.txt"));
                let mtime = fs::metadata(&p).unwrap().modified().unwrap();
                let text = fs::read(&p)
                    .unwrap()
                    .iter()
                    .map(|b| b.to_ascii_uppercase())
                    .collect::<Vec<u8>>();
                fs::write(&p, text).unwrap();
                set_mtime(&p, mtime);
            }
        }
        6 => {
            // Replaced by a new inode with the same size and mtime.
            let p = r("dir14/file000.txt");
            let mtime = fs::metadata(&p).unwrap().modified().unwrap();
            let tmp = r("dir14/.tmp");
            fs::write(&tmp, b"DIR 14 FILE 0\n").unwrap();
            set_mtime(&tmp, mtime);
            fs::rename(&tmp, &p).unwrap();
        }
        7 => {
            // Back again: symlink → file, file → directory.
            fs::remove_file(r("dir10/file000.txt")).unwrap();
            write(&r("dir10/file000.txt"), "a file once more\n");
            fs::remove_file(r("dir00/nested")).unwrap();
            write(&r("dir00/nested/deeper/leaf.txt"), "leaf again\n");
        }
        8 => {
            for f in 0..5 {
                set_xattr(
                    &r(&format!("dir15/file{f:03}.txt")),
                    "user.tag",
                    format!("t{f}").as_bytes(),
                );
            }
            remove_xattr(&r("dir04/file000.txt"), "user.color");
            fs::hard_link(r("dir15/file010.txt"), r("dir15/another-name")).unwrap();
        }
        9 => {
            fs::remove_dir_all(r("dir16")).unwrap();
            fs::rename(r("dir17"), r("dir03-renamed/dir17-moved-inside")).unwrap();
            write(&r("dir18/file000.txt"), "last day\n");
        }
        _ => unreachable!(),
    }
}

#[test]
fn ten_days_of_history_replay_exactly_with_s3nap_and_with_gnu_tar() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let tree = dir.join("tree");
    initial_tree(&tree);
    // A socket in the tree: skipped, never a failure.
    let _socket = std::os::unix::net::UnixListener::bind(tree.join("dir05/socket")).unwrap();
    let gpg = Gpg::new(dir);
    let server = S3Server::start();
    server.create_bucket("history");
    let conf = ConfigBuilder::new(dir)
        .s3(&server, "history")
        .gpg(&gpg)
        .line("Fulls 2\nDiffs 6")
        .directory(&tree)
        .build();
    let c = conf.to_str().unwrap();
    let rel = tree.strip_prefix("/").unwrap().to_path_buf();
    for day in 0..10u32 {
        if day > 0 {
            mutate(&tree, day);
        }
        // The day's copy, without the socket (which is not backed up).
        let copy = dir.join(format!("copy{day}"));
        let status = Command::new("cp")
            .arg("-a")
            .arg(&tree)
            .arg(&copy)
            .status()
            .unwrap();
        assert!(status.success());
        fs::remove_file(copy.join("dir05/socket")).unwrap();

        let out = s3nap(&["-c", c, "--now", &day_time(day)], &[]);
        assert!(out.status.success(), "day {day}: {}", stderr(&out));
        let keys = server.keys("history");
        let manifest_key = keys
            .iter()
            .filter(|k| k.ends_with(".manifest.json"))
            .max()
            .unwrap();
        let manifest: serde_json::Value =
            serde_json::from_slice(&server.get("history", manifest_key)).unwrap();
        let want_kind = if day % 7 == 0 { "full" } else { "diff" };
        assert_eq!(manifest["kind"], want_kind, "day {day}: {}", stderr(&out));
        assert!(
            manifest["warnings"].as_array().unwrap().is_empty(),
            "day {day}: {manifest}"
        );
        if day > 0 && day != 7 {
            let stored = manifest["archive"]["plaintext_size"].as_u64().unwrap();
            assert!(
                stored < 200_000,
                "day {day}: a DIFF of small changes holds {stored} bytes"
            );
        }

        // 1. s3nap recover --at the day's run | tar -x -G
        let run = manifest["run"].as_str().unwrap();
        let out = s3nap(
            &[
                "-c",
                c,
                "recover",
                tree.to_str().unwrap(),
                "--at",
                run,
                "--identity",
                gpg.secret.to_str().unwrap(),
            ],
            &[],
        );
        assert!(out.status.success(), "day {day}: {}", stderr(&out));
        let dest = dir.join(format!("recovered{day}"));
        untar_incremental(&out.stdout, &dest);
        assert_same_tree(&copy, &dest.join(&rel));

        // 2. the raw objects of the chain with stock tools, FULL first.
        let chain_start = day - day % 7;
        let dest2 = dir.join(format!("stock{day}"));
        for d in chain_start..=day {
            let stamp = day_time(d).replace(['-', ':'], "");
            let key = keys
                .iter()
                .find(|k| k.contains(&stamp) && k.ends_with(".tar.zst.gpg"))
                .unwrap();
            let plain = gpg.decrypt(&server.get("history", key));
            let tar = pipe(Command::new("zstd").args(["-d", "-c"]), &plain);
            untar_incremental(&tar, &dest2);
        }
        assert_same_tree(&copy, &dest2.join(&rel));
    }

    // The members of one DIFF: its dumpdirs and what changed that day.
    let out = s3nap(
        &[
            "-c",
            c,
            "recover",
            tree.to_str().unwrap(),
            "--at",
            "2026-01-10T03:00:00Z",
            "--list",
            "--identity",
            gpg.secret.to_str().unwrap(),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    let day9: Vec<&str> = listing
        .lines()
        .skip_while(|l| !l.ends_with("/dir15/another-name"))
        .collect();
    assert!(
        listing.contains(&format!("D {}/dir18/", rel.display())),
        "{listing}"
    );
    assert!(
        day9.iter()
            .any(|l| *l == format!("0 {}/dir18/file000.txt", rel.display())),
        "{listing}"
    );
}

#[test]
fn an_unchanged_tree_makes_a_small_diff() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    for d in 0..50 {
        for f in 0..100 {
            write(&tree.join(format!("d{d}/f{f}")), vec![b'x'; 1000]);
        }
    }
    let conf = ConfigBuilder::new(tmp.path()).directory(&tree).build();
    let c = conf.to_str().unwrap();
    assert!(s3nap(&["-c", c, "--now", &day_time(0)], &[])
        .status
        .success());
    let out = s3nap(&["-c", c, "--now", &day_time(1), "--json"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let o: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(o["kind"], "diff");
    // 5,000 files of 1 kB: the FULL read ~5 MB; the DIFF only dumpdirs.
    assert!(o["bytes_read"].as_u64().unwrap() < 200_000, "{o}");
}

#[test]
fn a_failed_diff_upload_is_made_up_for_by_the_next_diff() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let tree = dir.join("tree");
    write(&tree.join("a.txt"), "a\n");
    let server = S3Server::start();
    server.create_bucket("faileddiff");
    let conf = ConfigBuilder::new(dir)
        .s3(&server, "faileddiff")
        .line("ChunkSize 5MiB\nTimeout 2\nRetries 1\nParallelUploads 2")
        .directory(&tree)
        .build();
    let c = conf.to_str().unwrap();
    assert!(s3nap(&["-c", c, "--now", &day_time(0)], &[])
        .status
        .success());
    let state_file = fs::read_dir(dir.join("state"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "state"))
        .unwrap();
    let state_before = fs::read(&state_file).unwrap();

    // Day 1's changes, and its upload stopped half-way.
    write(&tree.join("big.bin"), random_bytes(40 << 20, 9));
    write(&tree.join("a.txt"), "a changed on day 1\n");
    let out = server.s3nap_with_outage("faileddiff", &["-c", c, "--now", &day_time(1)], None);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(
        fs::read(&state_file).unwrap(),
        state_before,
        "a failed run advanced the state"
    );

    // Day 2: nothing new, but the DIFF carries day 1's changes.
    let out = s3nap(&["-c", c, "--now", &day_time(2), "--json"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let o: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(o["kind"], "diff");
    assert!(o["bytes_read"].as_u64().unwrap() > 40 << 20, "{o}");
    let out = s3nap(&["-c", c, "recover", tree.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let dest = dir.join("restored");
    untar_incremental(&out.stdout, &dest);
    assert_same_tree(&tree, &dest.join(tree.strip_prefix("/").unwrap()));
}

#[test]
fn a_diff_whose_base_archive_is_gone_becomes_a_full_with_a_warning() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let tree = dir.join("tree");
    write(&tree.join("a.txt"), "a\n");
    let conf = ConfigBuilder::new(dir).directory(&tree).build();
    let c = conf.to_str().unwrap();
    assert!(s3nap(&["-c", c, "--now", &day_time(0)], &[])
        .status
        .success());
    // The FULL's archive vanishes from the store (its manifest stays listed).
    let archive = find_files(&dir.join("store"), ".full.tar.zst")
        .pop()
        .unwrap();
    fs::remove_file(&archive).unwrap();
    write(&tree.join("a.txt"), "a changed\n");
    let out = s3nap(&["-c", c, "--now", &day_time(1), "--json"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let o: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(o["kind"], "full", "{o}");
    assert!(
        stderr(&out).contains("is missing; this run is a FULL instead of a DIFF"),
        "{}",
        stderr(&out)
    );
    let out = s3nap(&["-c", c, "recover", tree.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let dest = dir.join("restored");
    untar_incremental(&out.stdout, &dest);
    assert_same_tree(&tree, &dest.join(tree.strip_prefix("/").unwrap()));
}

#[test]
fn posix_acls_survive_backup_and_recovery() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    write(&tree.join("shared/report.txt"), "numbers\n");
    let run = |cmd: &str, args: &[&str]| {
        let out = Command::new(cmd)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{cmd} (scripts/setup-tests.sh installs acl): {e}"));
        assert!(
            out.status.success(),
            "{cmd} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let file = tree.join("shared/report.txt");
    let shared = tree.join("shared");
    run(
        "setfacl",
        &["-m", "u:1234:r--,g:2345:rw-", file.to_str().unwrap()],
    );
    run(
        "setfacl",
        &["-d", "-m", "u:1234:rwx", shared.to_str().unwrap()],
    );
    let conf = ConfigBuilder::new(tmp.path()).directory(&tree).build();
    let out = s3nap(&["-c", conf.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = s3nap(
        &[
            "-c",
            conf.to_str().unwrap(),
            "recover",
            tree.to_str().unwrap(),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let dest = tmp.path().join("restored");
    fs::create_dir_all(&dest).unwrap();
    pipe(
        Command::new("tar")
            .args(["-x", "-G", "--acls", "-C"])
            .arg(&dest),
        &out.stdout,
    );
    let restored = dest.join(tree.strip_prefix("/").unwrap());
    let acl = |p: &Path| {
        run(
            "getfacl",
            &["--omit-header", "--numeric", p.to_str().unwrap()],
        )
    };
    assert!(acl(&file).contains("user:1234:r--"), "{}", acl(&file));
    assert_eq!(acl(&restored.join("shared/report.txt")), acl(&file));
    assert!(
        acl(&shared).contains("default:user:1234:rwx"),
        "{}",
        acl(&shared)
    );
    assert_eq!(acl(&restored.join("shared")), acl(&shared));
}

#[test]
fn one_file_system_keeps_mount_points_and_stores_device_nodes() {
    use std::os::unix::fs::MetadataExt;
    // /dev (devtmpfs) holds device nodes and /dev/shm, a tmpfs mounted inside it.
    let dev = fs::metadata("/dev").unwrap().dev();
    assert_ne!(
        fs::metadata("/dev/shm").unwrap().dev(),
        dev,
        "/dev/shm must be its own file system here"
    );
    let tmp = tempfile::tempdir().unwrap();
    let marker = Path::new("/dev/shm").join(format!("s3nap-test-{}", std::process::id()));
    fs::write(&marker, "on another file system\n").unwrap();
    let listing = |one_fs: &str| {
        let conf = ConfigBuilder::new(tmp.path())
            .bucket(tmp.path().join(format!("store-{one_fs}")).display())
            .diff_dir(&tmp.path().join(format!("state-{one_fs}")))
            .line(format!("OneFileSystem {one_fs}"))
            .directory(Path::new("/dev"))
            .build();
        let out = s3nap(&["-c", conf.to_str().unwrap()], &[]);
        assert!(out.status.success(), "{}", stderr(&out));
        let out = s3nap(
            &["-c", conf.to_str().unwrap(), "recover", "/dev", "--list"],
            &[],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let marker_name = format!("dev/shm/{}", marker.file_name().unwrap().to_string_lossy());
    let within = listing("yes");
    let across = listing("no");
    fs::remove_file(&marker).unwrap();
    assert!(
        within.lines().any(|l| l == "5 dev/shm"),
        "the mount point is kept: {within}"
    );
    assert!(
        !within.contains(&marker_name),
        "another file system was entered: {within}"
    );
    assert!(
        across.lines().any(|l| l == format!("0 {marker_name}")),
        "{across}"
    );
    // Device nodes are stored as such (type 3: character device), never read.
    assert!(within.lines().any(|l| l == "3 dev/null"), "{within}");
}

/// One run's `--json` outcomes by set name.
fn outcomes(out: &std::process::Output) -> std::collections::BTreeMap<String, serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|o| (o["set"].as_str().unwrap().to_string(), o))
        .collect()
}

/// Recovers the latest chain of `tree`'s set with `tar -x -G` and compares it with the tree.
fn assert_recovers(conf: &Path, tree: &Path, dest: &Path) {
    let set = format!("dir{}", tree.display());
    let out = s3nap(&["-c", conf.to_str().unwrap(), "recover", &set], &[]);
    assert!(out.status.success(), "{set}: {}", stderr(&out));
    let _ = fs::remove_dir_all(dest);
    untar_incremental(&out.stdout, dest);
    assert_same_tree(tree, &dest.join(tree.strip_prefix("/").unwrap()));
}

#[test]
fn directory_sets_whose_names_differ_only_by_slash_and_underscore_diff_on_their_own_state() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let slash = dir.join("srv/a/b");
    let under = dir.join("srv/a_b");
    for (tree, seed) in [(&slash, 1), (&under, 2)] {
        for f in 0..20 {
            write(
                &tree.join(format!("d{}/f{f}", f % 3)),
                random_bytes(3000, seed + f),
            );
        }
    }
    let conf = ConfigBuilder::new(dir)
        .directory(&slash)
        .directory(&under)
        .build();
    let c = conf.to_str().unwrap();
    let out = s3nap(&["-c", c, "--now", &day_time(0)], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    write(&slash.join("d0/f0"), "changed\n");
    write(&under.join("new"), "new\n");
    fs::remove_file(under.join("d1/f1")).unwrap();
    let out = s3nap(&["-c", c, "--now", &day_time(1), "--json"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for (set, o) in outcomes(&out) {
        assert_eq!(
            (o["kind"].as_str(), o["warnings"].as_u64()),
            (Some("diff"), Some(0)),
            "{set}: {o}"
        );
    }
    assert_recovers(&conf, &slash, &dir.join("r1"));
    assert_recovers(&conf, &under, &dir.join("r2"));

    // DiffDir as the old version left it: one shared state file, the underscore set's (the last
    // one written), in the old format.
    let state = dir.join("state");
    let mut legacy = None;
    for f in fs::read_dir(&state).unwrap() {
        let f = f.unwrap().path();
        if f.extension().is_none_or(|e| e != "state") {
            continue;
        }
        let text = fs::read_to_string(&f).unwrap();
        let mut lines = text.lines();
        let header = lines.next().unwrap();
        let identity = lines.next().unwrap();
        assert!(identity.starts_with("identity "), "{identity}");
        if identity.ends_with("%2Fa_b") {
            let rest: Vec<&str> = lines.collect();
            legacy = Some(format!(
                "{}\n{}\n",
                header.replace("s3nap-state 2 ", "s3nap-state 1 "),
                rest.join("\n")
            ));
        }
        fs::remove_file(f).unwrap();
    }
    let shared = state.join(format!(
        "dir{}@-.state",
        under.display().to_string().replace('/', "_")
    ));
    fs::write(&shared, legacy.unwrap()).unwrap();

    write(&slash.join("d0/f1"), "changed too\n");
    write(&under.join("new"), "newer\n");
    let plan = s3nap(&["-c", c, "--now", &day_time(2), "-t"], &[]);
    let text = String::from_utf8_lossy(&plan.stdout).into_owned();
    assert!(plan.status.success(), "{}", stderr(&plan));
    let section = |tree: &Path| {
        text.split(&format!("dir{} [cycle -]", tree.display()))
            .nth(1)
            .unwrap()
            .split("\n\n")
            .next()
            .unwrap()
            .to_string()
    };
    let slash_plan = section(&slash);
    assert!(slash_plan.contains("due: FULL"), "{slash_plan}");
    assert!(slash_plan.contains("warning:"), "{slash_plan}");
    assert!(section(&under).contains("due: DIFF"), "{text}");

    let out = s3nap(&["-c", c, "--now", &day_time(2), "--json"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let day2 = outcomes(&out);
    let o = &day2[&format!("dir{}", slash.display())];
    assert_eq!(
        (o["kind"].as_str(), o["warnings"].as_u64()),
        (Some("full"), Some(1)),
        "{o}"
    );
    let o = &day2[&format!("dir{}", under.display())];
    assert_eq!(
        (o["kind"].as_str(), o["warnings"].as_u64()),
        (Some("diff"), Some(0)),
        "{o}"
    );
    assert!(!shared.exists(), "the old file stays after migration");
    assert_recovers(&conf, &slash, &dir.join("r1"));
    assert_recovers(&conf, &under, &dir.join("r2"));

    write(&slash.join("d2/f2"), "third\n");
    let out = s3nap(&["-c", c, "--now", &day_time(3), "--json"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for (set, o) in outcomes(&out) {
        assert_eq!(
            (o["kind"].as_str(), o["warnings"].as_u64()),
            (Some("diff"), Some(0)),
            "{set}: {o}"
        );
    }
    assert_recovers(&conf, &slash, &dir.join("r1"));
    assert_recovers(&conf, &under, &dir.join("r2"));
}
