//! Several configurations on one Bucket and Host (against moto, over HTTP), and the debris of
//! interrupted runs: each run cleans up exactly what its own configuration left, never another
//! configuration's live upload; foreign debris waits for a grace period on the store's clock.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A `<Command>` program that signals it started, then waits (at most 60 s) for `go`.
fn held_dump(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let started = dir.join(format!("{name}.started"));
    let go = dir.join(format!("{name}.go"));
    let script = dir.join(format!("{name}.sh"));
    fs::write(
        &script,
        format!(
            "#!/bin/sh\ntouch {started}\ni=0\nwhile [ ! -e {go} ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done\necho 'data of {name}'\n",
            started = started.display(),
            go = go.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    (script, started, go)
}

/// A configuration of its own (own file, own DiffDir) on the shared bucket and Host `h`.
fn configuration(dir: &Path, server: &S3Server, name: &str, sets: &str) -> PathBuf {
    let home = dir.join(name);
    fs::create_dir_all(&home).unwrap();
    ConfigBuilder::new(&home)
        .s3(server, "shared")
        .line(sets)
        .build()
}

fn spawn(conf: &Path, args: &[&str]) -> Running {
    Running::spawn(
        Command::new(env!("CARGO_BIN_EXE_s3nap"))
            .arg("-c")
            .arg(conf)
            .args(args)
            .stdin(Stdio::null()),
    )
}

fn wait_for(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for `run`; returns its exit code and stderr.
fn finish(run: Running) -> (Option<i32>, String) {
    let out = run.wait(DEADLINE);
    (out.status.code(), stderr(&out))
}

fn records(conf: &Path) -> usize {
    fs::read_dir(conf.parent().unwrap().join("state/uploads")).map_or(0, |d| {
        d.filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "json")
        })
        .count()
    })
}

#[test]
fn configurations_sharing_bucket_and_host_leave_each_other_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let server = S3Server::start();
    server.create_bucket("shared");
    let (script_a, started_a, go_a) = held_dump(dir, "a");
    let a = configuration(
        dir,
        &server,
        "a",
        &format!("<Command a>\n  Run {}\n</Command>", script_a.display()),
    );
    let tree = dir.join("tree");
    fs::create_dir_all(&tree).unwrap();
    fs::write(tree.join("file.txt"), b"b's data\n").unwrap();
    let b = configuration(dir, &server, "b", &format!("Directory {}", tree.display()));

    // A's upload is open (and recorded) while its dump waits; B runs start to end meanwhile.
    let run_a = spawn(&a, &[]);
    wait_for(&started_a);
    assert_eq!(server.open_uploads("shared").len(), 1);
    let out = s3nap(&["-c", b.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    fs::write(&go_a, "").unwrap();
    let (code, err) = finish(run_a);
    assert_eq!(code, Some(0), "B must not abort A's live upload: {err}");
    let keys = server.keys("shared");
    assert!(
        keys.iter()
            .any(|k| k.starts_with("h/cmd/a/") && k.ends_with(".manifest.json")),
        "{keys:?}"
    );
    assert!(
        keys.iter()
            .any(|k| k.starts_with("h/dir/") && k.ends_with(".manifest.json")),
        "{keys:?}"
    );
    assert!(server.open_uploads("shared").is_empty());
    assert_eq!(
        records(&a) + records(&b),
        0,
        "committed runs keep no upload record"
    );

    // A is killed mid-upload: its upload stays open and recorded. B's next run leaves it be;
    // A's next run finishes exactly that clean-up.
    fs::remove_file(&go_a).unwrap();
    fs::remove_file(&started_a).unwrap();
    let killed = spawn(&a, &["-f"]);
    wait_for(&started_a);
    drop(killed); // SIGKILL, as a crash or an OOM kill would

    let left = server.open_uploads("shared");
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(records(&a), 1);
    let out = s3nap(&["-c", b.to_str().unwrap(), "-f"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(server.open_uploads("shared"), left, "B aborted A's upload");
    // B's prune sees it as foreign, and young: kept.
    let out = s3nap(&["-c", b.to_str().unwrap(), "prune"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("kept") && text.contains("cmd/a/"), "{text}");
    assert_eq!(
        server.open_uploads("shared"),
        left,
        "B's prune aborted A's upload"
    );

    fs::write(&go_a, "").unwrap();
    // -t says so, and changes nothing.
    let out = s3nap(&["-c", a.to_str().unwrap(), "-t", "-f"], &[]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("finish the clean-up") && text.contains("cmd/a/"),
        "{text}"
    );
    assert_eq!(server.open_uploads("shared"), left);
    let out = s3nap(&["-c", a.to_str().unwrap(), "-f"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("interrupted run"), "{}", stderr(&out));
    assert!(server.open_uploads("shared").is_empty());
    assert_eq!(records(&a), 0);
}

#[test]
fn two_configurations_backing_up_one_set_is_an_error_where_it_shows() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let server = S3Server::start();
    server.create_bucket("shared");
    let (script, started, go) = held_dump(dir, "same");
    let sets = format!("<Command same>\n  Run {}\n</Command>", script.display());
    let first = configuration(dir, &server, "first", &sets);
    let second = configuration(dir, &server, "second", &sets);

    let run = spawn(&first, &[]);
    wait_for(&started);
    let out = s3nap(&["-c", second.to_str().unwrap()], &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("another configuration") && err.contains("cmd/same"),
        "{err}"
    );
    fs::write(&go, "").unwrap();
    let (code, err) = finish(run);
    assert_eq!(
        code,
        Some(0),
        "the first configuration's run is untouched: {err}"
    );
    assert!(server.open_uploads("shared").is_empty());
}

#[test]
fn prune_removes_foreign_debris_only_after_the_grace_period() {
    // The local store: its clock is this machine's, so debris can be made old with touch.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let store = dir.join("store");
    let tree = dir.join("tree");
    fs::create_dir_all(&tree).unwrap();
    fs::write(tree.join("f"), b"x").unwrap();
    let conf = ConfigBuilder::new(dir)
        .bucket(store.display())
        .directory(&tree)
        .build();
    let c = conf.to_str().unwrap();
    assert!(s3nap(&["-c", c], &[]).status.success());
    let set_dir = store.join(format!("h/dir{}", tree.display()));
    let young = set_dir.join("20250101T000000Z.full.tar.zst");
    let old = set_dir.join("20240101T000000Z.full.tar.zst");
    fs::write(&young, b"another configuration's live run").unwrap();
    fs::write(&old, b"left eight days ago").unwrap();
    let touched = Command::new("touch")
        .args(["-d", "8 days ago"])
        .arg(&old)
        .status()
        .unwrap();
    assert!(touched.success());

    let out = s3nap(&["-c", c, "prune"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        young.exists(),
        "a young archive without manifest was removed: {text}"
    );
    assert!(!old.exists(), "debris past the grace period stays: {text}");
    assert!(text.contains("kept") && text.contains("removed"), "{text}");
    // The committed run is untouched.
    assert_eq!(find_files(&store, ".manifest.json").len(), 1);
}
