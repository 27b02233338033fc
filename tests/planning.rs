//! `-t` and the run share one plan: the sets SubversionDir and SnapshotsDir find, each set's
//! kind and key (dumps included), and a DIFF that will be a FULL, said in advance. Directory
//! expansions that would give two sets one identity are a configuration error.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::*;

// 2026-01-01 is day 20454, a FULL day of the default SimpleCycle; 2026-01-02 a DIFF day.
const DAY0: &str = "2026-01-01T03:00:00Z";
const DAY1: &str = "2026-01-02T03:00:00Z";

fn run(cmd: &mut Command) {
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn executable(path: &Path, script: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, script).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

fn s3nap_c(conf: &Path, args: &[&str]) -> Output {
    let mut all = vec!["-c", conf.to_str().unwrap()];
    all.extend_from_slice(args);
    s3nap(&all, &[])
}

/// The archive keys the `-t` output announces (`-> KEY`).
fn planned_keys(text: &str) -> Vec<String> {
    let mut keys: Vec<String> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("-> "))
        .map(str::to_string)
        .collect();
    keys.sort();
    keys
}

/// The archives (not manifests) of the run `run` in the local store below `store`, as keys.
fn stored_keys(store: &Path, run: &str) -> Vec<String> {
    let mut keys: Vec<String> = find_files(store, "")
        .into_iter()
        .map(|p| p.strip_prefix(store).unwrap().display().to_string())
        // The archives: not the manifests nor the range hashes beside them.
        .filter(|k| {
            k.contains(&format!("/{run}."))
                && !k.ends_with(".manifest.json")
                && !k.ends_with(".sha256")
        })
        .collect();
    keys.sort();
    keys
}

#[test]
fn dry_run_expands_directories_names_dump_keys_and_warns_of_a_full_instead_of_a_diff() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let repos = dir.join("repos");
    fs::create_dir_all(&repos).unwrap();
    for name in ["one", "two"] {
        run(Command::new("svnadmin").arg("create").arg(repos.join(name)));
    }
    let snapshots = dir.join("snapshots.d");
    executable(
        &snapshots.join("router"),
        "#!/bin/sh\necho 'the router'\nprintf 'config\\n' >&\"$1\"\n",
    );
    let tree = dir.join("tree");
    fs::create_dir_all(&tree).unwrap();
    fs::write(tree.join("file"), "data\n").unwrap();
    let conf = ConfigBuilder::new(dir)
        .directory(&tree)
        .line(format!("SubversionDir {}", repos.display()))
        .line(format!("SnapshotsDir {}", snapshots.display()))
        .command("hello", "\"echo hello\"")
        .line(format!("Subversion {}/one", repos.display()))
        .build();
    let plan = s3nap_c(&conf, &["-t", "--now", DAY0]);
    let text = String::from_utf8_lossy(&plan.stdout).into_owned();
    assert!(plan.status.success(), "{}\n{text}", stderr(&plan));
    for set in [
        format!("dir{}", tree.display()),
        format!("svn{}/two", repos.display()),
        format!("svn{}/one", repos.display()),
        "cmd/router".to_string(),
        "cmd/hello".to_string(),
    ] {
        assert!(
            text.contains(&format!("\n{set} [cycle -]")),
            "{set}:\n{text}"
        );
    }
    assert!(!text.contains("svndir/"), "{text}");
    assert!(!text.contains("snapshots/"), "{text}");
    let out = s3nap_c(&conf, &["--now", DAY0]);
    assert!(out.status.success(), "{}", stderr(&out));
    let keys = stored_keys(&dir.join("store"), "20260101T030000Z");
    assert_eq!(planned_keys(&text), keys, "{text}");
    assert!(
        keys.iter().any(|k| k.ends_with(".full.svndump.zst")),
        "{keys:?}"
    );
    assert!(
        keys.iter()
            .any(|k| k.ends_with("cmd/router/20260101T030000Z.full.dump.zst")),
        "{keys:?}"
    );

    // The tree's state is lost: its DIFF will be a FULL, and -t says so.
    for f in fs::read_dir(dir.join("state")).unwrap() {
        let f = f.unwrap().path();
        if f.extension().is_some_and(|e| e == "state") {
            fs::remove_file(f).unwrap();
        }
    }
    let plan = s3nap_c(&conf, &["-t", "--now", DAY1]);
    let text = String::from_utf8_lossy(&plan.stdout).into_owned();
    assert!(plan.status.success(), "{}\n{text}", stderr(&plan));
    let section = text
        .split(&format!("dir{} [cycle -]", tree.display()))
        .nth(1)
        .unwrap()
        .split("\n\n")
        .next()
        .unwrap();
    assert!(section.contains("due: FULL"), "{section}");
    assert!(
        section.contains("warning:") && section.contains("FULL instead of a DIFF"),
        "{section}"
    );
    let svn = text
        .split(&format!("svn{}/one [cycle -]", repos.display()))
        .nth(1)
        .unwrap()
        .split("\n\n")
        .next()
        .unwrap();
    assert!(svn.contains("due: DIFF"), "{svn}");
    let out = s3nap_c(&conf, &["--now", DAY1, "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        planned_keys(&text),
        stored_keys(&dir.join("store"), "20260102T030000Z")
    );
    let tree_outcome = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|o| o["set"] == format!("dir{}", tree.display()).as_str())
        .unwrap();
    assert_eq!(tree_outcome["kind"], "full", "{tree_outcome}");
    assert_eq!(tree_outcome["warnings"], 1, "{tree_outcome}");
}

#[test]
fn two_cycles_of_one_set_are_planned_with_the_keys_they_get() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let tree = dir.join("tree");
    fs::create_dir_all(&tree).unwrap();
    fs::write(tree.join("file"), "data\n").unwrap();
    let conf = ConfigBuilder::new(dir)
        .cycle("a", |c| c.directory(&tree))
        .cycle("b", |c| c.line("CycleType HanoiCycle").directory(&tree))
        .build();
    let plan = s3nap_c(&conf, &["-t", "--now", DAY0]);
    let text = String::from_utf8_lossy(&plan.stdout).into_owned();
    assert!(plan.status.success(), "{}\n{text}", stderr(&plan));
    let out = s3nap_c(&conf, &["--now", DAY0]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut stored: Vec<String> = find_files(&dir.join("store"), ".tar.zst")
        .into_iter()
        .map(|p| {
            p.strip_prefix(dir.join("store"))
                .unwrap()
                .display()
                .to_string()
        })
        .collect();
    stored.sort();
    assert_eq!(stored.len(), 2, "{stored:?}");
    assert_eq!(planned_keys(&text), stored, "{text}");
}

#[test]
fn snapshots_dirs_with_executables_of_one_name_are_a_configuration_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let script = "#!/bin/sh\nprintf 'data\\n' >&\"$1\"\n";
    let first: PathBuf = dir.join("first.d");
    let second: PathBuf = dir.join("second.d");
    executable(&first.join("backup-db"), script);
    executable(&second.join("backup-db"), script);
    executable(&second.join("other"), script);
    let conf = ConfigBuilder::new(dir)
        .line(format!("SnapshotsDir {}", first.display()))
        .line(format!("SnapshotsDir {}", second.display()))
        .build();
    for args in [
        &["--now", DAY0][..],
        &["-t", "--now", DAY0],
        &["config", "check"],
    ] {
        let out = s3nap_c(&conf, args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {err}");
        assert!(err.contains("cmd/backup-db"), "{args:?}: {err}");
        assert!(
            err.contains(&first.join("backup-db").display().to_string())
                && err.contains(&second.join("backup-db").display().to_string()),
            "{args:?}: {err}"
        );
    }
    assert!(!dir.join("store").exists(), "nothing ran");

    // In different cycles the two are different sets, and both run.
    let conf = ConfigBuilder::new(dir)
        .cycle("a", |c| c.line(format!("SnapshotsDir {}", first.display())))
        .cycle("b", |c| {
            c.line(format!("SnapshotsDir {}", second.display()))
        })
        .build();
    let out = s3nap_c(&conf, &["--now", DAY0, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 3);
}
