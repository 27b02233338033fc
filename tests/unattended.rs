//! Unattended operation: every exit status of the contract, the run lock, progress only on a
//! terminal, log files, syslog, metrics, notification, JSON summaries, man page, completions,
//! and secrets that never show up anywhere.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A local-store configuration over a small tree, unencrypted unless `extra` says otherwise.
struct Local {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    tree: PathBuf,
    conf: PathBuf,
}

fn local(extra: &str) -> Local {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let tree = dir.join("tree");
    fs::create_dir_all(tree.join("sub")).unwrap();
    fs::write(tree.join("sub/a.txt"), b"alpha\n").unwrap();
    fs::write(tree.join("b.bin"), random_bytes(1 << 20, 11)).unwrap();
    let conf = ConfigBuilder::new(&dir)
        .line(extra)
        .directory(&tree)
        .build();
    Local {
        _tmp: tmp,
        dir,
        tree,
        conf,
    }
}

impl Local {
    fn run(&self, args: &[&str]) -> Output {
        let mut all = vec!["-c", self.conf.to_str().unwrap()];
        all.extend_from_slice(args);
        s3nap(&all, &[])
    }
}

#[test]
fn exit_status_0_success_2_failed_set_3_configuration() {
    let l = local("");
    let out = l.run(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let missing = l.dir.join("missing");
    let conf = ConfigBuilder::new(&l.dir)
        .directory(&l.tree)
        .directory(&missing)
        .build();
    let out = s3nap(&["-c", conf.to_str().unwrap(), "-f"], &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("FAILED") && err.contains(&missing.display().to_string()),
        "{err}"
    );

    let out = s3nap(&["-c", l.dir.join("nope.conf").to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(3));
    let out = l.run(&["recover", "dir/x", "--at", "last tuesday"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    // A usage error (clap's) is a usage error of the contract too.
    let out = l.run(&["no-such-command"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "{err}"
    );
}

/// clap's own exit status for a usage error is 2, which the contract reserves for a failed set.
#[test]
fn usage_errors_exit_3_help_and_version_exit_0() {
    let l = local("");
    let cases: &[&[&str]] = &[
        &["--bogus-flag"],
        &["no-such-command"],
        &["recover"],
        &["bucket"],
        &["bucket", "restore"],
        &["completions", "no-such-shell"],
        &["list", "a", "b"],
    ];
    for args in cases {
        let out = l.run(args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {err}");
        // clap's own words (an error, or the help of a command given without its subcommand).
        assert!(
            err.contains("error:") || err.contains("Usage:"),
            "{args:?}: {err}"
        );
    }
    for args in [["--help"], ["--version"]] {
        let out = s3nap(&args, &[]);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        assert!(!out.stdout.is_empty(), "{args:?}");
    }
    let out = s3nap(&["recover", "--help"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn exit_status_1_for_a_file_that_cannot_be_read() {
    let l = local("");
    let secret = l.tree.join("sub/unreadable.key");
    fs::write(&secret, b"private").unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o000)).unwrap();
    // As root every file is readable: run s3nap as nobody, over a tree it can otherwise read.
    let as_root = nix::unistd::Uid::effective().is_root();
    for p in [l.dir.as_path(), &l.tree, &l.tree.join("sub")] {
        fs::set_permissions(p, fs::Permissions::from_mode(0o777)).unwrap();
    }
    fs::set_permissions(&l.conf, fs::Permissions::from_mode(0o644)).unwrap();
    let mut cmd = if as_root {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"]);
        c.arg(env!("CARGO_BIN_EXE_s3nap"));
        c
    } else {
        Command::new(env!("CARGO_BIN_EXE_s3nap"))
    };
    let out = output_within(
        cmd.args(["-c", l.conf.to_str().unwrap()])
            .env("HOME", &l.dir)
            .stdin(Stdio::null()),
        DEADLINE,
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("unreadable.key") && err.contains("cannot open"),
        "{err}"
    );
    // The run committed everything else, and its manifest records the problem.
    let manifest = find_files(&l.dir.join("store"), ".manifest.json");
    assert_eq!(manifest.len(), 1);
    let m: serde_json::Value = serde_json::from_slice(&fs::read(&manifest[0]).unwrap()).unwrap();
    assert_eq!(m["warnings"][0]["unreadable"], true, "{m}");
    assert!(m["warnings"][0]["path"]
        .as_str()
        .unwrap()
        .ends_with("unreadable.key"));
}

#[test]
fn exit_status_4_while_another_run_holds_the_lock_and_wait_waits() {
    // The first run holds the lock for the 3 seconds its NotifyCommand sleeps.
    let l = local("NotifyCommand /bin/sleep 3");
    let first = Running::spawn(
        Command::new(env!("CARGO_BIN_EXE_s3nap"))
            .args(["-c", l.conf.to_str().unwrap()])
            .stdin(Stdio::null()),
    );
    let lock = l.dir.join("state/s3nap.lock");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !fs::read_to_string(&lock)
        .unwrap_or_default()
        .contains(&format!("pid {}", first.id()))
    {
        assert!(Instant::now() < deadline, "first run never took the lock");
        std::thread::sleep(Duration::from_millis(20));
    }

    let started = Instant::now();
    let out = l.run(&["-f"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(
        err.contains(&format!("pid {}", first.id())) && err.contains("since"),
        "names the holder: {err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "exit 4 must be immediate"
    );

    let out = l.run(&["-f", "--wait"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "--wait returned before the holder finished"
    );
    let first = first.wait(DEADLINE);
    assert!(first.status.success(), "{}", stderr(&first));
    assert_eq!(find_files(&l.dir.join("store"), ".manifest.json").len(), 2);

    // A lock left by a killed run never blocks: the kernel drops flock with the process.
    // (-o: only flock itself holds the lock, not its sleeping child.)
    let ready = l.dir.join("holder-ready");
    let mut holder = Command::new("flock")
        .arg("-o")
        .arg(&lock)
        .args(["sh", "-c", r#"touch "$0"; exec sleep 30"#])
        .arg(&ready)
        .spawn()
        .unwrap();
    // flock runs its command only once it holds the lock.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ready.exists() {
        assert!(Instant::now() < deadline, "flock never took the lock");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(l.run(&["-f"]).status.code(), Some(4));
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert_eq!(l.run(&["-f"]).status.code(), Some(0));
}

#[test]
fn progress_only_on_a_terminal() {
    let l = local("");
    fs::write(l.tree.join("big.bin"), random_bytes(48 << 20, 5)).unwrap();
    let out = l.run(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        !err.contains("parts in flight") && !err.contains('\r'),
        "progress in a log: {err}"
    );

    // --progress forces it on a pipe; --no-progress keeps it off on a terminal.
    let out = l.run(&["-f", "--progress", "--now", "2030-01-01T00:00:00Z"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("parts in flight"), "{}", stderr(&out));

    // A real terminal through script(1) (-e: its exit status is s3nap's).
    let on_terminal = |args: &str| {
        let command = format!(
            "{} -c {} -f {args}",
            env!("CARGO_BIN_EXE_s3nap"),
            l.conf.display()
        );
        let out = output_within(
            Command::new("script")
                .args(["-q", "-e", "-c", &command, "/dev/null"])
                .stdin(Stdio::null()),
            DEADLINE,
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{command}: {text}");
        text
    };
    let text = on_terminal("--now 2030-01-02T00:00:00Z");
    assert!(
        text.contains("parts in flight"),
        "no progress on a terminal: {text}"
    );
    let text = on_terminal("--no-progress --now 2030-01-03T00:00:00Z");
    assert!(!text.contains("parts in flight"), "{text}");
    // It ran (and committed), quietly.
    assert!(
        find_files(&l.dir.join("store"), ".manifest.json")
            .iter()
            .any(|m| m.to_string_lossy().contains("20300103T000000Z")),
        "the --no-progress run committed nothing"
    );
}

#[test]
fn log_file_syslog_json_summary_and_notification() {
    let tmp = tempfile::tempdir().unwrap();
    let socket_path = tmp.path().join("log.sock");
    let syslog = UnixDatagram::bind(&socket_path).unwrap();
    syslog
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    // Read while s3nap runs, as syslogd does: a datagram socket queues only a few messages
    // (net.unix.max_dgram_qlen), and a full queue blocks the sender.
    let received = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut got = Vec::new();
        while let Ok(n) = syslog.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            // What follows the summary is read until s3nap has been quiet a while.
            if got.last().is_some_and(|m| m.contains("committed run")) {
                let quiet = Some(Duration::from_secs(2));
                syslog.set_read_timeout(quiet).unwrap();
            }
        }
        got
    });
    let log_file = tmp.path().join("s3nap.log");
    let notified = tmp.path().join("notified.txt");
    let l = local(&format!(
        "LogFile {}\nLogLevel debug\nSyslog yes\nSyslogFacility local3\nSyslogTag backup\n\
         SyslogSocket {}\nNotifyCommand \"/usr/bin/tee {}\"",
        log_file.display(),
        socket_path.display(),
        notified.display()
    ));
    let out = l.run(&["--json"]);
    assert!(out.status.success(), "{}", stderr(&out));

    // stdout: one JSON object per set.
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    let o = &lines[0];
    assert_eq!(o["outcome"], "committed");
    assert_eq!(o["kind"], "full");
    assert_eq!(o["set"], format!("dir{}", l.tree.display()));
    assert!(o["bytes_read"].as_u64().unwrap() > 1 << 20);
    assert!(o["bytes_stored"].as_u64().unwrap() > 0);
    for field in [
        "cycle",
        "run",
        "slot",
        "ratio",
        "duration_seconds",
        "warnings",
        "archive",
        "retired",
    ] {
        assert!(o.get(field).is_some(), "missing {field}: {o}");
    }

    // The log file has the start line and the set's summary line; stderr only warnings.
    let log = fs::read_to_string(&log_file).unwrap();
    assert!(log.contains("run started"), "{log}");
    assert!(
        log.contains("committed run") && log.contains(": full slot ") && log.contains("ratio"),
        "{log}"
    );
    assert!(log.contains("DEBUG"), "LogLevel debug: {log}");
    assert!(!stderr(&out).contains("committed run"), "{}", stderr(&out));

    // Syslog got RFC 3164 lines: local3 (19) × 8 + info (6) = 158.
    let got = received.join().unwrap();
    let summary = got
        .iter()
        .find(|m| m.contains("committed run"))
        .expect("summary in syslog");
    assert!(summary.starts_with("<158>"), "{summary}");
    assert!(
        summary.contains(" backup["),
        "the configured tag: {summary}"
    );

    // The notification got the summary and the exit status.
    let text = fs::read_to_string(&notified).unwrap();
    assert!(
        text.contains("committed run") && text.contains("exit status 0"),
        "{text}"
    );
}

#[test]
fn metrics_file_is_prometheus_text_and_replaced_atomically() {
    let l = local("");
    let metrics = l.dir.join("s3nap.prom");
    let conf_text =
        fs::read_to_string(&l.conf).unwrap() + &format!("MetricsFile {}\n", metrics.display());
    fs::write(&l.conf, conf_text).unwrap();
    let out = l.run(&["--now", "2030-01-01T03:00:00Z"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let first = parse_prometheus(&fs::read_to_string(&metrics).unwrap());
    let set = format!("dir{}", l.tree.display());
    let labels = format!("cycle=\"-\",set=\"{set}\"");
    let value = |m: &Vec<(String, String, f64)>, name: &str| {
        m.iter()
            .find(|(n, l, _)| n == name && *l == labels)
            .map(|(_, _, v)| *v)
            .unwrap_or_else(|| panic!("{name}{{{labels}}} missing: {m:?}"))
    };
    assert_eq!(value(&first, "s3nap_last_run_outcome"), 0.0);
    let success = value(&first, "s3nap_last_success_timestamp_seconds");
    assert!(success > 1.7e9);
    assert!(value(&first, "s3nap_last_run_bytes_stored") > 0.0);
    let inode = fs::metadata(&metrics).unwrap().ino();

    // A failing run: outcome 2, and the last success time is carried over.
    fs::rename(&l.tree, l.dir.join("moved-away")).unwrap();
    let out = l.run(&["--now", "2030-01-02T03:00:00Z"]);
    assert_eq!(out.status.code(), Some(2));
    let second = parse_prometheus(&fs::read_to_string(&metrics).unwrap());
    assert_eq!(value(&second, "s3nap_last_run_outcome"), 2.0);
    assert_eq!(
        value(&second, "s3nap_last_success_timestamp_seconds"),
        success
    );
    assert_ne!(
        fs::metadata(&metrics).unwrap().ino(),
        inode,
        "replaced, not rewritten in place"
    );
    let leftovers: Vec<_> = fs::read_dir(&l.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// A strict reader of the text exposition format: HELP and TYPE before each family, every
/// sample `name{label="value",…} number`, names and labels well-formed. Returns the samples
/// with their labels sorted.
fn parse_prometheus(text: &str) -> Vec<(String, String, f64)> {
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.chars().enumerate().all(|(i, c)| {
                c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
            })
    };
    let mut typed = std::collections::HashSet::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kind, name) = (parts.next().unwrap(), parts.next().unwrap());
            assert!(kind == "HELP" || kind == "TYPE", "{line}");
            assert!(name_ok(name), "{line}");
            if kind == "TYPE" {
                assert_eq!(parts.next(), Some("gauge"), "{line}");
                typed.insert(name.to_string());
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, l.strip_suffix('}').unwrap_or_else(|| panic!("{line}"))),
            None => (series, ""),
        };
        assert!(name_ok(name) && typed.contains(name), "{line}");
        let mut pairs: Vec<String> = Vec::new();
        for pair in labels.split("\",").filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once("=\"").unwrap_or_else(|| panic!("{line}"));
            assert!(name_ok(k), "{line}");
            pairs.push(format!("{k}=\"{}\"", v.trim_end_matches('"')));
        }
        pairs.sort();
        samples.push((name.to_string(), pairs.join(","), value));
    }
    assert!(!samples.is_empty());
    samples
}

#[test]
fn man_page_renders_and_completions_load() {
    let tmp = tempfile::tempdir().unwrap();
    let out = s3nap(&["man"], &[]);
    assert!(out.status.success());
    let page = tmp.path().join("s3nap.1");
    fs::write(&page, &out.stdout).unwrap();
    let rendered = Command::new("man")
        .arg("-l")
        .arg(&page)
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100")
        .output()
        .expect("man (man-db) is installed by scripts/setup-tests.sh");
    let text = String::from_utf8_lossy(&rendered.stdout);
    assert!(
        rendered.status.success(),
        "{}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    for needle in [
        "s3nap",
        "recover",
        "prune",
        "Exit status",
        "CONFIGURATION",
        "DiffDir",
        "<Cycle>",
    ] {
        assert!(
            text.contains(needle),
            "{needle} not in the man page:\n{text}"
        );
    }

    let out = s3nap(&["completions", "bash"], &[]);
    assert!(out.status.success());
    let script = tmp.path().join("s3nap.bash");
    fs::write(&script, &out.stdout).unwrap();
    let check = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -e; source {}; complete -p s3nap",
            script.display()
        ))
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(String::from_utf8_lossy(&check.stdout).contains("s3nap"));
    for shell in ["zsh", "fish"] {
        let out = s3nap(&["completions", shell], &[]);
        assert!(out.status.success() && !out.stdout.is_empty());
    }

    let out = s3nap(&["--version"], &[]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("s3nap {}", env!("CARGO_PKG_VERSION"))
    );
    let out = s3nap(&["--help"], &[]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("4  another run holds the lock"));
}

/// `recover … | head`: the reader going away is not the object's fault, and says so.
#[test]
fn a_closed_output_is_reported_as_such() {
    let l = local("");
    fs::write(l.tree.join("c.bin"), random_bytes(4 << 20, 12)).unwrap();
    let out = l.run(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut child = Command::new(env!("CARGO_BIN_EXE_s3nap"))
        .args(["-c", l.conf.to_str().unwrap(), "recover"])
        .arg(&l.tree)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut head = [0u8; 512];
    std::io::Read::read_exact(child.stdout.as_mut().unwrap(), &mut head).unwrap();
    drop(child.stdout.take());
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("recover did not end after its output was closed");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("the reader closed the output (broken pipe) after "),
        "{err}"
    );
    assert!(!err.contains("recovering"), "not the object's fault: {err}");
}

#[test]
fn config_check_masks_notify_command_arguments() {
    let l = local("NotifyCommand \"/usr/bin/curl -H 'Authorization: Bearer tok-8832-secret' https://hooks.example/x\"");
    let out = l.run(&["config", "check"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{}", stderr(&out));
    let line = text
        .lines()
        .find(|l| l.contains("NotifyCommand"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains("/usr/bin/curl and 3 argument(s)"), "{line}");
    for secret in ["tok-8832-secret", "8832", "Bearer", "hooks.example"] {
        assert!(!text.contains(secret), "{secret} shown: {text}");
    }
}

#[test]
fn secrets_never_appear_in_logs_errors_config_check_or_json() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let server = S3Server::start();
    server.create_bucket("secrets");
    let passphrase = "Pass-Phrase-Never-Printed-7731";
    let gpg = Gpg::with_passphrase(dir, Some(passphrase));
    let tree = dir.join("tree");
    fs::create_dir_all(&tree).unwrap();
    fs::write(tree.join("f"), b"data\n").unwrap();
    let log_file = dir.join("debug.log");
    let conf = ConfigBuilder::new(dir)
        .s3(&server, "secrets")
        .gpg(&gpg)
        .line(format!("LogFile {}\nLogLevel trace", log_file.display()))
        .directory(&tree)
        .build();
    // The key file the configuration names (written again, unchanged).
    let keyfile = server.keyfile(dir);
    let pass_file = dir.join("pass");
    fs::write(&pass_file, passphrase).unwrap();
    let c = conf.to_str().unwrap();
    let mut outputs = vec![
        s3nap(&["-c", c, "-d", "--json"], &[]),
        s3nap(&["-c", c, "config", "check"], &[]),
        s3nap(&["-c", c, "-d", "list", "--json"], &[]),
        s3nap(&["-c", c, "-d", "-t"], &[]),
        s3nap(
            &[
                "-c",
                c,
                "-d",
                "recover",
                tree.to_str().unwrap(),
                "--identity",
                gpg.secret.to_str().unwrap(),
            ],
            &[("S3NAP_PASSPHRASE_FILE", &pass_file)],
        ),
    ];
    assert!(
        outputs.iter().all(|o| o.status.success()),
        "{}",
        outputs.iter().map(stderr).collect::<String>()
    );
    let check = String::from_utf8_lossy(&outputs[1].stdout).into_owned();
    assert!(check.contains("secret ****"), "{check}");
    assert!(
        check.contains(&server.access_key[..4]) && !check.contains(&server.access_key),
        "{check}"
    );

    // Failures too: a wrong passphrase, and the S3 secret refused by the server.
    let wrong = dir.join("wrong");
    fs::write(&wrong, "not it").unwrap();
    outputs.push(s3nap(
        &[
            "-c",
            c,
            "-d",
            "recover",
            tree.to_str().unwrap(),
            "--identity",
            gpg.secret.to_str().unwrap(),
        ],
        &[("S3NAP_PASSPHRASE_FILE", &wrong)],
    ));
    // The --identity given cannot be unlocked: a usage error, before anything is read.
    let refused = outputs.last().unwrap();
    assert_eq!(refused.status.code(), Some(3), "{}", stderr(refused));
    assert!(
        stderr(refused).contains("wrong passphrase"),
        "{}",
        stderr(refused)
    );
    // The first character changed for one it cannot already be (a random secret may start with X).
    let other = if server.secret_key.starts_with('X') {
        'Y'
    } else {
        'X'
    };
    fs::write(
        &keyfile,
        format!(
            "key={}\nsecret={other}{}\n",
            server.access_key,
            &server.secret_key[1..]
        ),
    )
    .unwrap();
    outputs.push(s3nap(&["-c", c, "-d", "-f", "--json"], &[]));
    assert_eq!(outputs.last().unwrap().status.code(), Some(2));

    let mut everything = fs::read_to_string(&log_file).unwrap();
    for o in &outputs {
        everything.push_str(&stderr(o));
        everything.push_str(&String::from_utf8_lossy(&o.stdout));
    }
    assert!(
        everything.contains("SignatureDoesNotMatch"),
        "the refused secret was reported"
    );
    for secret in [passphrase, &server.secret_key, &server.secret_key[1..]] {
        assert!(!everything.contains(secret), "a secret leaked");
    }
}

/// The deadline the tests' s3nap runs have: a command still running after it is killed and
/// fails the test instead of hanging it (here a short deadline over a long sleep).
#[test]
fn a_command_past_its_deadline_is_killed_and_fails_the_test() {
    let started = Instant::now();
    let hung = std::panic::catch_unwind(|| {
        output_within(
            Command::new("sh")
                .args(["-c", "echo pid $$ >&2; exec sleep 120"])
                .stdin(Stdio::null()),
            Duration::from_millis(500),
        )
    });
    let message = match hung {
        Ok(out) => panic!("a hung command passed: {out:?}"),
        Err(panic) => panic.downcast::<String>().map(|m| *m).unwrap_or_default(),
    };
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the deadline did not end the wait"
    );
    assert!(message.contains("still running after 500ms"), "{message}");
    let pid = message
        .split("pid ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("shows what it said so far: {message}"));
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the hung command was left running"
    );

    // Within its deadline, a command's output and status come back as Command::output's do.
    let out = output_within(
        Command::new("sh")
            .args(["-c", "echo out; echo err >&2; exit 5"])
            .stdin(Stdio::null()),
        Duration::from_secs(60),
    );
    assert_eq!(
        (out.status.code(), &out.stdout[..], &out.stderr[..]),
        (Some(5), &b"out\n"[..], &b"err\n"[..])
    );
}
