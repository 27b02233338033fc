//! Round trips through real components: s3nap backs a tree up to a real S3 server (or the
//! local store), then `s3nap recover | tar -x` (GNU tar) and the stock tools
//! (`gpg --decrypt | zstd -d | tar -x`) must both give the same tree back.

mod common;

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use common::*;

/// The acceptance tree: empty, 1-byte, 20 MiB random and (when `big`) 200 MiB compressible
/// files, nested directories, symlinks, a hard link pair, 150+ byte and non-UTF-8 names, modes
/// 0600/0755/4755, fixed mtimes.
fn make_tree(root: &Path, big: bool) {
    fs::create_dir_all(root.join("a/b/c/d")).unwrap();
    fs::write(root.join("empty"), b"").unwrap();
    fs::write(root.join("one"), b"x").unwrap();
    fs::write(root.join("a/b/random"), random_bytes(20 << 20, 7)).unwrap();
    if big {
        let mut f = File::create(root.join("a/compressible.log")).unwrap();
        let line = b"2026-11-22T03:15:00Z host kernel: the same log line, over and over again\n";
        let mut block = Vec::with_capacity(1 << 20);
        while block.len() + line.len() <= 1 << 20 {
            block.extend_from_slice(line);
        }
        for _ in 0..200 {
            f.write_all(&block).unwrap();
        }
    }
    fs::write(root.join("a/b/c/d/deep.txt"), b"deep\n").unwrap();
    let long = "n".repeat(160);
    fs::write(root.join("a").join(&long), b"long name\n").unwrap();
    let long_dir = root.join("d".repeat(120)).join("e".repeat(120));
    fs::create_dir_all(&long_dir).unwrap();
    fs::write(long_dir.join("f".repeat(100)), b"long path\n").unwrap();
    let raw = std::ffi::OsStr::from_bytes(b"caf\xe9-\xff.bin");
    fs::write(root.join(raw), b"latin-1 name\n").unwrap();
    symlink("b/c/d/deep.txt", root.join("a/link-rel")).unwrap();
    symlink("/nonexistent/target", root.join("dangling")).unwrap();
    symlink("x".repeat(150), root.join("long-link")).unwrap();
    fs::write(root.join("hard1"), b"shared inode\n").unwrap();
    fs::hard_link(root.join("hard1"), root.join("a/hard2")).unwrap();
    for (name, mode) in [("private", 0o600), ("script", 0o755), ("setuid", 0o4755)] {
        fs::write(root.join(name), format!("{name}\n")).unwrap();
        fs::set_permissions(root.join(name), fs::Permissions::from_mode(mode)).unwrap();
    }
    fs::set_permissions(root.join("a/b/c"), fs::Permissions::from_mode(0o700)).unwrap();
    let past = SystemTime::UNIX_EPOCH + Duration::from_secs(1_500_000_000);
    for name in ["one", "private", "a/b/c/d/deep.txt"] {
        File::options()
            .write(true)
            .open(root.join(name))
            .unwrap()
            .set_modified(past)
            .unwrap();
    }
}

/// Where `tar -x -C dest` puts a tree backed up from absolute `root`.
fn extracted(dest: &Path, root: &Path) -> PathBuf {
    dest.join(root.strip_prefix("/").unwrap())
}

struct Fixture {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    tree: PathBuf,
    gpg: Gpg,
}

fn fixture(big: bool) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let tree = dir.join("tree");
    make_tree(&tree, big);
    let gpg = Gpg::new(&dir);
    Fixture {
        _dir: tmp,
        dir,
        tree,
        gpg,
    }
}

fn s3_config(f: &Fixture, server: &S3Server, bucket: &str) -> PathBuf {
    ConfigBuilder::new(&f.dir)
        .s3(server, &format!("{bucket}/backups"))
        .gpg(&f.gpg)
        .host(Some("testhost"))
        .line("# test configuration\nChunkSize 5MiB")
        .directory(&f.tree)
        .build()
}

fn recover(conf: &Path, args: &[&str], env: &[(&str, &Path)]) -> Vec<u8> {
    let mut all = vec!["-c", conf.to_str().unwrap(), "recover"];
    all.extend_from_slice(args);
    let out = s3nap(&all, env);
    assert!(out.status.success(), "recover failed: {}", stderr(&out));
    out.stdout
}

#[test]
fn s3_round_trip_and_stock_tool_recovery() {
    let f = fixture(true);
    let server = S3Server::start();
    server.create_bucket("roundtrip");
    let conf = s3_config(&f, &server, "roundtrip");
    let conf_s = conf.to_str().unwrap();

    let out = s3nap(&["-c", conf_s], &[]);
    assert!(out.status.success(), "backup failed: {}", stderr(&out));
    assert_eq!(out.status.code(), Some(0));

    let keys = server.keys("roundtrip");
    let set_prefix = format!("backups/testhost/dir{}/", f.tree.display());
    let archive = keys
        .iter()
        .find(|k| k.ends_with(".full.tar.zst.gpg"))
        .expect("archive object")
        .clone();
    let manifest_key = keys
        .iter()
        .find(|k| k.ends_with(".full.manifest.json"))
        .expect("manifest object")
        .clone();
    assert!(archive.starts_with(&set_prefix), "{archive}");
    assert_eq!(keys.len(), 3, "archive, range hashes, manifest: {keys:?}");
    assert!(server.open_uploads("roundtrip").is_empty());

    // The manifest describes the stored bytes exactly.
    let manifest: serde_json::Value =
        serde_json::from_slice(&server.get("roundtrip", &manifest_key)).unwrap();
    let stored = server.get("roundtrip", &archive);
    assert_eq!(manifest["archive"]["stored_size"], stored.len() as u64);
    use sha2::Digest;
    assert_eq!(
        manifest["archive"]["sha256"],
        hex::encode(sha2::Sha256::digest(&stored))
    );
    assert_eq!(manifest["archive"]["recipients"][0], f.gpg.fingerprint);
    assert!(
        (stored.len() as u64) < 40 << 20,
        "200 MiB of log lines compress: stored {} bytes",
        stored.len()
    );
    assert!(manifest["archive"]["plaintext_size"].as_u64().unwrap() > 220 << 20);

    // s3nap recover | tar -x, with the secret key from a file.
    let stream = recover(
        &conf,
        &[
            f.tree.to_str().unwrap(),
            "--identity",
            f.gpg.secret.to_str().unwrap(),
        ],
        &[],
    );
    let dest = f.dir.join("restored");
    untar(&stream, &dest);
    assert_same_tree(&f.tree, &extracted(&dest, &f.tree));

    // Without s3nap: gpg --decrypt | zstd -d | tar -x on the raw object.
    let plain = f.gpg.decrypt(&stored);
    let tar = pipe(Command::new("zstd").args(["-d", "-c"]), &plain);
    let dest2 = f.dir.join("stock");
    untar(&tar, &dest2);
    assert_same_tree(&f.tree, &extracted(&dest2, &f.tree));

    // Through gpg (--gpg, the default without --identity), by set name.
    let set = format!("dir{}", f.tree.display());
    let stream = recover(&conf, &[&set, "--gpg"], &[("GNUPGHOME", &f.gpg.home)]);
    let dest3 = f.dir.join("via-gpg");
    untar(&stream, &dest3);
    assert_same_tree(&f.tree, &extracted(&dest3, &f.tree));

    // list shows the run, as a table and as JSON.
    let out = s3nap(&["-c", conf_s, "list", "--json"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["set"], set.as_str());
    assert_eq!(listed[0]["kind"], "full");
    assert_eq!(listed[0]["stored_size"], stored.len() as u64);
    let out = s3nap(&["-c", conf_s, "list"], &[]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains(&set) && table.contains("full"), "{table}");
}

#[test]
fn partial_recovery_outputs_only_the_requested_members() {
    let f = fixture(false);
    let server = S3Server::start();
    server.create_bucket("partial");
    let conf = s3_config(&f, &server, "partial");
    let out = s3nap(&["-c", conf.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", stderr(&out));

    let rel = |p: &str| format!("{}/{p}", f.tree.strip_prefix("/").unwrap().display());
    let secret = f.gpg.secret.to_str().unwrap();
    let tree = f.tree.to_str().unwrap();
    let file = rel("a/b/c/d/deep.txt");
    let stream = recover(&conf, &[tree, "--identity", secret, &file], &[]);
    let listing = pipe(Command::new("tar").arg("-t"), &stream);
    assert_eq!(String::from_utf8_lossy(&listing).trim(), file);

    // A directory brings its subtree; a leading '/' is accepted.
    let dir = format!("/{}", rel("a/b"));
    let stream = recover(&conf, &[tree, "--identity", secret, &dir], &[]);
    let listing =
        String::from_utf8_lossy(&pipe(Command::new("tar").arg("-t"), &stream)).into_owned();
    let names: Vec<&str> = listing.lines().collect();
    assert!(
        names.iter().any(|n| n.trim_end_matches('/') == rel("a/b")),
        "{names:?}"
    );
    assert!(names.contains(&rel("a/b/random").as_str()), "{names:?}");
    assert!(names.contains(&file.as_str()), "{names:?}");
    assert!(
        names.iter().all(|n| n.starts_with(&rel("a/b"))),
        "{names:?}"
    );

    // A path that is not in the backup is an error, not an empty success.
    let out = s3nap(
        &[
            "-c",
            conf.to_str().unwrap(),
            "recover",
            tree,
            "--identity",
            secret,
            "no/such/file",
        ],
        &[],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no/such/file"), "{}", stderr(&out));
}

#[test]
fn local_directory_store_round_trip() {
    let f = fixture(false);
    let store = f.dir.join("store");
    let conf = ConfigBuilder::new(&f.dir)
        .bucket(store.display())
        .gpg_recipient(&f.gpg.fingerprint, &f.gpg.cert)
        .host(Some("testhost"))
        .line("Compression xz:1")
        .directory(&f.tree)
        .build();
    let out = s3nap(&["-c", conf.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let set_dir = store.join(format!("testhost/dir{}", f.tree.display()));
    let names: Vec<String> = fs::read_dir(&set_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 3, "archive, range hashes, manifest: {names:?}");
    let archive = names
        .iter()
        .find(|n| n.ends_with(".full.tar.xz.gpg"))
        .expect("xz archive");

    let stream = recover(
        &conf,
        &[
            f.tree.to_str().unwrap(),
            "--identity",
            f.gpg.secret.to_str().unwrap(),
        ],
        &[],
    );
    let dest = f.dir.join("restored");
    untar(&stream, &dest);
    assert_same_tree(&f.tree, &extracted(&dest, &f.tree));

    // The stored file is a plain OpenPGP message: gpg -d | xz -d | tar -x works on it.
    let plain = f.gpg.decrypt(&fs::read(set_dir.join(archive)).unwrap());
    let tar = pipe(Command::new("xz").args(["-d", "-c"]), &plain);
    let dest2 = f.dir.join("stock");
    untar(&tar, &dest2);
    assert_same_tree(&f.tree, &extracted(&dest2, &f.tree));
}

#[test]
fn recover_reads_what_gpg_encrypted() {
    let f = fixture(false);
    let server = S3Server::start();
    server.create_bucket("interop");
    let conf = s3_config(&f, &server, "interop");

    // tar | zstd | gpg --encrypt, the way an s3napback-era script would have done it.
    let tar = Command::new("tar")
        .args(["-c", "-C", "/"])
        .arg(f.tree.strip_prefix("/").unwrap())
        .output()
        .unwrap();
    assert!(tar.status.success());
    let zst = pipe(Command::new("zstd").args(["-c", "-q"]), &tar.stdout);
    let encrypted = f.gpg.encrypt(&zst);
    use sha2::Digest;
    let set = format!("dir{}", f.tree.display());
    let run = "20261001T020000Z";
    let key = format!("backups/testhost/{set}/{run}.full.tar.zst.gpg");
    server.put("interop", &key, encrypted.clone());
    let manifest = serde_json::json!({
        "format": 1,
        "tool": "gpg",
        "host": "testhost",
        "set": set,
        "run": run,
        "kind": "full",
        "started": "2026-10-01T02:00:00Z",
        "finished": "2026-10-01T02:00:05Z",
        "archive": {
            "key": format!("testhost/{set}/{run}.full.tar.zst.gpg"),
            "stored_size": encrypted.len(),
            "sha256": hex::encode(sha2::Sha256::digest(&encrypted)),
            "plaintext_size": tar.stdout.len(),
            "format": "tar",
            "compression": "zstd:3",
            "recipients": [f.gpg.fingerprint],
            "parts": 1
        },
        "source": {"type": "directory", "path": f.tree.display().to_string(), "excludes": []}
    });
    server.put(
        "interop",
        &format!("backups/testhost/{set}/{run}.full.manifest.json"),
        serde_json::to_vec(&manifest).unwrap(),
    );

    let stream = recover(
        &conf,
        &[&set, "--identity", f.gpg.secret.to_str().unwrap()],
        &[],
    );
    let dest = f.dir.join("restored");
    untar(&stream, &dest);
    assert_same_tree(&f.tree, &extracted(&dest, &f.tree));
}

#[test]
fn passphrase_protected_identity_reads_its_passphrase_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let tree = dir.join("tree");
    fs::create_dir_all(tree.join("sub")).unwrap();
    fs::write(tree.join("sub/file"), b"secret data\n").unwrap();
    let gpg = Gpg::with_passphrase(dir, Some("correct horse"));
    let conf = ConfigBuilder::new(dir).gpg(&gpg).directory(&tree).build();
    let out = s3nap(&["-c", conf.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let args = [
        "-c",
        conf.to_str().unwrap(),
        "recover",
        tree.to_str().unwrap(),
        "--identity",
        gpg.secret.to_str().unwrap(),
    ];

    let good = dir.join("good");
    fs::write(&good, "correct horse\n").unwrap();
    let out = s3nap(&args, &[("S3NAP_PASSPHRASE_FILE", &good)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let dest = dir.join("restored");
    untar(&out.stdout, &dest);
    assert_eq!(
        fs::read(extracted(&dest, &tree).join("sub/file")).unwrap(),
        b"secret data\n"
    );

    // The passphrase this run was given must not show up in its output.
    let bad = dir.join("bad");
    let given = "battery staple 31337";
    fs::write(&bad, format!("{given}\n")).unwrap();
    let out = s3nap(&args, &[("S3NAP_PASSPHRASE_FILE", &bad)]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("wrong passphrase"), "{err}");
    assert!(
        !err.contains(given) && !String::from_utf8_lossy(&out.stdout).contains(given),
        "never print secrets: {err}"
    );
}
