//! Cycles against a real S3 server, with `--now` standing in for the calendar: a 60-day
//! SimpleCycle history whose surviving runs must be exactly the ones the rotation predicts and
//! must each recover; `-t` that changes nothing; the s3napback README configuration planned
//! unchanged; skip-when-done and `-f`; prune of retired runs and debris.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use chrono::{Duration, NaiveDate};
use common::*;

const DAY0: &str = "2026-01-05"; // day index 20458; 20458 % 7 == 4: the first run is a DIFF slot

fn day_time(i: i64) -> String {
    let d = NaiveDate::parse_from_str(DAY0, "%Y-%m-%d").unwrap() + Duration::days(i);
    format!("{}T03:00:00Z", d.format("%Y-%m-%d"))
}

fn day_index(i: i64) -> i64 {
    (NaiveDate::parse_from_str(DAY0, "%Y-%m-%d").unwrap()
        - NaiveDate::from_ymd_opt(1970, 1, 1).unwrap())
    .num_days()
        + i
}

struct Env {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    tree: PathBuf,
    gpg: Gpg,
    server: S3Server,
    conf: PathBuf,
}

fn env(bucket: &str, cycle: &str) -> Env {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let tree = dir.join("tree");
    fs::create_dir_all(tree.join("docs")).unwrap();
    fs::write(tree.join("docs/readme.txt"), b"day 0\n").unwrap();
    let gpg = Gpg::new(&dir);
    let server = S3Server::start();
    server.create_bucket(bucket);
    let conf = ConfigBuilder::new(&dir)
        .s3(&server, bucket)
        .gpg(&gpg)
        .cycle("c", |c| c.line(cycle).directory(&tree))
        .build();
    Env {
        _tmp: tmp,
        dir,
        tree,
        gpg,
        server,
        conf,
    }
}

impl Env {
    fn run(&self, extra: &[&str]) -> std::process::Output {
        let mut args = vec!["-c", self.conf.to_str().unwrap()];
        args.extend_from_slice(extra);
        s3nap(&args, &[])
    }

    /// (run id, kind) of every committed run, from `list --json`.
    fn runs(&self) -> Vec<(String, String, bool)> {
        let out = self.run(&["list", "--json"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["run"].as_str().unwrap().to_string(),
                    r["kind"].as_str().unwrap().to_string(),
                    false,
                )
            })
            .collect()
    }

    fn bucket_state(&self, bucket: &str) -> BTreeMap<String, Vec<u8>> {
        self.server
            .keys(bucket)
            .into_iter()
            .map(|k| {
                let data = self.server.get(bucket, &k);
                (k, data)
            })
            .collect()
    }
}

fn dir_state(root: &Path) -> BTreeMap<PathBuf, (u64, i64)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = BTreeMap::new();
    if !root.exists() {
        return out;
    }
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = fs::symlink_metadata(&p).unwrap();
        out.insert(
            p.clone(),
            (m.len(), m.mtime_nsec() + m.mtime() * 1_000_000_000),
        );
        if m.is_dir() {
            for e in fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
    out
}

#[test]
fn sixty_days_of_simple_cycle_keep_exactly_the_predicted_runs_and_each_recovers() {
    let e = env("sixty", "  Fulls 2\n  Diffs 6");
    let snapshots = e.dir.join("snapshots");
    let days = 60;
    for i in 0..days {
        // The day's changes: a new file, a modified one (no deletions: replaying deletions
        // comes with GNU tar dumpdirs).
        fs::write(
            e.tree.join(format!("docs/day-{i}.txt")),
            format!("written on day {i}\n"),
        )
        .unwrap();
        fs::write(e.tree.join("docs/readme.txt"), format!("day {i}\n")).unwrap();
        let copy = snapshots.join(i.to_string());
        fs::create_dir_all(&copy).unwrap();
        let status = Command::new("cp")
            .arg("-a")
            .arg(&e.tree)
            .arg(&copy)
            .status()
            .unwrap();
        assert!(status.success());

        if i == 30 {
            // -t on the day whose run completes slot 6 and so retires the oldest whole chain: it says
            // so, and changes nothing.
            let bucket_before = e.bucket_state("sixty");
            let state_before = dir_state(&e.dir.join("state"));
            let out = e.run(&["-t", "--now", &day_time(i)]);
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(out.status.success(), "{}", stderr(&out));
            assert!(
                text.contains("due: DIFF in slot 6 (backup #20488)"),
                "{text}"
            );
            assert!(text.contains("prune: retire"), "{text}");
            assert!(text.contains("restore points after this run"), "{text}");
            assert_eq!(
                e.bucket_state("sixty"),
                bucket_before,
                "-t changed the bucket"
            );
            assert_eq!(
                dir_state(&e.dir.join("state")),
                state_before,
                "-t changed DiffDir"
            );
        }

        let out = e.run(&["--now", &day_time(i)]);
        assert!(out.status.success(), "day {i}: {}", stderr(&out));
    }

    // The rotation's prediction for the last day: slots hold the last 14 days; the oldest of
    // them keeps its chain back to its FULL (FULL days: day index % 7 == 0, and the first run).
    let last = day_index(days - 1);
    let oldest_holder = last - 13;
    let chain_start = oldest_holder - oldest_holder.rem_euclid(7);
    let want: Vec<(String, String)> = (chain_start..=last)
        .map(|d| {
            let i = d - day_index(0);
            let run = day_time(i).replace(['-', ':'], "");
            let kind = if d % 7 == 0 || i == 0 { "full" } else { "diff" };
            (run, kind.to_string())
        })
        .collect();
    let got: Vec<(String, String)> = e.runs().into_iter().map(|(r, k, _)| (r, k)).collect();
    assert_eq!(got, want);
    assert!(e.server.open_uploads("sixty").is_empty());
    assert_eq!(
        e.server.keys("sixty").len(),
        3 * want.len(),
        "archive, range hashes and manifest of each kept run, no debris left"
    );

    // Every kept restore point recovers the tree of its day.
    for (run, _) in &want {
        let i = (0..days)
            .find(|i| day_time(*i).replace(['-', ':'], "") == *run)
            .unwrap();
        let out = e.run(&[
            "recover",
            e.tree.to_str().unwrap(),
            "--at",
            run,
            "--identity",
            e.gpg.secret.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{run}: {}", stderr(&out));
        let dest = e.dir.join(format!("restored-{i}"));
        untar(&out.stdout, &dest);
        assert_same_tree(
            &snapshots.join(i.to_string()).join("tree"),
            &dest.join(e.tree.strip_prefix("/").unwrap()),
        );
    }
}

#[test]
fn a_done_day_is_skipped_unless_forced_and_forcing_retires_nothing() {
    let e = env("forced", "  Fulls 1\n  Diffs 0");
    let now = day_time(0);
    let out = e.run(&["--now", &now]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = e.run(&["--now", &now]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("already done"), "{}", stderr(&out));
    assert_eq!(e.runs().len(), 1);

    // Forced: a second run of the same backup; the first stays.
    let later = format!("{}T18:00:00Z", &now[..10]);
    let out = e.run(&["-f", "--now", &later]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(e.runs().len(), 2);
    let manifests: Vec<serde_json::Value> = e
        .server
        .keys("forced")
        .iter()
        .filter(|k| k.ends_with(".manifest.json"))
        .map(|k| serde_json::from_slice(&e.server.get("forced", k)).unwrap())
        .collect();
    assert_eq!(manifests.iter().filter(|m| m["forced"] == true).count(), 1);
    assert!(manifests
        .iter()
        .all(|m| m["slot"] == 0 && m["cycle"] == "c"));

    // The next day's run takes the only slot: both runs of day 0 go.
    let out = e.run(&["--now", &day_time(1)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let runs = e.runs();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert!(runs[0].0.starts_with(&day_time(1)[..10].replace('-', "")));
}

#[test]
fn prune_keeps_young_foreign_debris_and_reports_in_test_mode() {
    let e = env("debris", "  Fulls 1\n  Diffs 0");
    let out = e.run(&["--now", &day_time(0)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let set = format!("dir{}", e.tree.display());
    // An archive without a manifest that this configuration did not record: perhaps another
    // configuration's live run, so prune keeps it until it is 7 days old on the server's clock
    // (tests/configurations.rs shows its removal after that on the local store, whose clock can
    // be set back with touch; tests/store_conformance.rs that moto's clock is the one read).
    let orphan = format!("h/{set}/20251201T000000Z.full.tar.zst.gpg");
    e.server.put("debris", &orphan, b"half an archive".to_vec());

    let out = e.run(&["prune", "-t"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(text.contains(&orphan) && text.contains("kept"), "{text}");
    assert!(text.contains("keep"), "{text}");

    let out = e.run(&["prune"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let keys = e.server.keys("debris");
    assert!(keys.contains(&orphan), "{keys:?}");
    assert_eq!(
        keys.len(),
        4,
        "the committed run (archive, range hashes, manifest) stays: {keys:?}"
    );
}

#[test]
fn s3napback_readme_configuration_plans_every_set() {
    let tmp = tempfile::tempdir().unwrap();
    let server = S3Server::start();
    server.create_bucket("dev.davidsoergel.com.backup1");
    let fixture = fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/s3napback-example.conf"),
    )
    .unwrap();
    let included = tmp.path().join("s3napback.conf");
    fs::write(
        &included,
        fixture
            .replace("@DIFFDIR@", &tmp.path().join("diffs").display().to_string())
            .replace("@BUCKET@", "dev.davidsoergel.com.backup1")
            .replace(
                "@KEYFILE@",
                &server.keyfile(tmp.path()).display().to_string(),
            ),
    )
    .unwrap();
    let conf = write_config(
        tmp.path(),
        &format!(
            "Endpoint {}\nHost web1\nInclude {}\n",
            server.endpoint,
            included.display()
        ),
    );
    let out = s3nap(
        &[
            "-c",
            conf.to_str().unwrap(),
            "-t",
            "--now",
            "2026-11-23T03:00:00Z",
        ],
        &[],
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{}\n{text}", stderr(&out));
    let headers: Vec<&str> = text.lines().filter(|l| l.contains(" [cycle ")).collect();
    assert_eq!(headers.len(), 25, "{text}");
    for (set, cycle) in [
        ("dir/etc", "daily-example"),
        ("dir/etc", "decaying-example"),
        ("dir/var", "decaying-example"),
        ("dir/sbin", "weekly-example"),
        ("dir/home/foobar", "-"),
        ("dir", "-"),
        ("mysql/all", "-"),
        ("mysql/mydatabase", "-"),
        ("svndir/home/svn/repos", "-"), // not on this machine: planned as a failure to come
        ("svn/home/svn/repos/myproject", "-"),
    ] {
        assert!(
            headers
                .iter()
                .any(|h| h.starts_with(&format!("{set} [cycle {cycle}]"))),
            "{set} in {cycle} missing:\n{text}"
        );
    }
    assert!(!text.contains("cannot plan"), "{text}");
    // 2026-11-23 is day 20780: the daily cycle (2 fulls of 7) is at position 20780 % 14 = 4,
    // a DIFF slot, but with no earlier run it is a FULL; the weekly cycle is not due.
    assert!(text.contains("dir/sbin [cycle weekly-example]"), "{text}");
    let weekly = text
        .split("dir/sbin [cycle weekly-example]")
        .nth(1)
        .unwrap();
    assert!(
        weekly
            .lines()
            .nth(1)
            .unwrap()
            .contains("skip: not due: runs every 7 day(s)"),
        "{weekly}"
    );
    assert!(
        text.contains("HanoiCycle: every 1 day(s), 5 discs"),
        "{text}"
    );
    assert!(!tmp.path().join("diffs").exists(), "-t created DiffDir");
    assert!(server.keys("dev.davidsoergel.com.backup1").is_empty());
}
