//! Recovering quilted runs (README, "Quilting: each file's content stored once"): against real
//! moto, real gpg and GNU tar, `s3nap recover | tar -x` and the stock-tool script
//! `scripts/quilt-recover` give the tree back exactly; `recover PATH` gives only what it names;
//! a content object deleted by hand makes `recover` and `verify --deep` fail naming it, while
//! `recover --list` (the archive alone) still succeeds.
//!
//! The quilted run is a real `Quilt yes` run of s3nap.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use common::quilt::*;
use common::*;

/// Files at or above this are quilted.
const MIN_SIZE: u64 = 64 << 10;

/// Small files kept in the archive, and quilted ones: 5 MiB (read twice when spliced), one
/// setuid with an xattr, two with the same content, and one deep in a long-named directory.
fn make_tree(root: &Path) {
    let long = root.join("d".repeat(120)).join("e".repeat(60));
    fs::create_dir_all(&long).unwrap();
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::write(root.join("etc/small.conf"), b"kept in the archive\n").unwrap();
    fs::write(root.join("empty"), b"").unwrap();
    fs::write(root.join("big.bin"), random_bytes(5 << 20, 1)).unwrap();
    fs::write(root.join("etc/tool"), random_bytes(100 << 10, 2)).unwrap();
    fs::set_permissions(root.join("etc/tool"), fs::Permissions::from_mode(0o4755)).unwrap();
    set_xattr(&root.join("etc/tool"), "user.origin", b"vendor");
    let same = random_bytes(70 << 10, 3);
    fs::write(root.join("copy1"), &same).unwrap();
    fs::write(root.join("etc/copy2"), &same).unwrap();
    fs::write(long.join("deep.dat"), random_bytes(MIN_SIZE as usize, 4)).unwrap();
    std::os::unix::fs::symlink("etc/tool", root.join("link")).unwrap();
    let past = SystemTime::UNIX_EPOCH + Duration::from_secs(1_500_000_000);
    for name in ["big.bin", "etc/tool"] {
        fs::File::options()
            .write(true)
            .open(root.join(name))
            .unwrap()
            .set_modified(past)
            .unwrap();
    }
}

struct Fixture {
    _tmp: tempfile::TempDir,
    dir: std::path::PathBuf,
    tree: std::path::PathBuf,
    gpg: Gpg,
    server: S3Server,
    conf: std::path::PathBuf,
    run: QuiltedRun,
}

const BUCKET: &str = "quilt";
const PREFIX: &str = "backups";

/// A quilted run of the tree in moto.
fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let tree = dir.join("tree");
    make_tree(&tree);
    let gpg = Gpg::new(&dir);
    let server = S3Server::start();
    server.create_bucket(BUCKET);
    let key = dir.join("quilt.key");
    fs::write(&key, format!("{}\n", "5a".repeat(32))).unwrap();
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    let conf = ConfigBuilder::new(&dir)
        .s3(&server, &format!("{BUCKET}/{PREFIX}"))
        .gpg(&gpg)
        .host(Some("web1"))
        .line(format!(
            "QuiltKeyFile {}\nQuilt yes\nQuiltMinSize {MIN_SIZE}",
            key.display()
        ))
        .directory(&tree)
        .build();
    let out = s3nap(&["-c", conf.to_str().unwrap()], &[]);
    assert!(out.status.success(), "backup failed: {}", stderr(&out));
    let run = quilted_run(&server, BUCKET, PREFIX, &gpg);
    Fixture {
        _tmp: tmp,
        dir,
        tree,
        gpg,
        server,
        conf,
        run,
    }
}

#[test]
fn a_quilted_run_recovers_exactly_with_s3nap_and_with_the_stock_tool_script() {
    let f = fixture();
    // Five files quilted (two of them with one content), their data out of the archive.
    assert_eq!(f.run.content.len(), 5);
    let mut objects: Vec<&String> = f.run.content.iter().map(|(k, _)| k).collect();
    objects.sort();
    objects.dedup();
    assert_eq!(objects.len(), 4, "the same content is one object");
    let stored = f.server.get(BUCKET, &f.run.archive);
    assert!(stored.len() < 64 << 10, "{} bytes", stored.len());

    assert_quilted_recovery(
        &f.conf,
        &f.tree,
        &f.server,
        &format!("{BUCKET}/{PREFIX}"),
        &f.run.archive,
        &f.gpg,
        &f.dir.join("out"),
    );

    // Through gpg (--gpg): the content objects are decrypted as the archive is.
    let out = s3nap(
        &[
            "-c",
            f.conf.to_str().unwrap(),
            "recover",
            f.tree.to_str().unwrap(),
            "--gpg",
        ],
        &[("GNUPGHOME", &f.gpg.home)],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let dest = f.dir.join("via-gpg");
    untar_xattrs(&out.stdout, &dest);
    assert_same_tree(&f.tree, &dest.join(f.tree.strip_prefix("/").unwrap()));

    // --list names the quilted members as any other, from the archive alone.
    let out = s3nap(
        &[
            "-c",
            f.conf.to_str().unwrap(),
            "recover",
            f.tree.to_str().unwrap(),
            "--list",
            "--identity",
            f.gpg.secret.to_str().unwrap(),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let listed = String::from_utf8_lossy(&out.stdout);
    for (_, member) in &f.run.content {
        assert!(listed.contains(member.as_str()), "{member} in {listed}");
    }

    // recover PATH: only what it names.
    let out = s3nap(
        &[
            "-c",
            f.conf.to_str().unwrap(),
            "recover",
            f.tree.to_str().unwrap(),
            f.tree.join("etc").to_str().unwrap(),
            "--identity",
            f.gpg.secret.to_str().unwrap(),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let dest = f.dir.join("etc-only");
    untar_xattrs(&out.stdout, &dest);
    let got = dest.join(f.tree.strip_prefix("/").unwrap());
    let mut names: Vec<String> = fs::read_dir(&got)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["etc"]);
    for name in ["small.conf", "tool", "copy2"] {
        assert_eq!(
            fs::read(got.join("etc").join(name)).unwrap(),
            fs::read(f.tree.join("etc").join(name)).unwrap(),
            "{name}"
        );
    }
}

#[test]
fn a_content_object_deleted_by_hand_fails_recover_and_deep_verify_naming_it() {
    let f = fixture();
    let (key, member) = f
        .run
        .content
        .iter()
        .find(|(_, m)| m.ends_with("etc/tool"))
        .unwrap()
        .clone();
    f.server
        .block_on(
            f.server
                .client
                .delete_object()
                .bucket(BUCKET)
                .key(&key)
                .send(),
        )
        .unwrap();
    let conf = f.conf.to_str().unwrap();
    let secret = f.gpg.secret.to_str().unwrap();
    let out = s3nap(
        &[
            "-c",
            conf,
            "recover",
            f.tree.to_str().unwrap(),
            "--identity",
            secret,
        ],
        &[],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("s3://{BUCKET}/{key}")), "{err}");
    assert!(err.contains(&member) && err.contains("missing"), "{err}");
    // Named up front, before the files that precede it go out.
    assert!(
        err.contains(&format!(
            "s3://{BUCKET}/{key}: quilt content object is missing"
        )),
        "{err}"
    );
    // What did go out is a stream tar refuses, and the file is not among what it extracted.
    let dest = f.dir.join("cut");
    fs::create_dir_all(&dest).unwrap();
    let mut tar = std::process::Command::new("tar");
    tar.args(["-x", "-C"]).arg(&dest);
    let mut child = tar
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(&out.stdout).unwrap();
    assert!(
        !child.wait().unwrap().success(),
        "tar fails on the cut stream"
    );
    let tool = dest
        .join(f.tree.strip_prefix("/").unwrap())
        .join("etc/tool");
    assert!(
        fs::metadata(&tool).map_or(true, |m| m.len() == 0),
        "no bytes of etc/tool"
    );

    // Other members still recover.
    let out = s3nap(
        &[
            "-c",
            conf,
            "recover",
            f.tree.to_str().unwrap(),
            f.tree.join("big.bin").to_str().unwrap(),
            "--identity",
            secret,
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));

    // A listing reads the archive alone: the missing content is no concern of it.
    let out = s3nap(
        &[
            "-c",
            conf,
            "recover",
            f.tree.to_str().unwrap(),
            "--list",
            "--identity",
            secret,
        ],
        &[],
    );
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(listed.contains(&member), "{member} in {listed}");
    assert!(!stderr(&out).contains("missing"), "{}", stderr(&out));

    let out = s3nap(&["-c", conf, "verify", "--deep", "--identity", secret], &[]);
    let err = format!("{}{}", stderr(&out), String::from_utf8_lossy(&out.stdout));
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("s3://{BUCKET}/{key}")), "{err}");

    // The stock-tool script names it too, and says the file was not rebuilt.
    let dest = f.dir.join("script");
    let relative = f.run.archive.strip_prefix(&format!("{PREFIX}/")).unwrap();
    let out = quilt_recover_script(
        &f.server,
        &f.gpg,
        &[
            &format!("s3://{BUCKET}/{PREFIX}"),
            relative,
            dest.to_str().unwrap(),
        ],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(key.strip_prefix(&format!("{PREFIX}/")).unwrap()),
        "{err}"
    );
    assert!(err.contains("1 quilted file(s) not rebuilt"), "{err}");
}

#[test]
fn the_stock_tool_script_refuses_a_poisoned_content_object() {
    let f = fixture();
    let (key, member) = f.run.content[0].clone();
    // Other content, encrypted to the same key, under the same name.
    let poison = f.gpg.encrypt(&zstd::encode_all(&b"poison"[..], 3).unwrap());
    f.server.put(BUCKET, &key, poison);
    let plain = pipe(
        std::process::Command::new("zstd").args(["-d", "-c"]),
        &f.gpg.decrypt(&f.server.get(BUCKET, &f.run.archive)),
    );
    let archive = f.dir.join("run.tar");
    fs::write(&archive, plain).unwrap();
    let dest = f.dir.join("script");
    let out = quilt_recover_script(
        &f.server,
        &f.gpg,
        &[
            &format!("s3://{BUCKET}/{PREFIX}"),
            archive.to_str().unwrap(),
            dest.to_str().unwrap(),
        ],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("replaced or damaged") && err.contains(&member),
        "{err}"
    );
    let file = dest.join(&member);
    assert_eq!(
        fs::metadata(&file).unwrap().len(),
        0,
        "no poisoned byte in {member}"
    );
}
