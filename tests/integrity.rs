//! Damaged archives: no byte that was not verified against the manifest reaches the output.
//!
//! A backup on the local directory store (real GnuPG, GNU tar, zstd) has one byte of its stored
//! archive flipped in the middle; `s3nap recover SET | tar -x` must then stop where the damage
//! starts — tar sees a truncated archive and fails, s3nap names the object and exits 2 — and
//! every file tar wrote is a prefix of the original: cut short, never wrong. The same with
//! `--identity` (sequoia) and with `--gpg` (the gpg child).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Waits for `child`, failing the test if it takes longer than `limit`.
fn wait(child: &mut std::process::Child, what: &str, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("{what} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Fixture {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    tree: PathBuf,
    store: PathBuf,
    conf: PathBuf,
    gpg: Gpg,
}

/// Six 6 MiB incompressible files and a few small ones, backed up once: the archive spans
/// several 8 MiB ranges, and is larger than what sequoia holds back until the MDC is checked
/// (25 MiB), so decryption really streams.
fn backed_up() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let tree = dir.join("tree");
    fs::create_dir_all(tree.join("small")).unwrap();
    for i in 0..6u64 {
        fs::write(
            tree.join(format!("big{i}.bin")),
            random_bytes(6 << 20, 100 + i),
        )
        .unwrap();
        fs::write(
            tree.join(format!("small/note{i}.txt")),
            format!("note {i}\n"),
        )
        .unwrap();
    }
    let gpg = Gpg::new(&dir);
    let store = dir.join("store");
    let conf = ConfigBuilder::new(&dir)
        .bucket(store.display())
        .gpg_recipient(&gpg.fingerprint, &gpg.cert)
        .directory(&tree)
        .build();
    let out = s3nap(&["-c", conf.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    Fixture {
        _tmp: tmp,
        dir,
        tree,
        store,
        conf,
        gpg,
    }
}

impl Fixture {
    fn archive(&self) -> PathBuf {
        let found = find_files(&self.store, ".tar.zst.gpg");
        assert_eq!(found.len(), 1, "{found:?}");
        found[0].clone()
    }

    /// `s3nap recover SET ARGS | tar -x -C dest` as two processes joined by a pipe: returns
    /// (s3nap's status, its stderr, tar's status).
    fn recover_into_tar(
        &self,
        args: &[&str],
        dest: &Path,
    ) -> (std::process::ExitStatus, String, std::process::ExitStatus) {
        fs::create_dir_all(dest).unwrap();
        let mut recover = Command::new(env!("CARGO_BIN_EXE_s3nap"))
            .args(["-c", self.conf.to_str().unwrap(), "recover"])
            .arg(self.tree.to_str().unwrap())
            .args(args)
            .env("GNUPGHOME", &self.gpg.home)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut tar = Command::new("tar")
            .args(["-x", "-C"])
            .arg(dest)
            .stdin(Stdio::from(recover.stdout.take().unwrap()))
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut err = recover.stderr.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut err, &mut text).unwrap();
            text
        });
        let limit = DEADLINE;
        let tar_status = wait(&mut tar, "tar -x", limit);
        let status = wait(&mut recover, "s3nap recover", limit);
        (status, reader.join().unwrap(), tar_status)
    }
}

/// Every regular file under `got` is a prefix of the same file under `want`; returns how many
/// files of `want` are missing or shorter in `got`.
fn cut_short_never_wrong(want: &Path, got: &Path) -> usize {
    let mut short = 0;
    for entry in walk(want) {
        let rel = entry.strip_prefix(want).unwrap();
        let original = fs::read(&entry).unwrap();
        match fs::read(got.join(rel)) {
            Ok(extracted) => {
                assert!(
                    original.starts_with(&extracted),
                    "{} holds bytes that are not the original's",
                    rel.display()
                );
                if extracted.len() < original.len() {
                    short += 1;
                }
            }
            Err(_) => short += 1,
        }
    }
    short
}

fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(root).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn a_damaged_byte_never_reaches_tar_with_either_decryptor() {
    let f = backed_up();
    let archive = f.archive();
    let good = fs::read(&archive).unwrap();
    assert!(good.len() > 4 * (8 << 20), "spans several ranges");
    // In the second range, and more than sequoia's 25 MiB hold-back before the end, so that
    // without range checks the damaged plaintext would be passed on before any check fails.
    let mut bad = good.clone();
    bad[10 << 20] ^= 0x40;
    fs::write(&archive, &bad).unwrap();
    let key = archive
        .strip_prefix(&f.store)
        .unwrap()
        .display()
        .to_string();

    let secret = f.gpg.secret.to_str().unwrap().to_string();
    for (name, args) in [
        ("identity", vec!["--identity", secret.as_str()]),
        ("gpg", vec!["--gpg"]),
    ] {
        let dest = f.dir.join(format!("restored-{name}"));
        let (status, err, tar) = f.recover_into_tar(&args, &dest);
        // What tar wrote first: the property users rely on.
        let extracted = dest.join(f.tree.strip_prefix("/").unwrap());
        let short = if extracted.exists() {
            cut_short_never_wrong(&f.tree, &extracted)
        } else {
            walk(&f.tree).len()
        };
        assert!(short > 0, "{name}: the stream must stop at the damage");
        assert!(!tar.success(), "{name}: tar must see a truncated archive");
        assert_eq!(status.code(), Some(2), "{name}: {err}");
        assert!(
            err.contains(&key) && err.contains("range"),
            "{name}: names the object and the range: {err}"
        );
    }

    // Put back, it recovers whole: the failure was the object's, not the tool's.
    fs::write(&archive, &good).unwrap();
    let dest = f.dir.join("restored-good");
    let (status, err, tar) = f.recover_into_tar(&["--identity", &secret], &dest);
    assert!(status.success() && tar.success(), "{err}");
    assert_same_tree(&f.tree, &dest.join(f.tree.strip_prefix("/").unwrap()));
}

#[test]
fn damaged_range_hashes_stop_recovery_before_any_byte() {
    let f = backed_up();
    let hashes = find_files(&f.store, ".full.sha256");
    assert_eq!(hashes.len(), 1, "one range hash object per run: {hashes:?}");
    let text = fs::read_to_string(&hashes[0]).unwrap();
    assert_eq!(text.lines().count(), 5, "36 MiB of archive in 8 MiB ranges");
    // The hash object is checked against the manifest too: a replaced hash list is refused.
    fs::write(&hashes[0], text.replacen('0', "1", 1)).unwrap();
    let dest = f.dir.join("restored");
    let secret = f.gpg.secret.to_str().unwrap();
    let (status, err, tar) = f.recover_into_tar(&["--identity", secret], &dest);
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(
        err.contains(".full.sha256") && err.contains("damaged"),
        "{err}"
    );
    assert!(!tar.success());
    assert_eq!(walk(&dest).len(), 0, "nothing was extracted");
}
