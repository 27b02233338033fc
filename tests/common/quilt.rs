//! Quilted runs for recovery tests: [`quilted_run`] reads what a `Quilt yes` run stored (in
//! moto) with stock tools, and [`assert_quilted_recovery`] checks that `s3nap recover | tar -x`
//! and the stock-tool script `scripts/quilt-recover` both give the tree back exactly.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;

/// A quilted run as stored: its objects' keys (under the bucket) and its quilted members.
pub struct QuiltedRun {
    pub archive: String,
    pub manifest: String,
    /// Each content object's key (under the bucket) and the member it holds.
    pub content: Vec<(String, String)>,
}

/// The one FULL s3nap stored under `bucket`/`prefix` with `Quilt yes`: its archive and
/// manifest, and the member each content key stands for, as the archive's PAX records name
/// them (read with gpg, zstd and the tar crate, not with s3nap).
pub fn quilted_run(server: &S3Server, bucket: &str, prefix: &str, gpg: &Gpg) -> QuiltedRun {
    let keys = server.keys(bucket);
    let find = |suffix: &str| {
        keys.iter()
            .find(|k| k.ends_with(suffix))
            .unwrap_or_else(|| panic!("no *{suffix} in {keys:?}"))
            .clone()
    };
    let (archive, manifest) = (find(".full.tar.zst.gpg"), find(".full.manifest.json"));
    let m: serde_json::Value = serde_json::from_slice(&server.get(bucket, &manifest)).unwrap();
    assert_eq!(m["format"], 3, "a quilted run: {m}");
    let plain = pipe(
        Command::new("zstd").args(["-d", "-c"]),
        &gpg.decrypt(&server.get(bucket, &archive)),
    );
    let root = prefix.trim_end_matches('/');
    let mut content = Vec::new();
    let mut reader = tar::Archive::new(&plain[..]);
    for entry in reader.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().display().to_string();
        if let Some(records) = entry.pax_extensions().unwrap() {
            for r in records {
                let r = r.unwrap();
                if r.key().unwrap() == "S3NAP.quilt.key" {
                    content.push((format!("{root}/{}", r.value().unwrap()), name.clone()));
                }
            }
        }
    }
    QuiltedRun {
        archive,
        manifest,
        content,
    }
}

/// The aws-cli the stock-tool script uses: `S3NAP_TEST_AWS`, else `.venv-aws/bin/aws` (which
/// scripts/setup-tests.sh installs).
pub fn aws_cli() -> PathBuf {
    let path = match std::env::var_os("S3NAP_TEST_AWS") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-aws/bin/aws"),
    };
    assert!(
        path.is_file(),
        "no aws-cli: {} is missing; run `bash scripts/setup-tests.sh` (it installs awscli into \
         .venv-aws), or set S3NAP_TEST_AWS to an aws binary",
        path.display()
    );
    path
}

/// `scripts/quilt-recover` with `args`, aws-cli on its PATH, `server`'s credentials and
/// `gpg`'s key.
pub fn quilt_recover_script(server: &S3Server, gpg: &Gpg, args: &[&str]) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/quilt-recover");
    let aws_dir = aws_cli().parent().unwrap().to_path_buf();
    let path = std::env::join_paths(
        std::iter::once(aws_dir).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap())),
    )
    .unwrap();
    let mut cmd = Command::new(script);
    cmd.args(["--endpoint-url", &server.endpoint])
        .args(args)
        .env("PATH", path)
        .env("GNUPGHOME", &gpg.home)
        .env("AWS_ACCESS_KEY_ID", &server.access_key)
        .env("AWS_SECRET_ACCESS_KEY", &server.secret_key)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env_remove("AWS_PROFILE")
        .stdin(std::process::Stdio::null());
    output_within(&mut cmd, DEADLINE)
}

/// `tar -x` of `stream` into `dest`, with user xattrs, as the quilt tests compare trees.
pub fn untar_xattrs(stream: &[u8], dest: &Path) {
    std::fs::create_dir_all(dest).unwrap();
    pipe(
        Command::new("tar")
            .args([
                "-x",
                "--numeric-owner",
                "--xattrs",
                "--xattrs-include=user.*",
                "-C",
            ])
            .arg(dest),
        stream,
    );
}

/// `s3nap recover --identity | tar -x` of `tree`'s set through configuration `conf` into
/// `dest` gives `tree` back exactly.
pub fn assert_s3nap_recovers(conf: &Path, tree: &Path, gpg: &Gpg, dest: &Path) {
    let out = s3nap(
        &[
            "-c",
            conf.to_str().unwrap(),
            "recover",
            tree.to_str().unwrap(),
            "--identity",
            gpg.secret.to_str().unwrap(),
        ],
        &[],
    );
    assert!(out.status.success(), "recover failed: {}", stderr(&out));
    untar_xattrs(&out.stdout, dest);
    assert_same_tree(tree, &dest.join(tree.strip_prefix("/").unwrap()));
}

/// Both ways of recovering the latest run of `tree`'s set through configuration `conf` give
/// `tree` back exactly: `s3nap recover --identity | tar -x`, and `scripts/quilt-recover` from
/// `s3://bucket_prefix` with the archive's key `archive` (under the bucket). `work` is an
/// empty directory to extract into.
pub fn assert_quilted_recovery(
    conf: &Path,
    tree: &Path,
    server: &S3Server,
    bucket_prefix: &str,
    archive: &str,
    gpg: &Gpg,
    work: &Path,
) {
    assert_s3nap_recovers(conf, tree, gpg, &work.join("by-s3nap"));
    let inside = |dest: &Path| dest.join(tree.strip_prefix("/").unwrap());

    let (_, key) = bucket_prefix.split_once('/').unwrap_or((bucket_prefix, ""));
    let relative = archive
        .strip_prefix(&format!("{}/", key.trim_end_matches('/')))
        .unwrap_or(archive);
    let dest = work.join("by-script");
    let store = format!("s3://{}", bucket_prefix.trim_end_matches('/'));
    let out = quilt_recover_script(
        server,
        gpg,
        &[
            &store,
            relative,
            dest.to_str().unwrap(),
            "--",
            "--numeric-owner",
            "--xattrs",
            "--xattrs-include=user.*",
        ],
    );
    assert!(
        out.status.success(),
        "quilt-recover failed: {}",
        stderr(&out)
    );
    assert_same_tree(tree, &inside(&dest));
}
