//! The fault matrix, HTTP part (issue 13): s3nap against moto through the fault-injecting proxy
//! (scripts/fault-proxy.py). Server errors, resets and timeouts are retried and the run
//! commits; retries that run out fail the run and leave nothing behind; replies lost after the
//! server acted are found out and the run (or the prune) still counts; downloads that arrive
//! damaged are read again, and when they stay damaged the output is never a wrong byte.
//!
//! Every fault rule is checked to have hit (`FaultProxy::hits_of`), so no test passes because
//! its rule never matched. The requests as the SDK sends them (see a `hits` log):
//! `POST KEY?uploads`, `PUT KEY?x-id=UploadPart&partNumber=N&uploadId=U`, `POST KEY?uploadId=U`,
//! `PUT KEY?x-id=PutObject`, `DELETE KEY?x-id=DeleteObject`, `GET KEY?x-id=GetObject` (ranges in
//! a header), `GET /BUCKET/?list-type=2&prefix=P`, `GET /BUCKET/?uploads&prefix=P`.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;
use std::process::Output;

use common::proxy::FaultProxy;
use common::*;
use serde_json::{json, Value};

const BUCKET: &str = "faults";

/// One tree, one GnuPG key, one moto server behind one proxy, one configuration.
struct Env {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    tree: PathBuf,
    gpg: Gpg,
    server: S3Server,
    proxy: FaultProxy,
    conf: PathBuf,
}

/// `random_mib` MiB of incompressible data (5 MiB parts: three parts for 11 MiB; 8 MiB
/// ranges: two ranges) and a small file, backed up with `settings` (global lines) and the
/// cycle `cycle` (none: the default rotation, in which 2026-01-01 is a FULL day and the next
/// days DIFFs).
fn env(random_mib: usize, settings: &str, cycle: Option<&str>) -> Env {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let tree = dir.join("tree");
    fs::create_dir_all(tree.join("sub")).unwrap();
    fs::write(tree.join("sub/small.txt"), b"small\n").unwrap();
    fs::write(tree.join("data.bin"), random_bytes(random_mib << 20, 13)).unwrap();
    let gpg = Gpg::new(&dir);
    let server = S3Server::start();
    server.create_bucket(BUCKET);
    let proxy = FaultProxy::start(&server);
    let builder = ConfigBuilder::new(&dir)
        .s3_via(&server, &proxy, BUCKET)
        .gpg(&gpg)
        .line(format!("ChunkSize 5MiB\n{settings}"));
    let conf = match cycle {
        Some(cycle) => builder.cycle("c", |c| c.line(cycle).directory(&tree)),
        None => builder.directory(&tree),
    }
    .build();
    Env {
        _tmp: tmp,
        dir,
        tree,
        gpg,
        server,
        proxy,
        conf,
    }
}

/// `--now` of day `day` of January 2026, and the id of the run made then.
fn now(day: u32) -> String {
    format!("2026-01-{day:02}T03:00:00Z")
}

fn run_id(day: u32) -> String {
    format!("202601{day:02}T030000Z")
}

impl Env {
    /// s3nap with this configuration (killed and failing the test after `DEADLINE`).
    fn s3nap(&self, args: &[&str]) -> Output {
        let mut all = vec!["-c", self.conf.to_str().unwrap()];
        all.extend_from_slice(args);
        s3nap(&all, &[])
    }

    /// The backup run of day `day`, with `--json`.
    fn backup(&self, day: u32) -> Output {
        self.s3nap(&["--now", &now(day), "--json"])
    }

    fn set(&self) -> String {
        format!("dir{}", self.tree.display())
    }

    /// The keys of run `run` of kind `kind`: archive, range hashes, manifest.
    fn run_keys(&self, run: &str, kind: &str) -> BTreeSet<String> {
        let base = format!("h/{}/{run}.{kind}", self.set());
        [".tar.zst.gpg", ".sha256", ".manifest.json"]
            .iter()
            .map(|ext| format!("{base}{ext}"))
            .collect()
    }

    fn keys(&self) -> BTreeSet<String> {
        self.server.keys(BUCKET).into_iter().collect()
    }

    /// The committed runs, (run, kind), from `list --json`.
    fn listed(&self) -> Vec<(String, String)> {
        let out = self.s3nap(&["list", "--json"]);
        assert!(out.status.success(), "list: {}", stderr(&out));
        let runs: Value = serde_json::from_slice(&out.stdout).unwrap();
        runs.as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["run"].as_str().unwrap().into(),
                    r["kind"].as_str().unwrap().into(),
                )
            })
            .collect()
    }

    fn recover(&self, at: &str) -> Output {
        self.s3nap(&[
            "recover",
            &self.set(),
            "--at",
            at,
            "--identity",
            self.gpg.secret.to_str().unwrap(),
        ])
    }

    /// Recovers the chain current at `at` into a fresh directory (`tar -x -G`) and compares it
    /// with the tree as it is now.
    fn assert_recovers(&self, at: &str) {
        let out = self.recover(at);
        assert!(out.status.success(), "recover --at {at}: {}", stderr(&out));
        let dest = self.dir.join(format!("restored-{at}"));
        untar_incremental(&out.stdout, &dest);
        assert_same_tree(&self.tree, &dest.join(self.tree.strip_prefix("/").unwrap()));
    }

    /// Asserts that the rule `rule` hit at least one request.
    fn assert_hit(&self, rule: u64, what: &str) {
        assert!(
            self.proxy.hits_of(rule) > 0,
            "the fault ({what}) was never injected"
        );
    }
}

/// The one object `--json` printed for the run's only set.
fn outcome(out: &Output) -> Value {
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let o: Value = serde_json::from_str(lines.next().expect("a JSON outcome")).unwrap();
    assert!(lines.next().is_none(), "one set, one outcome: {text}");
    o
}

/// Asserts that s3nap warned about `call` (e.g. `"put s3://"`) failing on a lost connection and
/// retried it.
fn assert_retried(out: &Output, call: &str) {
    let err = stderr(out);
    assert!(
        err.lines().any(|l| l.contains(call)
            && l.contains("Connection reset by peer")
            && l.contains("retrying in")),
        "no retried {call}: {err}"
    );
}

/// Server errors on each kind of request, a connection reset in the middle of a part's body
/// and a part whose answer comes after `Timeout`: each is retried, the run commits, stores
/// exactly its three objects, leaves no upload open, and recovers exactly.
#[test]
fn server_errors_resets_and_timeouts_are_retried_and_the_run_commits() {
    // FULLs only, seven slots: every day's run is a FULL and stays.
    let e = env(
        11,
        "Timeout 2\nRetries 3\nParallelUploads 2",
        Some("Fulls 7\nDiffs 0"),
    );
    // Each fault: its rule, and what s3nap's warning about it says (the call, the failure).
    struct Fault {
        rule: Value,
        call: &'static str,
        says: &'static str,
    }
    let status = |method: &str, target: &str, code: u16, call, says| Fault {
        rule: json!({"method": method, "target": target, "action": "status", "code": code}),
        call,
        says,
    };
    let rounds: Vec<Vec<Fault>> = [
        (500, "InternalError (HTTP 500)"),
        (503, "SlowDown (HTTP 503)"),
    ]
    .into_iter()
    .map(|(code, says)| {
        vec![
            status("GET", r"\?list-type=2&", code, "list s3://", says),
            status("POST", r"\?uploads$", code, "create upload s3://", says),
            status(
                "PUT",
                "x-id=UploadPart&partNumber=1&",
                code,
                "upload part s3://",
                says,
            ),
            status(
                "PUT",
                r"\.manifest\.json\?x-id=PutObject",
                code,
                "put s3://",
                says,
            ),
        ]
    })
    .chain([vec![
        Fault {
            rule: json!({"method": "PUT", "target": "x-id=UploadPart&partNumber=2&",
                             "action": "reset"}),
            call: "upload part s3://",
            says: "Connection reset by peer",
        },
        Fault {
            rule: json!({"method": "PUT", "target": "x-id=UploadPart&partNumber=3&",
                             "action": "delay", "seconds": 4}),
            call: "upload part s3://",
            says: "read timeout occurred after 2s",
        },
    ]])
    .collect();

    for (i, faults) in rounds.into_iter().enumerate() {
        let day = i as u32 + 1;
        let before = e.keys();
        let rules: Vec<(u64, &Fault)> = faults
            .iter()
            .map(|f| (e.proxy.add(f.rule.clone()), f))
            .collect();
        let out = e.backup(day);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(0), "day {day}: {err}");
        assert_eq!(outcome(&out)["outcome"], "committed", "day {day}");
        for (rule, fault) in &rules {
            e.assert_hit(*rule, &fault.rule.to_string());
            assert!(
                err.lines().any(|l| l.contains(fault.call)
                    && l.contains(fault.says)
                    && l.contains("retrying in")),
                "day {day}: no retried {} ... {}: {err}",
                fault.call,
                fault.says
            );
        }
        e.proxy.clear();

        let mut want = before.clone();
        want.extend(e.run_keys(&run_id(day), "full"));
        assert_eq!(
            e.keys(),
            want,
            "day {day}: the run's three objects, nothing else"
        );
        assert_eq!(
            e.server.open_uploads(BUCKET),
            Vec::<String>::new(),
            "day {day}"
        );
        e.assert_recovers(&run_id(day));
    }
}

/// A part that fails on every attempt: the run gives up (exit 2) naming the archive, commits
/// nothing and leaves no upload open; once the server behaves, the next run commits and
/// leaves no debris.
#[test]
fn retries_exhausted_fail_the_run_and_the_next_run_commits_cleanly() {
    let e = env(
        11,
        "Timeout 2\nRetries 3\nParallelUploads 2",
        Some("Fulls 7\nDiffs 0"),
    );
    let out = e.backup(1);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let before = e.keys();

    let rule = e.proxy.add(
        json!({"method": "PUT", "target": "x-id=UploadPart&partNumber=2&",
                                  "action": "status", "code": 500, "times": 0}),
    );
    let out = e.backup(2);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    e.assert_hit(rule, "500 on every attempt of part 2");
    assert_eq!(
        e.proxy.hits_of(rule),
        4,
        "Retries 3: the first attempt and 3 more: {err}"
    );
    let archive = format!("h/{}/{}.full.tar.zst.gpg", e.set(), run_id(2));
    assert!(err.contains(&archive), "names the archive object: {err}");
    assert!(err.contains("gave up after 4 attempts"), "{err}");
    assert_eq!(outcome(&out)["outcome"], "failed");
    assert_eq!(e.keys(), before, "a failed run adds and removes nothing");
    assert_eq!(
        e.server.open_uploads(BUCKET),
        Vec::<String>::new(),
        "upload aborted"
    );
    assert_eq!(e.listed(), vec![(run_id(1), "full".to_string())]);

    e.proxy.clear();
    let out = e.backup(3);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mut want = before.clone();
    want.extend(e.run_keys(&run_id(3), "full"));
    assert_eq!(
        e.keys(),
        want,
        "no archive without its manifest, no other debris"
    );
    assert_eq!(e.server.open_uploads(BUCKET), Vec::<String>::new());
    e.assert_recovers(&run_id(3));
}

/// Replies lost after the server acted (the request was forwarded, the answer never came):
/// completing the upload (once: the retried completion finds it done), storing the manifest
/// (on every attempt: s3nap reads the manifest back), and deleting a retired run's manifest and
/// archive during `prune` (once each: deleting again is harmless). Each run counts as committed
/// (exit 0), is listed and recovers, its state is saved (the next day's run is a DIFF without a
/// warning), and prune finishes its deletions.
#[test]
fn lost_replies_to_complete_manifest_and_delete_are_found_out() {
    // The default rotation: day 1 a FULL, days 2 and 3 DIFFs on it.
    let e = env(11, "Timeout 2\nRetries 3\nParallelUploads 2", None);
    let drop_reply = |method: &str, target: &str| {
        e.proxy
            .add(json!({"method": method, "target": target, "action": "drop_reply"}))
    };

    // Day 1: the reply to CompleteMultipartUpload is lost.
    let rule = drop_reply("POST", r"\.tar\.zst\.gpg\?uploadId=");
    let out = e.backup(1);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    e.assert_hit(rule, "lost reply to CompleteMultipartUpload");
    assert_retried(&out, "complete upload s3://");
    assert_eq!(outcome(&out)["kind"], "full");
    e.proxy.clear();
    assert_eq!(e.listed(), vec![(run_id(1), "full".to_string())]);
    e.assert_recovers(&run_id(1));

    // Day 2: every reply to the manifest's PUT is lost, though each PUT stored it.
    fs::write(e.tree.join("sub/small.txt"), b"changed on day 2\n").unwrap();
    fs::write(e.tree.join("sub/new.txt"), b"new on day 2\n").unwrap();
    let rule = e.proxy.add(json!({
        "method": "PUT", "target": r"\.manifest\.json\?x-id=PutObject",
        "action": "drop_reply", "times": 0,
    }));
    let out = e.backup(2);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    e.assert_hit(rule, "lost reply to the manifest's PutObject");
    assert_retried(&out, "put s3://");
    assert!(
        stderr(&out).contains("but the manifest is stored: run committed"),
        "{}",
        stderr(&out)
    );
    let o = outcome(&out);
    assert_eq!(
        (&o["kind"], &o["warnings"]),
        (&json!("diff"), &json!(0)),
        "day 1's state was saved: {o}"
    );
    e.proxy.clear();
    assert_eq!(
        e.listed(),
        vec![
            (run_id(1), "full".to_string()),
            (run_id(2), "diff".to_string())
        ]
    );
    e.assert_recovers(&run_id(2));

    // Day 3: no fault; a DIFF again, so day 2's state was saved too.
    fs::remove_file(e.tree.join("sub/new.txt")).unwrap();
    let out = e.backup(3);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let o = outcome(&out);
    assert_eq!(
        (&o["kind"], &o["warnings"]),
        (&json!("diff"), &json!(0)),
        "day 2's state was saved: {o}"
    );
    e.assert_recovers(&run_id(3));
    assert_eq!(e.server.open_uploads(BUCKET), Vec::<String>::new());
    let mut want = BTreeSet::new();
    want.extend(e.run_keys(&run_id(1), "full"));
    want.extend(e.run_keys(&run_id(2), "diff"));
    want.extend(e.run_keys(&run_id(3), "diff"));
    assert_eq!(e.keys(), want, "each run's three objects, nothing else");

    // Prune under a second configuration (host p, its own rotation): two FULLs, and a
    // RetentionPolicy that retires the older one a week later. The replies to the deletions
    // of its manifest and of its archive are lost.
    let pdir = e.dir.join("p");
    fs::create_dir_all(&pdir).unwrap();
    let pconf = ConfigBuilder::new(&pdir)
        .s3_via(&e.server, &e.proxy, BUCKET)
        .gpg(&e.gpg)
        .host(Some("p"))
        .cycle("p", |c| {
            c.line("Fulls 2\nDiffs 0\nRetentionPolicy 3\nMinimumRedundancy 0")
                .directory(&e.tree.join("sub"))
        })
        .build();
    let p = |args: &[&str]| {
        let mut all = vec!["-c", pconf.to_str().unwrap()];
        all.extend_from_slice(args);
        s3nap(&all, &[])
    };
    for day in [1, 2] {
        let out = p(&["--now", &now(day)]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    let pset = format!("p/dir{}/sub", e.tree.display());
    let retired: BTreeSet<String> = [".tar.zst.gpg", ".sha256", ".manifest.json"]
        .iter()
        .map(|ext| format!("{pset}/{}.full{ext}", run_id(1)))
        .collect();
    let before = e.keys();
    assert!(
        before.is_superset(&retired),
        "both runs kept so far: {before:?}"
    );
    let manifest_rule = drop_reply("DELETE", r"\.full\.manifest\.json\?x-id=DeleteObject");
    let archive_rule = drop_reply("DELETE", r"\.full\.tar\.zst\.gpg\?x-id=DeleteObject");
    let out = p(&["prune", "--now", &now(9)]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    e.assert_hit(manifest_rule, "lost reply to deleting the manifest");
    e.assert_hit(archive_rule, "lost reply to deleting the archive");
    assert_retried(&out, "delete s3://");
    assert!(
        err.contains(&format!("retired full run {}", run_id(1))),
        "{err}"
    );
    let after = e.keys();
    assert_eq!(
        after,
        before.difference(&retired).cloned().collect(),
        "the retired run's objects are all gone, and nothing else"
    );
}

/// How far `got` (a failed recovery's stdout) agrees with `want` (the true stream): it must
/// be a strict prefix of it, or such a prefix ending between members followed by the one
/// block s3nap adds there so that tar fails (a GNU long-name header whose name never comes:
/// see `TarSplicer::abandon`). Returns the length of the true prefix.
fn assert_no_wrong_bytes(got: &[u8], want: &[u8], what: &str) -> usize {
    if got.len() < want.len() && want.starts_with(got) {
        return got.len();
    }
    let marker_at = got.len().saturating_sub(512);
    let marker = &got[marker_at..];
    assert!(
        got.len() >= 512
            && marker_at % 512 == 0
            && marker.starts_with(b"././@LongLink\0")
            && marker[156] == b'L'
            && want.starts_with(&got[..marker_at]),
        "{what}: stdout ({} bytes) is not a prefix of the true stream ({} bytes): the first \
         difference is at byte {}",
        got.len(),
        want.len(),
        got.iter()
            .zip(want)
            .position(|(a, b)| a != b)
            .unwrap_or(want.len())
    );
    marker_at
}

/// Ranged GETs of the archive that arrive truncated, with a flipped bit, or reset: once, the
/// range is read again and the output is exact; on every attempt, recovery fails (non-zero)
/// and what it wrote is a prefix of the true stream, which tar refuses.
#[test]
fn damaged_downloads_are_read_again_and_never_reach_the_output() {
    // 11 MiB: two 8 MiB ranges, fetched in parallel.
    let e = env(11, "Timeout 2\nRetries 2", None);
    let out = e.backup(1);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let clean = e.recover(&run_id(1));
    assert!(clean.status.success(), "{}", stderr(&clean));
    let truth = clean.stdout;
    let dest = e.dir.join("restored");
    untar(&truth, &dest);
    assert_same_tree(&e.tree, &dest.join(e.tree.strip_prefix("/").unwrap()));

    let archive = r"\.full\.tar\.zst\.gpg\?x-id=GetObject";
    for action in ["truncate", "flip", "reset"] {
        // Once: the first GET of the archive.
        let rule = e
            .proxy
            .add(json!({"method": "GET", "target": archive, "action": action}));
        let out = e.recover(&run_id(1));
        let err = stderr(&out);
        e.assert_hit(rule, action);
        e.proxy.clear();
        assert_eq!(out.status.code(), Some(0), "{action} once: {err}");
        assert!(
            out.stdout == truth,
            "{action} once: the output differs from a clean recovery"
        );
        // Passed, but said: a damaged transfer is worth knowing of.
        let said = match action {
            "flip" => "did not match their SHA-256; reading them again",
            _ => "retrying",
        };
        assert!(err.contains(said), "{action} once: {err}");

        // Every GET of the archive from the second on: one range may get through, the other
        // never does.
        let rule = e
            .proxy
            .add(json!({"method": "GET", "target": archive, "action": action,
                                      "nth": 2, "times": 0}));
        let out = e.recover(&run_id(1));
        let err = stderr(&out);
        e.assert_hit(rule, action);
        e.proxy.clear();
        assert_ne!(out.status.code(), Some(0), "{action} always: {err}");
        assert_no_wrong_bytes(&out.stdout, &truth, &format!("{action} always"));
        let refused = std::process::Command::new("tar")
            .args(["-t", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .and_then(|mut tar| {
                use std::io::Write;
                let _ = tar.stdin.take().unwrap().write_all(&out.stdout);
                tar.wait()
            })
            .unwrap();
        assert!(
            !refused.success(),
            "{action} always: tar took the cut stream for a whole one"
        );
    }
}

/// Every reply to CompleteMultipartUpload lost, though the first completion took effect (S3
/// completes an upload idempotently, so each retry "succeeds" too, unheard). Failure rule 2 of
/// docs/ARCHITECTURE.md: a lost reply to completing an upload is checked with a read before
/// the operation counts as failed. The archive is there, whole: the run commits.
#[test]
fn every_lost_reply_to_complete_is_read_back_and_the_run_commits() {
    let e = env(11, "Timeout 2\nRetries 3\nParallelUploads 2", None);
    let rule = e.proxy.add(json!({
        "method": "POST", "target": r"\.tar\.zst\.gpg\?uploadId=",
        "action": "drop_reply", "times": 0,
    }));
    let out = e.backup(1);
    e.assert_hit(rule, "lost replies to CompleteMultipartUpload");
    assert_eq!(e.proxy.hits_of(rule), 4, "every attempt lost its reply");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    e.proxy.clear();
    assert_eq!(e.keys(), e.run_keys(&run_id(1), "full"));
    assert_eq!(e.server.open_uploads(BUCKET), Vec::<String>::new());
    assert_eq!(e.listed(), vec![(run_id(1), "full".to_string())]);
    e.assert_recovers(&run_id(1));
}

/// A byte damaged on its way to the server (the proxy changes one byte of the body and
/// forwards it with the headers as sent): the server refuses it (400 BadDigest: every part and
/// object carries its Content-MD5), s3nap sends the same bytes again and the run commits and
/// recovers exactly. Damage on every attempt of a part fails the set: nothing committed,
/// nothing left, and the next run commits.
#[test]
fn a_byte_damaged_on_the_way_to_the_server_is_refused_and_sent_again() {
    let e = env(11, "Retries 3\nParallelUploads 2", Some("Fulls 7\nDiffs 0"));
    let part = e.proxy.add(
        json!({"method": "PUT", "target": "x-id=UploadPart&partNumber=2&",
                                  "action": "corrupt_body"}),
    );
    let manifest = e.proxy.add(json!({"method": "PUT",
                                      "target": "manifest\\.json\\?x-id=PutObject",
                                      "action": "corrupt_body"}));
    let out = e.backup(1);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    e.assert_hit(part, "a damaged part");
    e.assert_hit(manifest, "a damaged manifest");
    for call in ["upload part s3://", "put s3://"] {
        assert!(
            err.lines()
                .any(|l| l.contains(call) && l.contains("BadDigest") && l.contains("retrying in")),
            "no {call} refused for its digest and retried: {err}"
        );
    }
    assert_eq!(e.keys(), e.run_keys(&run_id(1), "full"));
    e.assert_recovers(&run_id(1));
    let before = e.keys();

    e.proxy.clear();
    let every = e.proxy.add(
        json!({"method": "PUT", "target": "x-id=UploadPart&partNumber=1&",
                                   "action": "corrupt_body", "times": 0}),
    );
    let out = e.backup(2);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(
        e.proxy.hits_of(every),
        4,
        "the first attempt and 3 retries: {err}"
    );
    assert!(
        err.contains("BadDigest") && err.contains("gave up after 4 attempts"),
        "{err}"
    );
    assert_eq!(outcome(&out)["outcome"], "failed");
    assert_eq!(e.keys(), before, "a failed run adds nothing");
    assert_eq!(
        e.server.open_uploads(BUCKET),
        Vec::<String>::new(),
        "upload aborted"
    );
    assert_eq!(e.listed(), vec![(run_id(1), "full".to_string())]);

    e.proxy.clear();
    let out = e.backup(3);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    e.assert_recovers(&run_id(3));
}
