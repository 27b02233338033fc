//! What sysadmins expect around a run: `Before` and `After` commands per set, `Nice` and
//! `IoNice` inherited by every program s3nap starts, `MaxUploadRate` across parallel uploads
//! (against moto), and two configurations sharing a Host (against moto): each keeps its own
//! sets, and a set belongs to the configuration that made its latest run.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn run(conf: &Path, args: &[&str]) -> Output {
    let mut all = vec!["-c", conf.to_str().unwrap()];
    all.extend_from_slice(args);
    s3nap(&all, &[])
}

fn script(path: &Path, body: &str) -> PathBuf {
    fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
    path.to_path_buf()
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_default()
}

fn manifests_of(store: &Path, set: &str) -> usize {
    find_files(&store.join("h").join(set), ".manifest.json").len()
}

#[test]
fn before_and_after_wrap_each_due_set_with_the_process_priority() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let log = dir.join("hooks.log");
    let snapshot = dir.join("snapshot");
    // Every hook appends what it was told; the good set's Before "makes a snapshot" and
    // records its own priority, and its After "removes" it (and fails when asked to).
    let hook = script(
        &dir.join("hook.sh"),
        &format!(
            "echo \"$S3NAP_HOOK $S3NAP_SET $S3NAP_KIND $S3NAP_STATUS\" >> {log}\n\
             case \"$S3NAP_HOOK $S3NAP_SET\" in\n\
             'before cmd/good') echo \"snapshot of $S3NAP_RUN\" > {snap}; nice > {dir}/before.nice; ionice -p $$ > {dir}/before.ionice ;;\n\
             'after cmd/good') rm -f {snap}; [ ! -e {dir}/fail-after ] || {{ echo 'lvremove: busy' >&2; exit 5; }} ;;\n\
             esac",
            log = log.display(),
            snap = snapshot.display(),
            dir = dir.display()
        ),
    );
    let failing = script(
        &dir.join("failing.sh"),
        "echo 'lvcreate: volume group full' >&2; exit 3",
    );
    // The data: what Before made, and the dump's own priority.
    let dump = script(
        &dir.join("dump.sh"),
        &format!("cat {}; nice; ionice -p $$", snapshot.display()),
    );
    let tree = dir.join("tree");
    fs::create_dir_all(&tree).unwrap();
    fs::write(tree.join("f"), b"never read").unwrap();
    let hooks = format!("Before {}\nAfter {}", hook.display(), hook.display());
    let conf = ConfigBuilder::new(dir)
        .line("Nice 7\nIoNice best-effort:6")
        .line(format!(
            "<Command good>\n  Run {}\n  {}\n</Command>",
            dump.display(),
            hooks.replace('\n', "\n  ")
        ))
        .line(format!(
            "<Command broken>\n  Run /bin/false\n  {}\n</Command>",
            hooks.replace('\n', "\n  ")
        ))
        .line(format!(
            "<Directory {}>\n  Before {}\n  After {}\n</Directory>",
            tree.display(),
            failing.display(),
            hook.display()
        ))
        .line(format!(
            "<Command slow>\n  Run /bin/true\n  Before /bin/sleep 600\n  HookTimeout 1s\n  After {}\n</Command>",
            hook.display()
        ))
        .build();
    let store = dir.join("store");
    let tree_set = format!("dir{}", tree.display());

    // config check and -t name the commands (not their arguments) and run none of them.
    let out = run(&conf, &["config", "check"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("Before /bin/sleep (1 argument(s)), HookTimeout 1s"),
        "{text}"
    );
    assert!(
        text.contains("Nice") && text.contains("best-effort:6"),
        "{text}"
    );
    let out = run(&conf, &["-t"]);
    let plan = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        plan.contains(&format!(
            "Before (not run in test mode): {}",
            hook.display()
        )),
        "{plan}"
    );
    assert!(plan.contains(&format!("After (not run in test mode): {}", hook.display())));
    assert!(
        !log.exists() && !dir.join("before.nice").exists(),
        "-t ran a hook"
    );

    let started = Instant::now();
    let out = run(&conf, &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    // The slow Before was stopped at its deadline, not waited for (a loose bound: the box may
    // be loaded).
    assert!(started.elapsed() < Duration::from_secs(200), "{err}");
    assert!(
        err.contains("did not end within 1s"),
        "the slow Before's deadline: {err}"
    );
    // A failing Before fails its set with its error output; the set is not backed up.
    assert!(
        err.contains(&format!(
            "Before {} exited with status 3",
            failing.display()
        )) && err.contains("lvcreate: volume group full"),
        "{err}"
    );
    assert_eq!(manifests_of(&store, &tree_set), 0);
    assert_eq!(manifests_of(&store, "cmd/slow"), 0);
    assert_eq!(manifests_of(&store, "cmd/good"), 1);
    // After ran for every set whose run was attempted, told how it went; before any data.
    let told = read(&log);
    let told: Vec<&str> = told.lines().collect();
    assert_eq!(
        told,
        [
            "before cmd/good full ",
            "after cmd/good full committed",
            "before cmd/broken full ",
            "after cmd/broken full failed",
            &format!("after {tree_set} full before-failed"),
            "after cmd/slow full before-failed",
        ],
        "{err}"
    );
    assert!(!snapshot.exists(), "After removed the snapshot");

    // The data saw the snapshot Before made; Before and the dump ran at the configured
    // priority.
    let data = run(&conf, &["recover", "cmd/good"]);
    assert!(data.status.success(), "{}", stderr(&data));
    let data = String::from_utf8_lossy(&data.stdout).into_owned();
    let lines: Vec<&str> = data.lines().collect();
    assert!(lines[0].starts_with("snapshot of 20"), "{data}");
    assert_eq!(lines[1..], ["7", "best-effort: prio 6"], "{data}");
    assert_eq!(read(&dir.join("before.nice")), "7\n");
    assert_eq!(read(&dir.join("before.ionice")), "best-effort: prio 6\n");

    // Nothing but a run runs them: not list, recover, verify or prune, nor a set not due.
    fs::remove_file(&log).unwrap();
    for args in [
        &["list"][..],
        &["verify"],
        &["prune"],
        &["recover", "cmd/good"],
        &["run", "cmd/good"],
    ] {
        let out = run(&conf, args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }
    assert!(!log.exists(), "{}", read(&log));

    // An After that fails does not undo the commit: the run ends with a problem (exit 1).
    fs::write(dir.join("fail-after"), "").unwrap();
    let out = run(&conf, &["-f", "run", "cmd/good"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("After failed") && err.contains("lvremove: busy"),
        "{err}"
    );
    assert_eq!(manifests_of(&store, "cmd/good"), 2);
}

#[test]
fn max_upload_rate_paces_all_parts_and_the_backup_recovers_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let server = S3Server::start();
    server.create_bucket("paced");
    let tree = dir.join("tree");
    fs::create_dir_all(&tree).unwrap();
    // 12 MiB that do not compress: three 5 MiB parts, sent in parallel.
    fs::write(tree.join("random.bin"), random_bytes(12 << 20, 17)).unwrap();
    const RATE: f64 = 2_000_000.0;
    let conf = ConfigBuilder::new(dir)
        .s3(&server, "paced")
        .line("ChunkSize 5MiB\nParallelUploads 4\nMaxUploadRate 2M")
        .directory(&tree)
        .build();
    let started = Instant::now();
    let out = run(&conf, &[]);
    let took = started.elapsed();
    assert!(out.status.success(), "{}", stderr(&out));
    let stored: u64 = server
        .keys("paced")
        .iter()
        .filter(|k| k.contains(".full.tar"))
        .map(|k| server.get("paced", k).len() as u64)
        .sum();
    assert!(stored >= 12 << 20, "{stored}");
    // Never faster than the rate allows (no upper bound: the machine may be slow).
    let least = Duration::from_secs_f64(stored as f64 / RATE);
    assert!(took >= least, "{stored} bytes in {took:?}, under {least:?}");

    let data = run(&conf, &["recover", tree.to_str().unwrap()]);
    assert!(data.status.success(), "{}", stderr(&data));
    let dest = dir.join("out");
    untar(&data.stdout, &dest);
    let root = dest.join(tree.strip_prefix("/").unwrap());
    assert_same_tree(&tree, &root);
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

fn recovered(conf: &Path, args: &[&str]) -> Vec<u8> {
    let mut all = vec!["recover"];
    all.extend_from_slice(args);
    let out = run(conf, &all);
    assert!(out.status.success(), "{}", stderr(&out));
    out.stdout
}

#[test]
fn two_configurations_on_one_host_keep_their_own_sets() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let server = S3Server::start();
    server.create_bucket("shared");
    let tree_a = dir.join("tree-a");
    fs::create_dir_all(&tree_a).unwrap();
    fs::write(tree_a.join("a.txt"), b"a's own\n").unwrap();
    let tree_b = dir.join("tree-b");
    fs::create_dir_all(&tree_b).unwrap();
    fs::write(tree_b.join("b.bin"), random_bytes(2 << 20, 5)).unwrap();
    let own_a = format!("Directory {}", tree_a.display());
    let own_b = format!("Directory {}", tree_b.display());
    let a = configuration(dir, &server, "a", &own_a);
    // B's first run has an upload in flight until the test says: one 5 MiB part sent, then
    // its command waits for a flag (at most 300 s), while A runs and prunes.
    let flag = dir.join("go-on");
    let waiting = script(
        &dir.join("inflight.sh"),
        &format!(
            "head -c 6000000 /dev/urandom\ni=0\n\
             while [ ! -e {} ] && [ $i -lt 3000 ]; do sleep 0.1; i=$((i+1)); done",
            flag.display()
        ),
    );
    let inflight = format!(
        "ChunkSize 5MiB\n{own_b}\n<Command inflight>\n  Run {}\n</Command>",
        waiting.display()
    );
    let b = configuration(dir, &server, "b", &inflight);

    let slow = Running::spawn(
        Command::new(env!("CARGO_BIN_EXE_s3nap"))
            .arg("-c")
            .arg(&b)
            .stdin(Stdio::null()),
    );
    // The held set's upload (B's directory set, first, may come and go before it).
    let held_open = || {
        server
            .open_uploads("shared")
            .iter()
            .any(|k| k.contains("/inflight/"))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !held_open() {
        assert!(Instant::now() < deadline, "B's upload never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    for args in [&[][..], &["prune"]] {
        let out = run(&a, args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }
    assert!(
        held_open(),
        "B's upload was still in flight during A's run and prune"
    );
    fs::write(&flag, b"").unwrap();
    let out = slow.wait(DEADLINE);
    assert!(out.status.success(), "B: {}", stderr(&out));
    let dest = dir.join("b-out");
    untar(&recovered(&b, &[tree_b.to_str().unwrap()]), &dest);
    assert_same_tree(&tree_b, &dest.join(tree_b.strip_prefix("/").unwrap()));

    // Both now configure one more set of the same name with different data. The first to
    // back it up owns it; the other's run fails that set, naming the owner, and -t says so.
    let shared = |who: &str| format!("<Command shared>\n  Run /bin/echo {who}\n</Command>");
    let a = configuration(dir, &server, "a", &format!("{own_a}\n{}", shared("from-a")));
    let b = configuration(dir, &server, "b", &format!("{own_b}\n{}", shared("from-b")));
    let out = run(&a, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(&b, &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let a_state = fs::canonicalize(dir.join("a/state")).unwrap();
    assert!(
        err.contains("cmd/shared under Host h is backed up by another configuration")
            && err.contains(&format!("DiffDir {}", a_state.display()))
            && err.contains("--take-over"),
        "{err}"
    );
    let plan = run(&b, &["-t"]);
    let plan = String::from_utf8_lossy(&plan.stdout).into_owned();
    assert!(
        plan.contains("backed up by another configuration"),
        "{plan}"
    );
    assert_eq!(recovered(&a, &["cmd/shared"]), b"from-a\n");

    // B replaces A for that set: --take-over; from then on A's run is the one refused.
    let out = run(&b, &["--take-over", "-f", "run", "cmd/shared"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(recovered(&b, &["cmd/shared"]), b"from-b\n");
    let out = run(&a, &["-f"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let b_state = fs::canonicalize(dir.join("b/state")).unwrap();
    assert!(
        err.contains(&format!("DiffDir {}", b_state.display())),
        "{err}"
    );
    // A's prune leaves the set B took over to B, even with retention that would retire all
    // but the newest of its runs (A's own, and B's).
    let out = run(&b, &["-f", "run", "cmd/shared"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let shared_runs = || {
        server
            .keys("shared")
            .into_iter()
            .filter(|k| k.contains("/cmd/shared/") && k.ends_with(".manifest.json"))
            .count()
    };
    assert_eq!(shared_runs(), 3);
    let strict = format!(
        "{own_a}\n<Command shared>\n  Run /bin/echo from-a\n  RetentionPolicy 1\n  MinimumRedundancy 0\n</Command>"
    );
    let a_strict = configuration(dir, &server, "a", &strict);
    let out = run(&a_strict, &["--now", "2099-01-01T00:00:00Z", "prune"]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("cmd/shared: not pruned")
            && err.contains(&format!("DiffDir {}", b_state.display())),
        "{err}"
    );
    assert_eq!(shared_runs(), 3, "A's prune retired runs of B's set: {err}");
    assert_eq!(recovered(&b, &["cmd/shared"]), b"from-b\n");
    // A copy of A's configuration that only prunes (a DiffDir of its own, never used for a
    // run: README, "Least privilege") prunes every set, this one too.
    let pruner = configuration(dir, &server, "pruner", &strict);
    let out = run(&pruner, &["--now", "2099-01-01T00:00:00Z", "prune"]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert_eq!(shared_runs(), 1, "{err}");
    assert_eq!(recovered(&b, &["cmd/shared"]), b"from-b\n");
    // A's own set still ran, and every set of both still recovers exactly.
    let dest = dir.join("a-out");
    untar(&recovered(&a, &[tree_a.to_str().unwrap()]), &dest);
    assert_same_tree(&tree_a, &dest.join(tree_a.strip_prefix("/").unwrap()));
    let out = run(&b, &["prune"]);
    assert!(out.status.success(), "{}", stderr(&out));

    // B's DiffDir lost and made anew where it was: still B's sets, -t agreeing.
    fs::remove_dir_all(dir.join("b/state")).unwrap();
    let plan = run(&b, &["-t", "-f"]);
    let plan = String::from_utf8_lossy(&plan.stdout).into_owned();
    assert!(
        plan.contains("cmd/shared") && !plan.contains("another configuration"),
        "{plan}"
    );
    let out = run(&b, &["-f"]);
    assert!(matches!(out.status.code(), Some(0 | 1)), "{}", stderr(&out));
    assert_eq!(recovered(&b, &["cmd/shared"]), b"from-b\n");
    let dest = dir.join("b-out-2");
    untar(&recovered(&b, &[tree_b.to_str().unwrap()]), &dest);
    assert_same_tree(&tree_b, &dest.join(tree_b.strip_prefix("/").unwrap()));
}
