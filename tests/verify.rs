//! `s3nap verify` against a real S3 server (moto), with real GnuPG and GNU tar: a store holding
//! a directory set (a FULL and two DIFFs) and a dump set (three FULLs), damaged one way at a
//! time from outside s3nap, each damage found by the mode that can see it — and only by it —
//! and named; a clean store passes in every mode.

mod common;

use std::fs;
use std::path::PathBuf;
use std::process::Output;

use common::*;

const BUCKET: &str = "verify";

// 2026-01-01 is day 20454, a multiple of 14: day 0 is a FULL, days 1-6 DIFFs.
fn day_time(i: u32) -> String {
    format!("2026-01-{:02}T03:00:00Z", 1 + i)
}

struct Fixture {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    server: S3Server,
    gpg: Gpg,
    conf: PathBuf,
    metrics: PathBuf,
    /// The directory set's name and its runs' keys without suffix, oldest first.
    tree_set: String,
    tree_runs: Vec<String>,
    /// The dump set's name and its runs' keys without suffix, oldest first.
    dump_set: String,
    dump_runs: Vec<String>,
}

/// Three days of backups of a tree (FULL, DIFF, DIFF) and of a dump (three FULLs).
fn backed_up() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let tree = dir.join("tree");
    fs::create_dir_all(&tree).unwrap();
    let dump = dir.join("dump.sql");
    let server = S3Server::start();
    server.create_bucket(BUCKET);
    let gpg = Gpg::new(&dir);
    let metrics = dir.join("s3nap.prom");
    let conf = ConfigBuilder::new(&dir)
        .s3(&server, BUCKET)
        .gpg(&gpg)
        .line(format!("MetricsFile {}", metrics.display()))
        .directory(&tree)
        .command("notes", format!("cat {}", dump.display()))
        .build();
    for day in 0..3u32 {
        fs::write(
            tree.join(format!("file{day}.bin")),
            random_bytes(100_000, 7 + day as u64),
        )
        .unwrap();
        fs::write(&dump, format!("dump of day {day}\n").repeat(1000)).unwrap();
        let out = s3nap(
            &["-c", conf.to_str().unwrap(), "--now", &day_time(day)],
            &[],
        );
        assert!(out.status.success(), "day {day}: {}", stderr(&out));
    }
    let list = s3nap(&["-c", conf.to_str().unwrap(), "list", "--json"], &[]);
    assert!(list.status.success(), "{}", stderr(&list));
    let runs: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let mut sets: std::collections::BTreeMap<String, Vec<(String, String)>> = Default::default();
    for r in runs.as_array().unwrap() {
        sets.entry(r["set"].as_str().unwrap().to_string())
            .or_default()
            .push((
                r["run"].as_str().unwrap().to_string(),
                r["kind"].as_str().unwrap().to_string(),
            ));
    }
    assert_eq!(sets.len(), 2, "{sets:?}");
    let tree_set = sets.keys().find(|s| s.starts_with("dir/")).unwrap().clone();
    let dump_set = sets
        .keys()
        .find(|s| !s.starts_with("dir/"))
        .unwrap()
        .clone();
    let kinds = |set: &str| -> Vec<String> { sets[set].iter().map(|(_, k)| k.clone()).collect() };
    assert_eq!(kinds(&tree_set), ["full", "diff", "diff"]);
    assert_eq!(kinds(&dump_set), ["full", "full", "full"]);
    let stems = |set: &str| -> Vec<String> {
        sets[set]
            .iter()
            .map(|(run, kind)| format!("h/{set}/{run}.{kind}"))
            .collect()
    };
    Fixture {
        tree_runs: stems(&tree_set),
        dump_runs: stems(&dump_set),
        tree_set,
        dump_set,
        _tmp: tmp,
        dir,
        server,
        gpg,
        conf,
        metrics,
    }
}

/// What one verify said.
struct Verdict {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Verdict {
    /// The line of the run whose keys start with `stem`.
    fn line(&self, stem: &str) -> &str {
        let (set, run) = stem.strip_prefix("h/").unwrap().rsplit_once('/').unwrap();
        let run = run.split('.').next().unwrap();
        let head = format!("{set} {run} ");
        self.stdout
            .lines()
            .find(|l| l.starts_with(&head))
            .unwrap_or_else(|| panic!("no line for {head}: {}", self.stdout))
    }

    fn summary(&self) -> &str {
        self.stdout.lines().last().unwrap_or_default()
    }

    fn show(&self) -> String {
        format!("status {:?}\n{}\n{}", self.code, self.stdout, self.stderr)
    }
}

impl Fixture {
    fn verify(&self, args: &[&str]) -> Verdict {
        let mut all = vec!["-c", self.conf.to_str().unwrap(), "verify"];
        all.extend_from_slice(args);
        let out: Output = s3nap(&all, &[("GNUPGHOME", &self.gpg.home)]);
        Verdict {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: stderr(&out),
        }
    }

    /// The one key starting with `stem` and ending with `suffix`.
    fn key(&self, stem: &str, suffix: &str) -> String {
        let found: Vec<String> = self
            .server
            .keys(BUCKET)
            .into_iter()
            .filter(|k| k.starts_with(stem) && k.ends_with(suffix))
            .collect();
        assert_eq!(found.len(), 1, "{stem}…{suffix}: {found:?}");
        found[0].clone()
    }

    fn archive(&self, stem: &str) -> String {
        self.key(stem, ".gpg")
    }

    fn manifest(&self, stem: &str) -> String {
        self.key(stem, ".manifest.json")
    }

    fn get(&self, key: &str) -> Vec<u8> {
        self.server.get(BUCKET, key)
    }

    fn put(&self, key: &str, data: Vec<u8>) {
        self.server.put(BUCKET, key, data);
    }

    fn delete(&self, key: &str) {
        self.server
            .block_on(
                self.server
                    .client
                    .delete_object()
                    .bucket(BUCKET)
                    .key(key)
                    .send(),
            )
            .unwrap();
    }

    /// Replaces `key` with what `damage` makes of it, runs `check`, and puts the original back.
    fn damaged(&self, key: &str, damage: impl FnOnce(&mut Vec<u8>), check: impl FnOnce()) {
        let good = self.get(key);
        let mut bad = good.clone();
        damage(&mut bad);
        self.put(key, bad);
        check();
        self.put(key, good);
    }

    fn located(&self, key: &str) -> String {
        format!("s3://{BUCKET}/{key}")
    }
}

fn assert_ok(v: &Verdict, what: &str) {
    assert_eq!(v.code, Some(0), "{what}: {}", v.show());
    for line in v.stdout.lines().filter(|l| !l.starts_with("debris")) {
        assert!(
            line.contains(": OK") || line.starts_with("verify:"),
            "{what}: {line}"
        );
    }
}

/// The runs a verify read (their lines name the check `read` or `deep`).
fn read_lines(v: &Verdict) -> usize {
    v.stdout
        .lines()
        .filter(|l| l.contains(", read]") || l.contains(", deep]"))
        .count()
}

#[test]
fn a_clean_store_passes_in_every_mode_and_only_the_asked_runs_are_read() {
    let f = backed_up();
    let secret = f.gpg.secret.to_str().unwrap();

    let plain = f.verify(&[]);
    assert_ok(&plain, "HEAD only");
    assert_eq!(read_lines(&plain), 0, "{}", plain.show());
    assert!(f
        .dump_runs
        .iter()
        .chain(&f.tree_runs)
        .all(|stem| plain.line(stem).contains("[manifest, objects, chain]: OK")));
    assert!(
        plain
            .summary()
            .contains("6 run(s) of 2 set(s) checked: 6 OK"),
        "{}",
        plain.show()
    );

    // The chains a recovery of the latest state reads: the tree's FULL and both DIFFs, the
    // dump's latest FULL.
    let read = f.verify(&["--read"]);
    assert_ok(&read, "--read");
    assert_eq!(read_lines(&read), 4, "{}", read.show());
    assert!(!read.line(&f.dump_runs[0]).contains("read"));
    assert!(read.line(&f.dump_runs[2]).contains(", read]: OK"));
    let all = f.verify(&["--read", "--all"]);
    assert_ok(&all, "--read --all");
    assert_eq!(read_lines(&all), 6, "{}", all.show());
    // A third of the dump's three runs: one, chosen at random.
    let sampled = f.verify(&["--read", "--all", "--sample", "33", &f.dump_set]);
    assert_ok(&sampled, "--sample 33");
    assert_eq!(read_lines(&sampled), 1, "{}", sampled.show());
    assert!(
        !sampled.stdout.contains(&f.tree_set),
        "only the set asked for"
    );

    for (what, args) in [
        ("--deep --identity", vec!["--deep", "--identity", secret]),
        ("--deep --gpg", vec!["--deep", "--gpg", "--json"]),
    ] {
        let deep = f.verify(&args);
        assert_eq!(deep.code, Some(0), "{what}: {}", deep.show());
        if what.ends_with("--gpg") {
            let doc: serde_json::Value = serde_json::from_str(&deep.stdout).unwrap();
            assert_eq!(doc["ok"], true, "{doc}");
            let runs = doc["runs"].as_array().unwrap();
            assert_eq!(runs.len(), 6);
            let deep_runs = runs
                .iter()
                .filter(|r| r["checked"].as_array().unwrap().iter().any(|c| c == "deep"))
                .count();
            assert_eq!(deep_runs, 4, "{doc}");
        } else {
            assert_ok(&deep, what);
            assert_eq!(read_lines(&deep), 4, "{}", deep.show());
        }
    }
    // The time of the last successful verify, per set and check.
    let metrics = fs::read_to_string(&f.metrics).unwrap();
    for (set, check) in [(&f.tree_set, "deep"), (&f.dump_set, "objects")] {
        let series = format!(
            "s3nap_last_verify_success_timestamp_seconds{{set=\"{set}\",check=\"{check}\"}}"
        );
        assert!(metrics.contains(&series), "{series}: {metrics}");
    }
    // node_exporter reads it as another user, after a verify as after a run.
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(&f.metrics).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644, "MetricsFile mode {mode:o}");

    // Another key cannot decrypt: --deep fails and names the archive; --read still passes.
    let other = Gpg::new(&f.dir.join("other"));
    let wrong = f.verify(&["--deep", "--identity", other.secret.to_str().unwrap()]);
    assert_eq!(wrong.code, Some(2), "{}", wrong.show());
    let archive = f.located(&f.archive(&f.dump_runs[2]));
    assert!(
        wrong.line(&f.dump_runs[2]).contains(&archive),
        "{}",
        wrong.show()
    );

    // An interrupted run's leftover is debris, listed and not damage.
    let stray = format!("h/{}/20260104T030000Z.full.sql.zst.gpg", f.dump_set);
    f.put(&stray, b"half an upload".to_vec());
    let with_debris = f.verify(&[]);
    assert_ok(&with_debris, "debris");
    assert!(
        with_debris
            .stdout
            .contains(&format!("debris (not damage): {}", f.located(&stray))),
        "{}",
        with_debris.show()
    );
}

#[test]
fn each_damage_is_found_by_the_mode_that_can_see_it_and_named() {
    let f = backed_up();
    let secret = f.gpg.secret.to_str().unwrap();

    // A flipped byte keeps the size: only reading finds it, naming the object and its range.
    let full = f.archive(&f.tree_runs[0]);
    f.damaged(
        &full,
        |b| {
            let middle = b.len() / 2;
            b[middle] ^= 0x10;
        },
        || {
            assert_ok(&f.verify(&[]), "a flipped byte, HEAD only");
            let read = f.verify(&["--read"]);
            assert_eq!(read.code, Some(2), "{}", read.show());
            let line = read.line(&f.tree_runs[0]);
            assert!(line.contains("DAMAGED"), "{line}");
            assert!(line.contains(&f.located(&full)), "{line}");
            assert!(line.contains("range 1 of 1"), "{line}");
            // The runs after it in the chain were read and are whole themselves.
            assert!(read.line(&f.tree_runs[2]).ends_with(", read]: OK"));
            assert!(
                read.summary().contains("5 OK, 1 with problems"),
                "{}",
                read.show()
            );
        },
    );

    // A truncated object: HEAD finds the size mismatch.
    let latest = f.archive(&f.tree_runs[2]);
    f.damaged(
        &latest,
        |b| b.truncate(b.len() - 100),
        || {
            let v = f.verify(&[]);
            assert_eq!(v.code, Some(2), "{}", v.show());
            let line = v.line(&f.tree_runs[2]);
            assert!(line.contains(&f.located(&latest)), "{line}");
            assert!(line.contains("its manifest says"), "{line}");
            // Only the chain at an earlier time: the damaged run is not part of it.
            let earlier = f.verify(&["--at", &day_time(1), &f.tree_set]);
            assert_ok(&earlier, "--at before the damage");
            assert!(
                earlier.summary().contains("2 run(s) of 1 set(s)"),
                "{}",
                earlier.show()
            );
        },
    );

    // A deleted archive.
    let dump = f.archive(&f.dump_runs[1]);
    let kept = f.get(&dump);
    f.delete(&dump);
    let v = f.verify(&[]);
    assert_eq!(v.code, Some(2), "{}", v.show());
    let line = v.line(&f.dump_runs[1]);
    assert!(
        line.contains(&format!("{}: object is missing", f.located(&dump))),
        "{line}"
    );
    f.put(&dump, kept);

    // A deleted DIFF base (its manifest, so the run is gone and its archive is debris): the
    // DIFF after it names the missing base; the leftover is debris, not damage.
    let base = f.manifest(&f.tree_runs[1]);
    let kept = f.get(&base);
    f.delete(&base);
    let v = f.verify(&[]);
    assert_eq!(v.code, Some(2), "{}", v.show());
    let base_run = f.tree_runs[1]
        .rsplit('/')
        .next()
        .unwrap()
        .split('.')
        .next()
        .unwrap();
    let line = v.line(&f.tree_runs[2]);
    assert!(
        line.contains(&format!("needs base run {base_run}, which is missing")),
        "{line}"
    );
    assert!(
        v.stdout.contains(&format!(
            "debris (not damage): {}",
            f.located(&f.archive(&f.tree_runs[1]))
        )),
        "{}",
        v.show()
    );
    assert!(
        v.summary().contains("4 OK, 1 with problems"),
        "{}",
        v.show()
    );
    f.put(&base, kept);

    // A manifest that does not parse: named, and it breaks the chains that need it.
    let first = f.manifest(&f.tree_runs[0]);
    f.damaged(
        &first,
        |b| b.truncate(b.len() / 2),
        || {
            let v = f.verify(&[]);
            assert_eq!(v.code, Some(2), "{}", v.show());
            let line = v.line(&f.tree_runs[0]);
            assert!(line.contains(&f.located(&first)), "{line}");
            assert!(line.contains("unreadable manifest"), "{line}");
            assert!(
                v.line(&f.tree_runs[1])
                    .contains("(its manifest is unreadable)"),
                "{}",
                v.show()
            );
        },
    );

    // A manifest that parses but records another plaintext length: every SHA-256 still
    // matches, only decoding to the end tells.
    let dump_manifest = f.manifest(&f.dump_runs[2]);
    f.damaged(
        &dump_manifest,
        |b| {
            let mut m: serde_json::Value = serde_json::from_slice(b).unwrap();
            let size = m["archive"]["plaintext_size"].as_u64().unwrap();
            m["archive"]["plaintext_size"] = (size + 1).into();
            *b = serde_json::to_vec_pretty(&m).unwrap();
        },
        || {
            assert_ok(&f.verify(&["--read"]), "a wrong length, --read");
            let v = f.verify(&["--deep", "--identity", secret, &f.dump_set]);
            assert_eq!(v.code, Some(2), "{}", v.show());
            let line = v.line(&f.dump_runs[2]);
            assert!(
                line.contains(&f.located(&f.archive(&f.dump_runs[2]))),
                "{line}"
            );
            assert!(line.contains("decodes to"), "{line}");
        },
    );

    // All put back: whole again.
    assert_ok(&f.verify(&["--read", "--all"]), "restored");
}

#[test]
fn reading_options_need_a_reading_mode_and_a_percentage() {
    let tmp = tempfile::tempdir().unwrap();
    let conf = ConfigBuilder::new(tmp.path()).directory(tmp.path()).build();
    let c = conf.to_str().unwrap();
    for args in [
        vec!["--sample", "50"],
        vec!["--all"],
        vec!["--read", "--sample", "150"],
        vec!["--read", "--all", "--at", "2026-01-01"],
    ] {
        let mut all = vec!["-c", c, "verify"];
        all.extend_from_slice(&args);
        let out = s3nap(&all, &[]);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {}", stderr(&out));
    }
}
