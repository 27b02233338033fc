//! A run killed with SIGKILL at each phase of its commit, against moto through the fault proxy
//! (scripts/fault-proxy.py): the proxy holds the request that marks the phase (`hold`: before
//! it reaches the server, `hold_reply`: after the server acted, before s3nap hears of it), the
//! test kills s3nap there and lets the proxy go on. After every kill: every run `list` shows
//! recovers exactly, a killed run that had not stored its manifest is never listed, the next run
//! succeeds and leaves no debris, and the incremental chain goes on. The phases: (a) at the
//! start, (b) mid-upload, (c) the archive complete but no manifest, (d) the manifest stored but
//! the local state only staged, (e) in retention, between the DELETEs that retire runs (a prune
//! then finishes the retirement). Also a DiffDir that fills up while the state for the next DIFF
//! is saved (a small tmpfs).

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::proxy::FaultProxy;
use common::*;
use serde_json::{json, Value};

/// How long a kill waits for the proxy to hold the request that marks its phase.
const HELD: Duration = Duration::from_secs(60);

// 2026-01-01 is day 20454, a multiple of 14 (and of 2): with `Fulls 1` and `Diffs 13` day 0 is
// a FULL and days 1-13 are DIFFs; with `Diffs 1` the even days are FULLs, the odd ones DIFFs.
fn day_time(day: u32) -> String {
    format!("2026-01-{:02}T03:00:00Z", 1 + day)
}

fn run_id(day: u32) -> String {
    format!("202601{:02}T030000Z", 1 + day)
}

fn write(path: &Path, data: impl AsRef<[u8]>) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, data).unwrap();
}

/// The tree changes before each day's run: a file added, one changed, one removed.
fn change(tree: &Path, day: u32) {
    write(
        &tree.join(format!("days/day{day:02}.txt")),
        format!("day {day}\n"),
    );
    let log = tree.join("log.txt");
    let mut text = fs::read(&log).unwrap_or_default();
    text.extend_from_slice(format!("run of day {day}\n").as_bytes());
    fs::write(&log, text).unwrap();
    if day >= 2 {
        let _ = fs::remove_file(tree.join(format!("days/day{:02}.txt", day - 2)));
    }
}

/// Every file below `root` (recursively).
fn files_below(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            for e in fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        } else if p.exists() {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// What a run killed in the middle may leave in DiffDir and a committed run never does: a
/// staged state, a temporary file of an interrupted write, a record of an upload in flight.
fn leftovers(diff_dir: &Path) -> Vec<PathBuf> {
    files_below(diff_dir)
        .into_iter()
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.ends_with(".staged")
                || (name.starts_with('.') && name.contains(".tmp-"))
                || p.parent().unwrap().ends_with("uploads")
        })
        .collect()
}

/// The manifest key that commits `key` (an archive, range hashes, or a manifest itself).
fn manifest_of(key: &str) -> String {
    let (dir, file) = key.rsplit_once('/').unwrap();
    let mut parts = file.splitn(3, '.');
    let (run, kind) = (parts.next().unwrap(), parts.next().unwrap());
    format!("{dir}/{run}.{kind}.manifest.json")
}

/// The log of the run after the run of `killed_day` was killed says it finished that run's
/// clean-up, and whether it removed stored objects of it.
fn assert_cleaned_up(log: &str, killed_day: u32, removed: bool) {
    let run = run_id(killed_day);
    assert!(
        log.lines().any(|l| l.contains("finished the clean-up of")
            && l.contains(&run)
            && l.contains("left by an interrupted run")),
        "{log}"
    );
    let removal = log
        .lines()
        .any(|l| l.contains("removed") && l.contains(&run) && l.contains("(no manifest)"));
    assert_eq!(removal, removed, "removed objects of {run}: {log}");
}

/// SIGKILL, not a clean stop.
fn kill_9(pid: u32) {
    let status = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -KILL {pid}");
}

struct Env {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    tree: PathBuf,
    gpg: Gpg,
    server: S3Server,
    proxy: FaultProxy,
    conf: PathBuf,
    bucket: &'static str,
    /// The tree as each run (by run id) saw it, killed runs included.
    copies: BTreeMap<String, PathBuf>,
}

impl Env {
    fn new(bucket: &'static str, cycle: &str) -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let tree = dir.join("tree");
        write(
            &tree.join("docs/readme.txt"),
            "a tree that changes every day\n",
        );
        let gpg = Gpg::new(&dir);
        let server = S3Server::start();
        server.create_bucket(bucket);
        let proxy = FaultProxy::start(&server);
        // Timeout well above the moment between the held event and the kill: a held request
        // must not be given up and sent again before the run is killed.
        let conf = ConfigBuilder::new(&dir)
            .s3_via(&server, &proxy, bucket)
            .gpg(&gpg)
            .line("ChunkSize 5MiB\nTimeout 10\nRetries 1\nParallelUploads 2")
            .line(cycle)
            .directory(&tree)
            .build();
        Env {
            _tmp: tmp,
            dir,
            tree,
            gpg,
            server,
            proxy,
            conf,
            bucket,
            copies: BTreeMap::new(),
        }
    }

    fn diff_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    fn s3nap(&self, extra: &[&str]) -> Output {
        let mut args = vec!["-c", self.conf.to_str().unwrap()];
        args.extend_from_slice(extra);
        s3nap(&args, &[])
    }

    /// Keeps a copy of the tree as the run of `day` sees it.
    fn copy_tree(&mut self, day: u32) {
        let copy = self.dir.join(format!("copy-{}", run_id(day)));
        let status = Command::new("cp")
            .arg("-a")
            .arg(&self.tree)
            .arg(&copy)
            .status()
            .unwrap();
        assert!(status.success(), "cp -a");
        self.copies.insert(run_id(day), copy);
    }

    /// The run of `day`, which must commit without warnings: its `--json` outcome.
    fn backup(&mut self, day: u32, kind: &str) -> Value {
        self.backup_logged(day, kind).0
    }

    /// [`Env::backup`], with what the run logged.
    fn backup_logged(&mut self, day: u32, kind: &str) -> (Value, String) {
        self.copy_tree(day);
        let out = self.s3nap(&["--now", &day_time(day), "--json"]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(0), "day {day}: {err}");
        let o: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(o["outcome"], "committed", "day {day}: {o}\n{err}");
        assert_eq!(o["run"], run_id(day), "{o}");
        assert_eq!(o["kind"], kind, "day {day}: {o}\n{err}");
        assert_eq!(o["warnings"], 0, "day {day}: {o}\n{err}");
        assert_eq!(o["problems"], json!([]), "day {day}: {o}\n{err}");
        (o, err)
    }

    /// The manifest of the run of `day`, as stored.
    fn manifest(&self, day: u32, kind: &str) -> Value {
        let key = self
            .server
            .keys(self.bucket)
            .into_iter()
            .find(|k| k.ends_with(&format!("/{}.{kind}.manifest.json", run_id(day))))
            .unwrap_or_else(|| panic!("no {kind} manifest of day {day}"));
        serde_json::from_slice(&self.server.get(self.bucket, &key)).unwrap()
    }

    /// Runs s3nap with `extra`, waits until the proxy holds the request `rule` matches, kills
    /// s3nap there (SIGKILL), then lets the proxy go on without rules. Returns the held
    /// request's event.
    fn kill_when_held(&self, extra: &[&str], rule: Value) -> Value {
        self.proxy.add(rule);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_s3nap"));
        cmd.arg("-c")
            .arg(&self.conf)
            .args(extra)
            .stdin(Stdio::null());
        let running = Running::spawn(&mut cmd);
        let held = self.proxy.wait_held(HELD);
        kill_9(running.id());
        let out = running.wait(DEADLINE);
        self.proxy.clear();
        assert_eq!(
            out.status.signal(),
            Some(9),
            "the run should have been killed at {held}: {:?}\n{}",
            out.status,
            stderr(&out)
        );
        held
    }

    /// The run of `day`, killed when the proxy holds the request `rule` matches.
    fn killed_run(&mut self, day: u32, rule: Value) -> Value {
        self.copy_tree(day);
        self.kill_when_held(&["--now", &day_time(day)], rule)
    }

    /// The SHA-256 of every stored object, by key.
    fn objects(&self) -> BTreeMap<String, String> {
        use sha2::{Digest, Sha256};
        self.server
            .keys(self.bucket)
            .into_iter()
            .map(|k| {
                let digest = hex::encode(Sha256::digest(self.server.get(self.bucket, &k)));
                (k, digest)
            })
            .collect()
    }

    /// (run, kind) of every run `list --json` shows.
    fn listed(&self) -> Vec<(String, String)> {
        let out = self.s3nap(&["list", "--json"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let mut runs: Vec<(String, String)> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["run"].as_str().unwrap().to_string(),
                    r["kind"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        runs.sort();
        runs
    }

    /// `list` shows exactly the runs of `days` with their kinds.
    fn assert_listed(&self, want: &[(u32, &str)]) {
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(day, kind)| (run_id(*day), kind.to_string()))
            .collect();
        assert_eq!(self.listed(), want, "the runs list shows");
    }

    /// `s3nap recover --at RUN | tar -x -G` (the FULL, then each DIFF up to the run) gives the
    /// tree as the run saw it.
    /// The run of `day` after the run of `killed` was killed: a DIFF on the run of `base`
    /// that finished the killed run's clean-up (removing stored objects of it when
    /// `removed`), leaves no debris, and recovers. Returns its `--json` outcome.
    fn next_run_cleans_up(&mut self, day: u32, killed: u32, base: u32, removed: bool) -> Value {
        change(&self.tree, day);
        let (o, err) = self.backup_logged(day, "diff");
        assert_cleaned_up(&err, killed, removed);
        assert_eq!(self.manifest(day, "diff")["base_run"], run_id(base), "{o}");
        self.assert_no_debris();
        self.assert_recovers(&run_id(day));
        o
    }

    fn assert_recovers(&self, run: &str) {
        if let Err(e) = self.try_recover(run) {
            panic!("{e}");
        }
    }

    /// [`Env::assert_recovers`], except that a recovery that fails is returned as an error
    /// (a recovered tree that differs still fails the test).
    fn try_recover(&self, run: &str) -> Result<(), String> {
        let out = self.s3nap(&[
            "recover",
            self.tree.to_str().unwrap(),
            "--at",
            run,
            "--identity",
            self.gpg.secret.to_str().unwrap(),
        ]);
        if !out.status.success() {
            return Err(format!("recover {run}: {}", stderr(&out)));
        }
        let dest = self.dir.join(format!("recovered-{run}"));
        let _ = fs::remove_dir_all(&dest);
        untar_incremental(&out.stdout, &dest);
        assert_same_tree(
            &self.copies[run],
            &dest.join(self.tree.strip_prefix("/").unwrap()),
        );
        fs::remove_dir_all(&dest).unwrap();
        Ok(())
    }

    fn assert_every_listed_run_recovers(&self) {
        for (run, _) in self.listed() {
            self.assert_recovers(&run);
        }
    }

    /// No open multipart upload, no object without its manifest, nothing in DiffDir that a
    /// committed run does not leave.
    fn assert_no_debris(&self) {
        assert_eq!(
            self.server.open_uploads(self.bucket),
            Vec::<String>::new(),
            "multipart uploads left open"
        );
        let keys = self.server.keys(self.bucket);
        for key in &keys {
            assert!(
                keys.contains(&manifest_of(key)),
                "{key} is stored without its manifest: {keys:#?}"
            );
        }
        assert_eq!(
            leftovers(&self.diff_dir()),
            Vec::<PathBuf>::new(),
            "left in DiffDir"
        );
    }
}

#[test]
fn a_run_killed_before_its_manifest_is_never_listed_and_the_next_run_cleans_up_and_goes_on() {
    let mut e = Env::new("before", "Fulls 1\nDiffs 13");
    let diff_dir = e.diff_dir();
    change(&e.tree, 0);
    e.backup(0, "full");
    change(&e.tree, 1);
    e.backup(1, "diff");

    // (a) At the start: its first listing held, nothing of the run exists yet.
    let before = e.server.keys(e.bucket);
    change(&e.tree, 2);
    // (Its first listing: before it, only GetBucketVersioning, which changes nothing.)
    let held = e.killed_run(
        2,
        json!({"method": "GET", "target": "list-type=2", "action": "hold"}),
    );
    assert!(
        held["target"].as_str().unwrap().contains("list-type=2"),
        "{held}"
    );
    assert_eq!(e.server.keys(e.bucket), before);
    assert_eq!(leftovers(&diff_dir), Vec::<PathBuf>::new());
    e.assert_listed(&[(0, "full"), (1, "diff")]);
    e.assert_every_listed_run_recovers();
    change(&e.tree, 3);
    let o = e.backup(3, "diff");
    assert_eq!(e.manifest(3, "diff")["base_run"], run_id(1), "{o}");
    e.assert_no_debris();
    e.assert_recovers(&run_id(3));

    // (b) Mid-upload: part 2 of 3 held (11 MiB that do not compress, 5 MiB parts).
    write(&e.tree.join("big.bin"), random_bytes(11 << 20, 4));
    change(&e.tree, 4);
    let held = e.killed_run(
        4,
        json!({"method": "PUT", "target": "partNumber=2(&|$)", "action": "hold"}),
    );
    assert!(
        held["target"].as_str().unwrap().contains(&run_id(4)),
        "{held}"
    );
    let open = e.server.open_uploads(e.bucket);
    assert!(
        open.len() == 1 && open[0].contains(&run_id(4)),
        "the killed run's upload is open: {open:?}"
    );
    assert_eq!(leftovers(&diff_dir).len(), 1, "its upload record");
    assert!(
        e.server
            .keys(e.bucket)
            .iter()
            .all(|k| !k.contains(&run_id(4))),
        "nothing of the killed run is stored"
    );
    e.assert_listed(&[(0, "full"), (1, "diff"), (3, "diff")]);
    e.assert_every_listed_run_recovers();
    let o = e.next_run_cleans_up(5, 4, 3, false);
    assert!(
        o["bytes_read"].as_u64().unwrap() > 11 << 20,
        "the DIFF carries what the killed run did not store: {o}"
    );

    // (c) The archive complete (the server completed it, s3nap never heard), no manifest yet.
    change(&e.tree, 6);
    let held = e.killed_run(
        6,
        json!({"method": "POST", "target": "uploadId=", "action": "hold_reply"}),
    );
    assert!(
        held["target"].as_str().unwrap().contains(&run_id(6)),
        "{held}"
    );
    let keys = e.server.keys(e.bucket);
    assert!(
        keys.iter()
            .any(|k| k.contains(&run_id(6)) && k.ends_with(".tar.zst.gpg")),
        "the completed archive is stored: {keys:#?}"
    );
    assert!(
        !keys
            .iter()
            .any(|k| k.contains(&run_id(6)) && k.ends_with(".manifest.json")),
        "{keys:#?}"
    );
    e.assert_listed(&[(0, "full"), (1, "diff"), (3, "diff"), (5, "diff")]);
    e.assert_every_listed_run_recovers();
    e.next_run_cleans_up(7, 6, 5, true);

    // (c') Archive and range hashes stored, its state staged, the manifest PUT held (and never
    // sent: the client is gone when it is released).
    change(&e.tree, 8);
    let held = e.killed_run(
        8,
        json!({"method": "PUT", "target": "\\.manifest\\.json", "action": "hold"}),
    );
    assert!(
        held["target"].as_str().unwrap().contains(&run_id(8)),
        "{held}"
    );
    let keys = e.server.keys(e.bucket);
    let of_run: Vec<&String> = keys.iter().filter(|k| k.contains(&run_id(8))).collect();
    assert_eq!(
        of_run.len(),
        2,
        "archive and range hashes, no manifest: {of_run:?}"
    );
    assert!(
        leftovers(&diff_dir)
            .iter()
            .any(|p| p.to_string_lossy().ends_with(".state.staged")),
        "the killed run staged its state: {:?}",
        leftovers(&diff_dir)
    );
    e.assert_listed(&[
        (0, "full"),
        (1, "diff"),
        (3, "diff"),
        (5, "diff"),
        (7, "diff"),
    ]);
    e.assert_every_listed_run_recovers();
    e.next_run_cleans_up(9, 8, 7, true);
    change(&e.tree, 10);
    e.backup(10, "diff");
    e.assert_no_debris();
    e.assert_listed(&[
        (0, "full"),
        (1, "diff"),
        (3, "diff"),
        (5, "diff"),
        (7, "diff"),
        (9, "diff"),
        (10, "diff"),
    ]);
    e.assert_every_listed_run_recovers();
}

#[test]
fn a_run_killed_after_its_manifest_is_listed_and_the_next_run_is_a_diff_from_its_staged_state() {
    let mut e = Env::new("after", "Fulls 1\nDiffs 13");
    let diff_dir = e.diff_dir();
    write(&e.tree.join("big.bin"), random_bytes(11 << 20, 5));
    change(&e.tree, 0);
    e.backup(0, "full");
    change(&e.tree, 1);
    e.backup(1, "diff");

    // (d) The manifest stored (the server has it, s3nap never heard), the state only staged.
    change(&e.tree, 2);
    let held = e.killed_run(
        2,
        json!({"method": "PUT", "target": "\\.manifest\\.json", "action": "hold_reply"}),
    );
    assert!(
        held["target"].as_str().unwrap().contains(&run_id(2)),
        "{held}"
    );
    let left = leftovers(&diff_dir);
    assert!(
        left.iter()
            .any(|p| p.to_string_lossy().ends_with(".state.staged")),
        "the killed run's state is staged, not promoted: {left:?}"
    );
    e.assert_listed(&[(0, "full"), (1, "diff"), (2, "diff")]);
    e.assert_every_listed_run_recovers();

    // The next run is a DIFF on the killed run (exit 0, no FULL fallback warning).
    change(&e.tree, 3);
    let (o, err) = e.backup_logged(3, "diff");
    // Its record is finished as what it is: a committed run, nothing to clean up.
    assert!(
        err.lines().any(|l| l.contains(&run_id(2))
            && l.contains("of an interrupted run is committed after all: nothing to clean up")),
        "{err}"
    );
    assert!(!err.contains("removed"), "{err}");
    assert_eq!(e.manifest(3, "diff")["base_run"], run_id(2), "{o}");
    assert!(
        o["bytes_read"].as_u64().unwrap() < 1 << 20,
        "a DIFF of a few small changes: {o}"
    );
    e.assert_no_debris();
    change(&e.tree, 4);
    fs::remove_file(e.tree.join("big.bin")).unwrap();
    e.backup(4, "diff");
    assert_eq!(e.manifest(4, "diff")["base_run"], run_id(3));
    e.assert_no_debris();
    e.assert_listed(&[
        (0, "full"),
        (1, "diff"),
        (2, "diff"),
        (3, "diff"),
        (4, "diff"),
    ]);
    e.assert_every_listed_run_recovers();
}

/// Days 0-2 of a `Fulls 1`, `Diffs 1` cycle (FULL, DIFF, FULL), then day 3's DIFF, which takes
/// slot 1 over: its retention retires day 1 and day 0 (day 1's base), and the proxy holds the
/// DELETE `rule` matches, where the run is killed (committed, before retention ends). Returns
/// the SHA-256 of every object of the four runs by key, as stored before the kill, and the held
/// request's event.
fn retirement_killed(e: &mut Env, rule: Value) -> (BTreeMap<String, String>, Value) {
    for (day, kind) in [(0, "full"), (1, "diff"), (2, "full")] {
        change(&e.tree, day);
        e.backup(day, kind);
    }
    let mut stored = e.objects();
    change(&e.tree, 3);
    let held = e.killed_run(3, rule);
    assert_eq!(held["method"], "DELETE", "{held}");
    stored.extend(objects_of(&e.objects(), &[3]));
    assert_eq!(
        stored.keys().filter(|k| k.contains(&run_id(3))).count(),
        3,
        "day 3's run committed before its retention: {:#?}",
        stored.keys()
    );
    (stored, held)
}

/// The objects of `stored` whose keys hold the run id of one of `days`.
fn objects_of(stored: &BTreeMap<String, String>, days: &[u32]) -> BTreeMap<String, String> {
    stored
        .iter()
        .filter(|(k, _)| days.iter().any(|d| k.contains(&run_id(*d))))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[test]
fn a_retirement_killed_before_its_first_delete_is_finished_by_the_next_prune() {
    let mut e = Env::new("retire", "Fulls 1\nDiffs 1");
    // (e) Killed in its own retention, at the first DELETE: nothing is deleted yet.
    let (stored, held) = retirement_killed(&mut e, json!({"method": "DELETE", "action": "hold"}));
    let target = held["target"].as_str().unwrap();
    assert!(
        target.ends_with("manifest.json?x-id=DeleteObject") && target.contains(&run_id(1)),
        "a retirement deletes the newest retired run's manifest first: {held}"
    );
    assert_eq!(
        e.server.keys(e.bucket),
        stored.keys().cloned().collect::<Vec<_>>(),
        "the held DELETE never reached the server"
    );
    e.assert_listed(&[(0, "full"), (1, "diff"), (2, "full"), (3, "diff")]);
    e.assert_every_listed_run_recovers();
    // In DiffDir, only the record of the retirement under way (so that the next run or prune
    // finishes it even once the manifest is gone), for the newest retired run: it goes first.
    let left = leftovers(&e.diff_dir());
    assert_eq!(left.len(), 1, "{left:?}");
    let record = fs::read_to_string(&left[0]).unwrap();
    assert!(
        record.contains("\"upload_id\": \"\"") && record.contains(&run_id(1)),
        "{record}"
    );

    // A prune finishes the retirement: every object of days 0 and 1 gone, days 2 and 3 whole.
    let out = e.s3nap(&["prune"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    for day in [0, 1] {
        assert!(text.contains(&format!("retired {}", run_id(day))), "{text}");
    }
    assert_eq!(e.objects(), objects_of(&stored, &[2, 3]), "after the prune");
    e.assert_listed(&[(2, "full"), (3, "diff")]);
    e.assert_every_listed_run_recovers();

    // The next runs go on with the chain.
    change(&e.tree, 4);
    e.backup(4, "full");
    e.assert_no_debris();
    change(&e.tree, 5);
    let o = e.backup(5, "diff");
    let mut retired: Vec<&str> = o["retired"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    retired.sort();
    assert_eq!(retired, [run_id(2), run_id(3)], "{o}");
    e.assert_no_debris();
    e.assert_listed(&[(4, "full"), (5, "diff")]);
    e.assert_every_listed_run_recovers();
}

#[test]
fn a_prune_killed_mid_retirement_leaves_no_broken_run_and_the_next_prune_finishes_it() {
    let mut e = Env::new("halfway", "Fulls 1\nDiffs 1");
    // Day 3's own retention killed at its first DELETE: days 0 and 1 are still to be retired.
    let (stored, _) = retirement_killed(&mut e, json!({"method": "DELETE", "action": "hold"}));
    e.assert_listed(&[(0, "full"), (1, "diff"), (2, "full"), (3, "diff")]);

    // (e) `s3nap prune` killed at the second DELETE of the retirement: one object is gone.
    let held = e.kill_when_held(
        &["prune"],
        json!({"method": "DELETE", "nth": 2, "action": "hold"}),
    );
    let gone: Vec<&String> = stored
        .keys()
        .filter(|k| !e.server.keys(e.bucket).contains(k))
        .collect();
    assert_eq!(
        gone.len(),
        1,
        "one DELETE went through before the kill at {held}"
    );
    // Whatever `list` shows recovers: the retirement never leaves a run without its chain.
    let mut problems = Vec::new();
    for (run, kind) in e.listed() {
        if let Err(error) = e.try_recover(&run) {
            problems.push(format!(
                "after the kill, `list` shows the {kind} run {run}, which does not recover: \
                 {error}"
            ));
        }
    }

    // The next prune finishes the retirement: nothing of days 0 and 1 left, days 2 and 3 whole.
    let out = e.s3nap(&["prune"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    let left: Vec<String> = e.server.keys(e.bucket);
    let retired_left: Vec<&String> = left
        .iter()
        .filter(|k| k.contains(&run_id(0)) || k.contains(&run_id(1)))
        .collect();
    if !retired_left.is_empty() {
        problems.push(format!(
            "after a second prune, objects of the retired runs are still stored: \
             {retired_left:#?}\nprune said:\n{text}"
        ));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
    assert_eq!(
        e.objects(),
        objects_of(&stored, &[2, 3]),
        "after the second prune"
    );
    e.assert_listed(&[(2, "full"), (3, "diff")]);
    e.assert_every_listed_run_recovers();
    change(&e.tree, 4);
    e.backup(4, "full");
    e.assert_no_debris();
    e.assert_recovers(&run_id(4));
}

/// A small tmpfs, unmounted when dropped (also when the test fails).
struct Tmpfs {
    at: PathBuf,
}

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "s3nap-test"])
            .arg(at)
            .output()
            .unwrap_or_else(|e| {
                panic!("this test needs mount(8) to make a small DiffDir (a tmpfs): {e}")
            });
        assert!(
            out.status.success(),
            "this test needs `mount -t tmpfs` (root, CAP_SYS_ADMIN) to make a small DiffDir \
             fill up, and it failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs {
            at: at.to_path_buf(),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let done = Command::new("umount")
            .arg(&self.at)
            .status()
            .is_ok_and(|s| s.success());
        if !done {
            // Busy (a process of a failed test still in it): detach it now, gone when free.
            let _ = Command::new("umount").arg("-l").arg(&self.at).status();
        }
    }
}

/// Fills the file system of `path` with it, then frees `leave` bytes of it again.
fn ballast(path: &Path, leave: u64) {
    use std::io::Write;
    let mut f = fs::File::create(path).unwrap();
    let chunk = vec![0x5a_u8; 64 << 10];
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("writing {}: {e}", path.display()),
        }
    }
    let len = f.metadata().unwrap().len();
    assert!(len > leave, "{} holds only {len} bytes", path.display());
    f.set_len(len - leave).unwrap();
}

#[test]
fn a_diff_dir_that_fills_up_while_the_state_is_saved_loses_nothing_committed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // Dropped before `tmp` (declared after it): unmounted before the directory is removed.
    let diff_dir = dir.join("diffdir");
    let _mounted = Tmpfs::mount(&diff_dir, "1m");
    let tree = dir.join("tree");
    // Long names make a large state (each path is stored in hex): ~600 entries of ~300 bytes.
    for i in 0..600 {
        let name = format!("d{}/{}-{i:04}", i % 6, "long-name-".repeat(12));
        write(&tree.join(name), format!("{i}\n"));
    }
    // A local store: the fault here is DiffDir's, the store is not involved.
    let conf = ConfigBuilder::new(dir)
        .diff_dir(&diff_dir)
        .line("Fulls 1\nDiffs 13")
        .directory(&tree)
        .build();
    let c = conf.to_str().unwrap();
    let mut copies = BTreeMap::new();
    let mut backup = |day: u32| -> (Output, Value) {
        change(&tree, day);
        let copy = dir.join(format!("copy{day}"));
        let status = Command::new("cp")
            .arg("-a")
            .arg(&tree)
            .arg(&copy)
            .status()
            .unwrap();
        assert!(status.success());
        copies.insert(run_id(day), copy);
        let out = s3nap(&["-c", c, "--now", &day_time(day), "--json"], &[]);
        let o: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("day {day}: {e}: {}", stderr(&out)));
        assert_eq!(o["run"], run_id(day), "day {day}: {o}\n{}", stderr(&out));
        // Every committed run recovers exactly, from the FULL through each DIFF.
        let listed = s3nap(&["-c", c, "list", "--json"], &[]);
        assert!(listed.status.success(), "{}", stderr(&listed));
        let runs: Vec<Value> = serde_json::from_slice(&listed.stdout).unwrap();
        let runs: Vec<String> = runs
            .iter()
            .map(|r| r["run"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(runs, (0..=day).map(run_id).collect::<Vec<_>>(), "day {day}");
        for run in runs {
            let out = s3nap(
                &["-c", c, "recover", tree.to_str().unwrap(), "--at", &run],
                &[],
            );
            assert!(out.status.success(), "recover {run}: {}", stderr(&out));
            let dest = dir.join(format!("recovered-{run}"));
            let _ = fs::remove_dir_all(&dest);
            untar_incremental(&out.stdout, &dest);
            assert_same_tree(&copies[&run], &dest.join(tree.strip_prefix("/").unwrap()));
        }
        (out, o)
    };

    let (out, o) = backup(0);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(o["kind"], "full");
    let states = find_files(&diff_dir, ".state");
    assert_eq!(states.len(), 1, "{states:?}");
    let state = &states[0];
    let saved = fs::read(state).unwrap();
    assert!(
        saved.len() > 100 << 10,
        "the state must be large enough not to fit: {} bytes",
        saved.len()
    );

    // DiffDir full but for 16 KiB: room for the upload record, not for the state.
    let ballast_file = diff_dir.join("ballast");
    ballast(&ballast_file, 16 << 10);
    let (out, o) = backup(1);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(
        (o["outcome"].as_str(), o["kind"].as_str()),
        (Some("warnings"), Some("diff")),
        "{o}"
    );
    let problems = o["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{o}");
    let problem = problems[0].as_str().unwrap();
    for text in [problem, err.as_str()] {
        assert!(
            text.contains(&state.display().to_string())
                && text.contains("the next run will be a FULL"),
            "names the state file and what follows: {text}"
        );
    }
    assert_eq!(fs::read(state).unwrap(), saved, "day 0's state is kept");
    assert_eq!(
        leftovers(&diff_dir),
        Vec::<PathBuf>::new(),
        "a partial state or record left in DiffDir"
    );

    // Room again: the next run cannot be a DIFF on day 1 (its state was never saved).
    fs::remove_file(&ballast_file).unwrap();
    let (out, o) = backup(2);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(
        (o["kind"].as_str(), o["warnings"].as_u64()),
        (Some("full"), Some(1)),
        "{o}"
    );
    assert!(
        err.contains(&state.display().to_string())
            && err.contains("this run is a FULL instead of a DIFF"),
        "{err}"
    );
    assert_eq!(leftovers(&diff_dir), Vec::<PathBuf>::new());
    let (out, o) = backup(3);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        (o["kind"].as_str(), o["warnings"].as_u64()),
        (Some("diff"), Some(0)),
        "{o}"
    );
    assert_eq!(leftovers(&diff_dir), Vec::<PathBuf>::new());
}
