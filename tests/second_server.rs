//! The core round trip against s3s-fs, a second S3 implementation beside moto (a client bug and
//! an emulator bug can agree): FULL, DIFF, exact recovery of each, and retention by `prune` and
//! by a run. s3s-fs answers ListMultipartUploads and GetBucketVersioning with 501
//! NotImplemented: each costs one warning on the first run (an info line on later ones: DiffDir remembers), no retry and no change of exit status. A
//! call that a set needs (ListObjectVersions, for a set with `ObjectLock`) fails the set at
//! once, naming the call and the answer. A run killed after s3s-fs completed its upload is
//! cleaned up by the next, although s3s-fs refuses to abort the completed upload (403).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use chrono::NaiveDate;
use common::proxy::FaultProxy;
use common::*;
use serde_json::json;

/// Day 0's index is even: with `Diffs 1` and `Fulls 1` even days are FULLs (slot 0) and odd
/// days DIFFs on them (slot 1), so day 3's DIFF takes over the last slot of days 0 and 1.
const DAY0: &str = "2026-01-05";

fn day_time(i: i64) -> String {
    let d = NaiveDate::parse_from_str(DAY0, "%Y-%m-%d").unwrap() + chrono::Duration::days(i);
    format!("{}T03:00:00Z", d.format("%Y-%m-%d"))
}

fn run_id(i: i64) -> String {
    day_time(i).replace(['-', ':'], "")
}

/// The lines of a run's log saying a server lacks a call.
fn unimplemented(out: &Output) -> Vec<String> {
    stderr(out)
        .lines()
        .filter(|l| l.contains("does not implement"))
        .map(str::to_string)
        .collect()
}

/// Asserts that `out` succeeded (exit 0, not 1), said once for each call in `lacking` (named
/// as s3nap logs them) and for nothing else that the server lacks it — as a warning on the
/// `first` run that meets it, at info level on later runs (their DiffDir remembers: a daily
/// cron job must not mail about it daily) — and never retried (every retry logs a `… retrying
/// in …` warning; no time bound, which a loaded machine would break).
fn assert_warned_once(out: &Output, lacking: &[&str], first: bool) {
    let log = stderr(out);
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(!log.contains("retrying"), "{log}");
    let warned = unimplemented(out);
    for call in lacking {
        let about: Vec<&String> = warned.iter().filter(|l| l.contains(call)).collect();
        assert_eq!(about.len(), 1, "one warning about {call}: {log}");
        let level = if first { "WARN" } else { "INFO" };
        assert!(
            about[0].contains(level) && about[0].contains("NotImplemented (HTTP 501)"),
            "{log}"
        );
    }
    assert_eq!(warned.len(), lacking.len(), "{log}");
}

struct Env {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    tree: PathBuf,
    gpg: Gpg,
    server: S3Server,
}

impl Env {
    fn new() -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let tree = dir.join("tree");
        fs::create_dir_all(tree.join("docs")).unwrap();
        fs::write(tree.join("docs/readme.txt"), b"day 0\n").unwrap();
        // Larger than a part: the archive is uploaded in several (s3s-fs refuses a part under
        // 5 MiB that is not the last, as S3 does).
        fs::write(tree.join("big.bin"), random_bytes(12 << 20, 17)).unwrap();
        let gpg = Gpg::new(&dir);
        let server = S3Server::start_s3s_fs();
        server.create_bucket("second");
        Env {
            _tmp: tmp,
            dir,
            tree,
            gpg,
            server,
        }
    }

    /// A configuration in `DIR/NAME/s3nap.conf` (`extra` among its global settings); all of
    /// them share one DiffDir.
    fn config(&self, name: &str, extra: &str) -> PathBuf {
        let home = self.dir.join(name);
        fs::create_dir_all(&home).unwrap();
        ConfigBuilder::new(&home)
            .s3(&self.server, "second/backups")
            .diff_dir(&self.dir.join("state"))
            .gpg(&self.gpg)
            .line(extra)
            .cycle("c", |c| c.line("Diffs 1\nFulls 1").directory(&self.tree))
            .build()
    }

    /// `s3nap -c CONF ARGS`.
    fn s3nap(&self, conf: &Path, args: &[&str]) -> Output {
        let mut all = vec!["-c", conf.to_str().unwrap()];
        all.extend_from_slice(args);
        s3nap(&all, &[])
    }

    /// Changes the tree for day `i` and keeps a copy of it as it is then.
    fn change(&self, i: i64) -> PathBuf {
        fs::write(self.tree.join("docs/readme.txt"), format!("day {i}\n")).unwrap();
        fs::write(
            self.tree.join(format!("docs/day-{i}.txt")),
            format!("written on day {i}\n"),
        )
        .unwrap();
        self.snapshot(i)
    }

    fn snapshot(&self, i: i64) -> PathBuf {
        let copy = self.dir.join("snapshots").join(i.to_string());
        fs::create_dir_all(&copy).unwrap();
        let status = Command::new("cp")
            .arg("-a")
            .arg(&self.tree)
            .arg(&copy)
            .status()
            .unwrap();
        assert!(status.success());
        copy.join("tree")
    }

    /// (run id, kind) of every committed run.
    fn runs(&self, conf: &Path) -> Vec<(String, String)> {
        let out = self.s3nap(conf, &["list", "--json"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let field = |k: &str| r[k].as_str().unwrap().to_string();
                (field("run"), field("kind"))
            })
            .collect()
    }

    /// Recovers the tree as of day `i`'s run and compares it with `want`.
    fn assert_recovers(&self, conf: &Path, i: i64, want: &Path) {
        let at = run_id(i);
        let out = self.s3nap(
            conf,
            &[
                "recover",
                self.tree.to_str().unwrap(),
                "--at",
                &at,
                "--identity",
                self.gpg.secret.to_str().unwrap(),
            ],
        );
        assert!(out.status.success(), "day {i}: {}", stderr(&out));
        let dest = self.dir.join(format!("restored-{i}"));
        untar(&out.stdout, &dest);
        assert_same_tree(want, &dest.join(self.tree.strip_prefix("/").unwrap()));
    }
}

fn kinds(runs: &[(String, String)]) -> Vec<(String, &str)> {
    runs.iter().map(|(r, k)| (r.clone(), k.as_str())).collect()
}

#[test]
fn full_diff_recover_and_prune_against_s3s_fs_warn_once_and_succeed() {
    let e = Env::new();
    // Runs that delete nothing: retention is left to `prune`.
    let backup_only = e.config("backup-only", "PruneAfterRun no");
    let mut trees = Vec::new();
    for i in 0..4 {
        let tree = if i == 0 { e.snapshot(0) } else { e.change(i) };
        trees.push(tree);
        let out = e.s3nap(&backup_only, &["--now", &day_time(i)]);
        assert_warned_once(&out, &["list uploads", "get versioning"], i == 0);
    }
    let want = |days: &[i64]| -> Vec<(String, &str)> {
        days.iter()
            .map(|&i| (run_id(i), if i % 2 == 0 { "full" } else { "diff" }))
            .collect()
    };
    assert_eq!(kinds(&e.runs(&backup_only)), want(&[0, 1, 2, 3]));
    // The FULL and the DIFF on it each recover their day's tree exactly.
    e.assert_recovers(&backup_only, 0, &trees[0]);
    e.assert_recovers(&backup_only, 1, &trees[1]);

    // prune: retention retires days 0 and 1 (day 3's DIFF took their last slot) although
    // the server cannot list uploads; the debris search goes on without them.
    let out = e.s3nap(&backup_only, &["prune", "--now", &day_time(3)]);
    assert_warned_once(&out, &["list uploads", "get versioning"], false);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    for i in [0, 1] {
        assert!(
            said.lines()
                .any(|l| l.contains(&format!("retired {}", run_id(i)))),
            "{said}"
        );
    }
    assert_eq!(kinds(&e.runs(&backup_only)), want(&[2, 3]));
    let keys = e.server.keys("second");
    assert_eq!(
        keys.len(),
        2 * 3,
        "archive, range hashes, manifest: {keys:?}"
    );
    e.assert_recovers(&backup_only, 3, &trees[3]);

    // A run that retires by itself (PruneAfterRun yes) opens a second store for deleting: still
    // one line per missing call, and day 5's DIFF retires days 2 and 3.
    let pruning = e.config("pruning", "");
    for i in [4, 5] {
        trees.push(e.change(i));
        let out = e.s3nap(&pruning, &["--now", &day_time(i)]);
        assert_warned_once(&out, &["list uploads", "get versioning"], false);
    }
    assert_eq!(kinds(&e.runs(&pruning)), want(&[4, 5]));
    e.assert_recovers(&pruning, 5, &trees[5]);
}

/// Object Lock is a promise the server must keep: a set with `ObjectLock` on a server that
/// does not implement its calls (a bucket that locks keeps versions: s3s-fs lists none) fails
/// at once (no retries), naming the call and the server's answer, and stores nothing.
#[test]
fn a_locked_set_fails_at_once_naming_the_call_s3s_fs_lacks() {
    let e = Env::new();
    let conf = e.config("locked", "");
    let text = fs::read_to_string(&conf)
        .unwrap()
        .replace("Diffs 1", "Diffs 1\n  ObjectLock governance");
    fs::write(&conf, text).unwrap();
    let out = e.s3nap(&conf, &["--now", &day_time(0)]);
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{log}");
    assert!(!log.contains("retrying"), "{log}");
    // The first call the set needs that s3s-fs lacks: a versioned bucket's listing.
    assert!(
        log.lines().any(|l| l.contains("FAILED")
            && l.contains("list versions s3://second/backups/h/")
            && l.contains("NotImplemented (HTTP 501)")),
        "{log}"
    );
    assert!(e.server.keys("second").is_empty());
}

/// Killed after s3s-fs completed the archive's upload (its reply held at a proxy), before the
/// manifest: the next run aborts the recorded upload — s3s-fs refuses, 403 where S3 answers 404
/// NoSuchUpload, and the stored archive shows it completed — and removes what the killed run
/// stored, then backs up as usual.
#[test]
fn a_run_killed_after_its_upload_completed_is_cleaned_up_by_the_next_run() {
    let e = Env::new();
    let proxy = FaultProxy::start(&e.server);
    let home = e.dir.join("proxied");
    fs::create_dir_all(&home).unwrap();
    let conf = ConfigBuilder::new(&home)
        .s3_via(&e.server, &proxy, "second/backups")
        .diff_dir(&e.dir.join("state"))
        .gpg(&e.gpg)
        .line("Timeout 10\nRetries 1")
        .cycle("c", |c| c.line("Diffs 1\nFulls 1").directory(&e.tree))
        .build();
    proxy.add(json!({"method": "POST", "target": "uploadId=", "action": "hold_reply"}));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_s3nap"));
    cmd.arg("-c")
        .arg(&conf)
        .args(["--now", &day_time(0)])
        .stdin(std::process::Stdio::null());
    let running = Running::spawn(&mut cmd);
    let held = proxy.wait_held(Duration::from_secs(60));
    assert!(
        held["target"].as_str().unwrap().contains(&run_id(0)),
        "{held}"
    );
    let killed = Command::new("kill")
        .args(["-KILL", &running.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    running.wait(DEADLINE);
    proxy.clear();
    let of_killed = |keys: &[String]| -> Vec<String> {
        keys.iter()
            .filter(|k| k.contains(&run_id(0)))
            .cloned()
            .collect()
    };
    let stored = of_killed(&e.server.keys("second"));
    assert!(
        stored.iter().any(|k| k.ends_with(".tar.zst.gpg"))
            && !stored.iter().any(|k| k.ends_with(".manifest.json")),
        "the completed archive, no manifest: {stored:?}"
    );

    let tree = e.change(1);
    // The killed run kept nothing of what the server lacks: this one is the first to say it.
    let out = e.s3nap(&conf, &["--now", &day_time(1)]);
    assert_warned_once(&out, &["list uploads", "get versioning"], true);
    let log = stderr(&out);
    assert!(
        log.lines()
            .any(|l| l.contains("finished the clean-up of") && l.contains(&run_id(0))),
        "{log}"
    );
    assert_eq!(of_killed(&e.server.keys("second")), Vec::<String>::new());
    let records = e.dir.join("state/uploads");
    let left: Vec<_> = fs::read_dir(&records)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(kinds(&e.runs(&conf)), vec![(run_id(1), "full")]);
    e.assert_recovers(&conf, 1, &tree);
}
