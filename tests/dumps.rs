//! Dump, snapshot and picker sources against real programs: a MariaDB server and a PostgreSQL
//! cluster started here on Unix sockets (installed by scripts/setup-tests.sh), Subversion
//! repositories, a failing dump program, an s3-sysbackup snapshotter and a picker.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::databases::*;
use common::*;

/// A local-store configuration around `sets`.
fn config(dir: &Path, sets: &str) -> PathBuf {
    ConfigBuilder::new(dir).line(sets).build()
}

fn s3nap_env(conf: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_s3nap"));
    cmd.arg("-c").arg(conf).args(args).stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    output_within(&mut cmd, DEADLINE)
}

#[test]
fn mariadb_database_recovers_through_restore() {
    let tmp = tempfile::tempdir().unwrap();
    let db = Mariadb::start(tmp.path());
    db.sql(
        "CREATE DATABASE shop;
         USE shop;
         CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(40), picture BLOB);
         CREATE TABLE audit (id INT AUTO_INCREMENT PRIMARY KEY, item INT);
         CREATE TRIGGER items_audit AFTER INSERT ON items FOR EACH ROW INSERT INTO audit (item) VALUES (NEW.id);
         CREATE PROCEDURE item_count() SELECT COUNT(*) FROM items;
         INSERT INTO items SELECT seq, CONCAT('item ', seq), RANDOM_BYTES(64) FROM seq_1_to_10000;",
    );
    let checksums = db.sql("CHECKSUM TABLE shop.items, shop.audit");
    assert!(db.sql("SELECT COUNT(*) FROM shop.audit").trim() == "10000");

    let conf = config(
        tmp.path(),
        &format!("MySQLOptions {}\nMySQL shop\n", db.defaults()),
    );
    let out = s3nap_env(&conf, &[], &[]);
    assert!(out.status.success(), "{}", stderr(&out));

    db.sql("DROP DATABASE shop");
    let out = s3nap_env(&conf, &["recover", "mysql/shop", "--restore"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(db.sql("CHECKSUM TABLE shop.items, shop.audit"), checksums);
    assert_eq!(
        db.sql("SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA='shop'")
            .trim(),
        "1"
    );
    assert_eq!(db.sql("CALL shop.item_count()").trim(), "10000");

    // The manifest records the command (with no secret in it), its exit status and restore.
    let manifest = find_files(tmp.path(), ".manifest.json");
    let m: serde_json::Value = serde_json::from_slice(&fs::read(&manifest[0]).unwrap()).unwrap();
    assert_eq!(m["source"]["type"], "program");
    assert_eq!(m["source"]["kind"], "mysql");
    assert_eq!(m["source"]["exit_status"], 0);
    assert!(m["source"]["command"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a == "--single-transaction"));
    assert_eq!(m["archive"]["format"], "sql");
}

struct Postgres {
    bin: PathBuf,
    data: PathBuf,
    socket_dir: PathBuf,
}

impl Postgres {
    fn start(dir: &Path) -> Postgres {
        let bin = fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL server (scripts/setup-tests.sh installs it)")
            .map(|e| e.unwrap().path().join("bin"))
            .filter(|p| p.join("initdb").exists())
            .max()
            .expect("initdb");
        // The server refuses to run as root: everything belongs to the postgres user.
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
        let base = dir.join("pg");
        fs::create_dir_all(&base).unwrap();
        run(Command::new("chown").args(["postgres:postgres"]).arg(&base));
        let data = base.join("data");
        let as_postgres = |program: &Path| {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        };
        run(as_postgres(&bin.join("initdb"))
            .args(["-A", "trust", "-U", "postgres", "-D"])
            .arg(&data));
        run(as_postgres(&bin.join("pg_ctl"))
            .arg("-D")
            .arg(&data)
            .arg("-o")
            .arg(format!("-k {} -c listen_addresses=", base.display()))
            .arg("-l")
            .arg(base.join("log"))
            .args(["-w", "start"]));
        Postgres {
            bin,
            data,
            socket_dir: base,
        }
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("PGHOST", self.socket_dir.display().to_string()),
            ("PGUSER", "postgres".into()),
        ]
    }

    fn psql(&self, db: &str, sql: &str) -> String {
        let mut c = Command::new(self.bin.join("psql"));
        c.args([
            "-X",
            "-q",
            "-t",
            "-A",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            db,
            "-c",
            sql,
        ]);
        for (k, v) in self.env() {
            c.env(k, v);
        }
        run(&mut c)
    }

    /// pg_dump of `db`, without the random token lines (`\restrict KEY`) each dump gets.
    fn dump(&self, db: &str) -> String {
        let mut c = Command::new(self.bin.join("pg_dump"));
        c.arg(db);
        for (k, v) in self.env() {
            c.env(k, v);
        }
        run(&mut c)
            .lines()
            .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "stop"])
            .output();
    }
}

#[test]
fn postgresql_database_and_cluster_recover() {
    let tmp = tempfile::tempdir().unwrap();
    let pg = Postgres::start(tmp.path());
    pg.psql("postgres", "CREATE DATABASE app");
    pg.psql(
        "app",
        "CREATE TABLE items (id int PRIMARY KEY, name text, picture bytea);
         CREATE TABLE audit (id serial PRIMARY KEY, item int);
         CREATE FUNCTION audit_item() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN INSERT INTO audit (item) VALUES (NEW.id); RETURN NEW; END $$;
         CREATE TRIGGER items_audit AFTER INSERT ON items FOR EACH ROW EXECUTE FUNCTION audit_item();
         INSERT INTO items SELECT g, 'item ' || g, decode(md5(g::text), 'hex') FROM generate_series(1, 10000) g;",
    );
    let before = pg.dump("app");
    let env: Vec<(&str, String)> = pg.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();

    let conf = config(tmp.path(), "PostgreSQL app\nPostgreSQL all\n");
    let out = s3nap_env(&conf, &[], &env);
    assert!(out.status.success(), "{}", stderr(&out));

    // pg_dump of one database, restored through psql.
    pg.psql("postgres", "DROP DATABASE app");
    let out = s3nap_env(&conf, &["recover", "pgsql/app", "--restore"], &env);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        pg.dump("app") == before,
        "pg_dump of the restored database differs"
    );
    assert!(before.contains("CREATE TRIGGER items_audit") && before.contains("10000\titem 10000"));

    // pg_dumpall of the cluster.
    pg.psql("postgres", "DROP DATABASE app");
    let out = s3nap_env(&conf, &["recover", "pgsql/all", "--restore"], &env);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        pg.dump("app") == before,
        "pg_dump after restoring pg_dumpall differs"
    );
}

#[test]
fn subversion_chain_loads_into_a_new_repository() {
    let tmp = tempfile::tempdir().unwrap();
    let repos = tmp.path().join("repos");
    let repo = repos.join("project");
    fs::create_dir_all(&repos).unwrap();
    run(Command::new("svnadmin").arg("create").arg(&repo));
    fs::write(repos.join("not-a-repo.txt"), "ignored by SubversionDir").unwrap();
    let wc = tmp.path().join("wc");
    run(Command::new("svn")
        .args(["checkout", "-q"])
        .arg(format!("file://{}", repo.display()))
        .arg(&wc));
    for i in 0..30 {
        svn_commit(
            &wc,
            &format!("dir{}/file{}.txt", i % 3, i % 7),
            &format!("commit {i}\n"),
        );
    }
    let conf = config(
        tmp.path(),
        &format!(
            // SubversionDir in a cycle of its own: the same repository, a distinct set.
            "<Subversion {}>\n  Diffs 6\n</Subversion>\n<Cycle all-repos>\n  SubversionDir {}\n</Cycle>\n",
            repo.display(),
            repos.display()
        ),
    );
    let c = conf.to_str().unwrap();
    // 2026-01-01 is a FULL day of a 2×(6+1) SimpleCycle; the next day a DIFF.
    let out = s3nap(&["-c", c, "--now", "2026-01-01T03:00:00Z"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    for i in 30..50 {
        svn_commit(
            &wc,
            &format!("dir{}/file{}.txt", i % 4, i % 5),
            &format!("commit {i}\n"),
        );
    }
    let out = s3nap(&["-c", c, "--now", "2026-01-02T03:00:00Z", "--json"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let outcomes: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let set = format!("svn{}", repo.display());
    let diff = outcomes
        .iter()
        .find(|o| o["set"] == set.as_str() && o["cycle"] == "-" && o["kind"] == "diff");
    assert!(diff.is_some(), "{outcomes:?}");
    // SubversionDir found the one real repository (a FULL-only set of its own).
    assert_eq!(
        outcomes.iter().filter(|o| o["set"] == set.as_str()).count(),
        2,
        "{outcomes:?}"
    );

    // A day without commits: a valid, empty DIFF.
    let out = s3nap(&["-c", c, "--now", "2026-01-03T03:00:00Z"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));

    let recovered = s3nap(&["-c", c, "recover", &set], &[]);
    assert!(recovered.status.success(), "{}", stderr(&recovered));
    let copy = tmp.path().join("copy");
    run(Command::new("svnadmin").arg("create").arg(&copy));
    pipe(
        Command::new("svnadmin").args(["load", "-q"]).arg(&copy),
        &recovered.stdout,
    );
    let look = |r: &Path, what: &str| run(Command::new("svnlook").arg(what).arg(r));
    assert_eq!(look(&copy, "youngest").trim(), "50");
    assert_eq!(look(&copy, "youngest"), look(&repo, "youngest"));
    assert_eq!(look(&copy, "tree"), look(&repo, "tree"));
}

#[test]
fn a_failing_dump_commits_nothing_and_says_why() {
    let tmp = tempfile::tempdir().unwrap();
    let flag = tmp.path().join("broken");
    let script = tmp.path().join("dump.sh");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\nif [ -e {} ]; then head -c 300000 /dev/zero; echo 'disk on fire' >&2; exit 2; fi\necho 'good data'\n",
            flag.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    let conf = config(
        tmp.path(),
        &format!(
            "<Command nightly>\n  Run {}\n</Command>\n",
            script.display()
        ),
    );
    let c = conf.to_str().unwrap();
    assert!(s3nap(&["-c", c, "--now", "2026-01-01T03:00:00Z"], &[])
        .status
        .success());

    fs::write(&flag, "").unwrap();
    let out = s3nap(&["-c", c, "--now", "2026-01-02T03:00:00Z"], &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&script.display().to_string()) && err.contains("exited with status 2"),
        "{err}"
    );
    assert!(err.contains("disk on fire"), "shows its stderr: {err}");
    assert_eq!(
        find_files(tmp.path(), ".manifest.json").len(),
        1,
        "no manifest for the failed run"
    );
    assert!(fs::read_dir(tmp.path().join("store/.s3nap-uploads"))
        .map_or(true, |mut d| d.next().is_none()));

    let out = s3nap(&["-c", c, "recover", "cmd/nightly"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout, b"good data\n");

    // A program that succeeds without any data is no backup either.
    fs::write(&script, "#!/bin/sh\nexit 0\n").unwrap();
    let out = s3nap(&["-c", c, "-f", "--now", "2026-01-03T03:00:00Z"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("produced no data"),
        "{}",
        stderr(&out)
    );
}

/// `recover --restore` reports what went wrong first: a damaged archive is not the restore
/// command's failure, a command that stops reading is, and a recorded empty command is none.
#[test]
fn recover_restore_blames_the_archive_not_the_restore_command() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let script = dir.join("dump.sh");
    // 2 MB of lines, then the marker a careful restore checks for.
    fs::write(
        &script,
        "#!/bin/sh\nyes 'row of data' | head -n 125000\necho end\n",
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    let checked = dir.join("check.sh");
    fs::write(&checked, "#!/bin/sh\ntail -n 1 | grep -qx end\n").unwrap();
    fs::set_permissions(&checked, fs::Permissions::from_mode(0o755)).unwrap();
    let conf = config(
        dir,
        &format!(
            "<Command db>\n  Run {}\n  Restore {}\n</Command>\n<Command plain>\n  Run {}\n</Command>\n",
            script.display(),
            checked.display(),
            script.display()
        ),
    );
    let c = conf.to_str().unwrap();
    let out = s3nap(&["-c", c], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = s3nap(&["-c", c, "recover", "cmd/db", "--restore"], &[]);
    assert!(
        out.status.success(),
        "intact, it restores: {}",
        stderr(&out)
    );

    // A truncated archive: the restore command gets nothing and fails, but the news is the
    // archive.
    let archive = find_files(&dir.join("store"), ".full.dump.zst")
        .into_iter()
        .find(|p| p.to_string_lossy().contains("/cmd/db/"))
        .unwrap_or_else(|| panic!("{:?}", find_files(&dir.join("store"), "")));
    let good = fs::read(&archive).unwrap();
    fs::write(&archive, &good[..good.len() / 2]).unwrap();
    let out = s3nap(&["-c", c, "recover", "cmd/db", "--restore"], &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("truncated") && err.contains("cmd/db"),
        "names the damaged object: {err}"
    );
    assert!(
        err.find("truncated") < err.find("restore command"),
        "the archive first: {err}"
    );
    assert!(!err.contains("internal error"), "{err}");
    fs::write(&archive, &good).unwrap();

    // A restore command that stops reading fails the restore, whatever its exit status.
    let quitter = dir.join("quit.sh");
    for (code, needle) in [
        (0, "exited 0 without reading all the data"),
        (4, "exit status: 4"),
    ] {
        fs::write(&quitter, format!("#!/bin/sh\nexec <&-\nexit {code}\n")).unwrap();
        fs::set_permissions(&quitter, fs::Permissions::from_mode(0o755)).unwrap();
        let conf = config(
            dir,
            &format!(
                "<Command db>\n  Run {}\n  Restore {}\n</Command>\n",
                script.display(),
                quitter.display()
            ),
        );
        let out = s3nap(
            &[
                "-c",
                conf.to_str().unwrap(),
                "recover",
                "cmd/db",
                "--restore",
            ],
            &[],
        );
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(needle), "{err}");
        assert!(err.contains("the reader closed the output"), "{err}");
    }

    // A manifest that records an empty restore command: no command, not a crash.
    let conf = config(
        dir,
        &format!("<Command plain>\n  Run {}\n</Command>\n", script.display()),
    );
    let manifest = find_files(&dir.join("store"), ".manifest.json")
        .into_iter()
        .find(|p| p.to_string_lossy().contains("/cmd/plain/"))
        .unwrap();
    let mut m: serde_json::Value = serde_json::from_slice(&fs::read(&manifest).unwrap()).unwrap();
    m["source"]["restore"] = serde_json::json!([]);
    fs::write(&manifest, serde_json::to_vec(&m).unwrap()).unwrap();
    let out = s3nap(
        &[
            "-c",
            conf.to_str().unwrap(),
            "recover",
            "cmd/plain",
            "--restore",
        ],
        &[],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("no restore command for cmd/plain"), "{err}");
}

#[test]
fn snapshotter_restore_through_and_picker_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // s3-sysbackup's snapshotter protocol: data on the descriptor given as the only argument,
    // the description (with its restore command) on stdout.
    let snapshots = dir.join("snapshots.d");
    fs::create_dir_all(&snapshots).unwrap();
    let restored = dir.join("restored-config");
    let snap = snapshots.join("router-config");
    fs::write(
        &snap,
        format!(
            "#!/bin/sh\necho 'running configuration of the router'\necho \"::restore-through:: /bin/sh -c 'cat > {}'\"\nprintf 'interface eth0\\n mtu 9000\\n' >&\"$1\"\n",
            restored.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&snap, fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(
        snapshots.join("README"),
        "not executable: not a snapshotter",
    )
    .unwrap();

    // A picker names exactly the files to keep.
    let tree = dir.join("etc");
    fs::create_dir_all(tree.join("app/conf.d")).unwrap();
    fs::set_permissions(tree.join("app"), fs::Permissions::from_mode(0o750)).unwrap();
    fs::write(tree.join("app/conf.d/main.conf"), "main\n").unwrap();
    fs::write(tree.join("app/conf.d/skipped.conf"), "not picked\n").unwrap();
    std::os::unix::fs::symlink("conf.d/main.conf", tree.join("app/current")).unwrap();
    let picker = dir.join("pick.sh");
    fs::write(
        &picker,
        format!(
            "#!/bin/sh\necho {0}/app/conf.d/main.conf\necho {0}/app/current\n",
            tree.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&picker, fs::Permissions::from_mode(0o755)).unwrap();

    let conf = config(
        dir,
        &format!(
            "SnapshotsDir {}\n<Picker etc>\n  Run {}\n</Picker>\n",
            snapshots.display(),
            picker.display()
        ),
    );
    let c = conf.to_str().unwrap();
    let out = s3nap(&["-c", c, "--json"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        2,
        "README is not a snapshotter"
    );

    let out = s3nap(&["-c", c, "recover", "cmd/router-config", "--restore"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        fs::read_to_string(&restored).unwrap(),
        "interface eth0\n mtu 9000\n"
    );
    let manifest = find_files(dir, ".manifest.json")
        .into_iter()
        .find(|p| p.to_string_lossy().contains("router-config"))
        .unwrap();
    let m: serde_json::Value = serde_json::from_slice(&fs::read(manifest).unwrap()).unwrap();
    assert_eq!(
        m["source"]["description"][0],
        "running configuration of the router"
    );

    let out = s3nap(&["-c", c, "recover", "picker/etc"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let dest = dir.join("picked");
    untar(&out.stdout, &dest);
    let got = dest.join(tree.strip_prefix("/").unwrap());
    assert_eq!(
        fs::read_to_string(got.join("app/conf.d/main.conf")).unwrap(),
        "main\n"
    );
    assert_eq!(
        fs::read_link(got.join("app/current")).unwrap(),
        Path::new("conf.d/main.conf")
    );
    assert!(
        !got.join("app/conf.d/skipped.conf").exists(),
        "only picked paths"
    );
    assert_eq!(
        fs::metadata(got.join("app")).unwrap().permissions().mode() & 0o7777,
        0o750,
        "parent metadata"
    );
}

/// What s3nap called a DiffDir file before files recorded their set: every character of the set
/// and the cycle outside `[A-Za-z0-9.-]` as `_` (so `/srv/a_b` and `/srv/a/b` shared one).
fn legacy_name(set: &str, cycle: &str, ext: &str) -> String {
    let safe = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    format!("{}@{}.{ext}", safe(set), safe(cycle))
}

/// Two repositories whose set names differ only where old DiffDir names said `_`:
/// `<dir>/srv/a/b` with `small` commits and `<dir>/srv/a_b` with `large`, each checked out.
struct TwinRepos {
    slash: PathBuf,
    underscore: PathBuf,
    slash_wc: PathBuf,
    underscore_wc: PathBuf,
    conf: PathBuf,
}

fn twin_repos(dir: &Path, small: usize, large: usize) -> TwinRepos {
    let slash = dir.join("srv/a/b");
    let underscore = dir.join("srv/a_b");
    fs::create_dir_all(slash.parent().unwrap()).unwrap();
    let mut wcs = Vec::new();
    for (repo, commits, wc) in [
        (&slash, small, "wc-slash"),
        (&underscore, large, "wc-under"),
    ] {
        run(Command::new("svnadmin").arg("create").arg(repo));
        let wc = dir.join(wc);
        run(Command::new("svn")
            .args(["checkout", "-q"])
            .arg(format!("file://{}", repo.display()))
            .arg(&wc));
        for i in 0..commits {
            svn_commit(&wc, &format!("f{}.txt", i % 2), &format!("commit {i}\n"));
        }
        wcs.push(wc);
    }
    // The slash set first: in one run, the underscore set's files were written last.
    let conf = config(
        dir,
        &format!(
            "Subversion {}\nSubversion {}\n",
            slash.display(),
            underscore.display()
        ),
    );
    let underscore_wc = wcs.pop().unwrap();
    TwinRepos {
        slash,
        underscore,
        slash_wc: wcs.pop().unwrap(),
        underscore_wc,
        conf,
    }
}

/// One run's `--json` outcomes by set name.
fn outcomes(out: &Output) -> std::collections::BTreeMap<String, serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|o| (o["set"].as_str().unwrap().to_string(), o))
        .collect()
}

/// `s3nap recover SET | svnadmin load` into a new repository: its youngest revision and tree.
fn recovered(dir: &Path, conf: &Path, set: &str) -> (String, String) {
    let out = s3nap(&["-c", conf.to_str().unwrap(), "recover", set], &[]);
    assert!(out.status.success(), "{set}: {}", stderr(&out));
    let copy = dir.join(format!("copy-{}", set.replace('/', "_")));
    let _ = fs::remove_dir_all(&copy);
    run(Command::new("svnadmin").arg("create").arg(&copy));
    pipe(
        Command::new("svnadmin").args(["load", "-q"]).arg(&copy),
        &out.stdout,
    );
    look(&copy)
}

fn look(repo: &Path) -> (String, String) {
    let svnlook = |what: &str| run(Command::new("svnlook").arg(what).arg(repo));
    (svnlook("youngest").trim().to_string(), svnlook("tree"))
}

#[test]
fn subversion_sets_whose_names_differ_only_by_slash_and_underscore_keep_their_own_revisions() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let t = twin_repos(dir, 3, 5);
    let c = t.conf.to_str().unwrap();
    let out = s3nap(&["-c", c, "--now", "2026-01-01T03:00:00Z"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Two new revisions in the repository that is behind: the other's revision is 5.
    svn_commit(&t.slash_wc, "g.txt", "four\n");
    svn_commit(&t.slash_wc, "g.txt", "five\n");
    svn_commit(&t.underscore_wc, "g.txt", "six\n");
    let out = s3nap(&["-c", c, "--now", "2026-01-02T03:00:00Z", "--json"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let day2 = outcomes(&out);
    for repo in [&t.slash, &t.underscore] {
        let set = format!("svn{}", repo.display());
        assert_eq!(day2[&set]["kind"], "diff", "{day2:?}");
        assert_eq!(day2[&set]["warnings"], 0, "{day2:?}");
        assert_eq!(recovered(dir, &t.conf, &set), look(repo), "{set}");
    }
    assert_eq!(look(&t.slash).0, "5");
    assert_eq!(look(&t.underscore).0, "6");
}

#[test]
fn old_revision_files_count_only_where_the_base_manifest_confirms_them() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let t = twin_repos(dir, 3, 5);
    let c = t.conf.to_str().unwrap();
    let out = s3nap(&["-c", c, "--now", "2026-01-01T03:00:00Z", "--json"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let run = outcomes(&out)[&format!("svn{}", t.slash.display())]["run"]
        .as_str()
        .unwrap()
        .to_string();
    // DiffDir as the old version left it: one shared file, the underscore set's revision.
    let state = dir.join("state");
    for f in fs::read_dir(&state).unwrap() {
        let f = f.unwrap().path();
        if f.extension().is_some_and(|e| e == "svnrev") {
            fs::remove_file(f).unwrap();
        }
    }
    let shared = legacy_name(&format!("svn{}", t.slash.display()), "-", "svnrev");
    assert_eq!(
        shared,
        legacy_name(&format!("svn{}", t.underscore.display()), "-", "svnrev")
    );
    fs::write(state.join(&shared), format!("{run} 5\n")).unwrap();

    svn_commit(&t.slash_wc, "g.txt", "four\n");
    svn_commit(&t.slash_wc, "g.txt", "five\n");
    svn_commit(&t.underscore_wc, "g.txt", "six\n");
    // -t says in advance what the run does.
    let plan = s3nap(&["-c", c, "--now", "2026-01-02T03:00:00Z", "-t"], &[]);
    assert!(plan.status.success(), "{}", stderr(&plan));
    let text = String::from_utf8_lossy(&plan.stdout).into_owned();
    let section = |repo: &Path| {
        text.split(&format!("svn{} [cycle -]", repo.display()))
            .nth(1)
            .unwrap()
            .split("\n\n")
            .next()
            .unwrap()
            .to_string()
    };
    let slash_plan = section(&t.slash);
    assert!(slash_plan.contains("due: FULL"), "{slash_plan}");
    assert!(slash_plan.contains("warning:"), "{slash_plan}");
    assert!(slash_plan.contains(".full.svndump"), "{slash_plan}");
    let under_plan = section(&t.underscore);
    assert!(under_plan.contains("due: DIFF"), "{under_plan}");
    assert!(!under_plan.contains("warning"), "{under_plan}");

    let out = s3nap(&["-c", c, "--now", "2026-01-02T03:00:00Z", "--json"], &[]);
    // The slash set cannot prove the shared file is its own: a FULL, with a warning.
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let day2 = outcomes(&out);
    let slash = &day2[&format!("svn{}", t.slash.display())];
    assert_eq!(slash["kind"], "full", "{day2:?}");
    assert_eq!(slash["warnings"], 1, "{day2:?}");
    // The underscore set's own revision, confirmed by its manifest, migrates.
    let under = &day2[&format!("svn{}", t.underscore.display())];
    assert_eq!(under["kind"], "diff", "{day2:?}");
    assert_eq!(under["warnings"], 0, "{day2:?}");
    assert!(
        !state.join(&shared).exists(),
        "the old file stays after migration"
    );
    for repo in [&t.slash, &t.underscore] {
        let set = format!("svn{}", repo.display());
        assert_eq!(recovered(dir, &t.conf, &set), look(repo), "{set}");
    }

    // From now on both DIFF on their own files.
    svn_commit(&t.slash_wc, "g.txt", "six\n");
    let out = s3nap(&["-c", c, "--now", "2026-01-03T03:00:00Z", "--json"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for (set, o) in outcomes(&out) {
        assert_eq!(o["kind"], "diff", "{set}: {o}");
    }
    for repo in [&t.slash, &t.underscore] {
        let set = format!("svn{}", repo.display());
        assert_eq!(recovered(dir, &t.conf, &set), look(repo), "{set}");
    }
}
