//! Quilted runs for recovery tests: [`quilt_run`] turns a run s3nap stored (in moto) into the
//! quilted run the backup side writes (schema::quilt: large files' data replaced by PAX
//! references, their content as `quilt/content/<HMAC>.zst.gpg`, manifest format 3), and
//! [`assert_quilted_recovery`] checks that `s3nap recover | tar -x` and the stock-tool script
//! `scripts/quilt-recover` both give the tree back exactly — usable on a real quilted run too.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use super::*;

/// A quilted run as stored: its objects' keys (under the bucket) and its quilted members.
pub struct QuiltedRun {
    pub archive: String,
    pub manifest: String,
    /// Each content object's key (under the bucket) and the member it holds.
    pub content: Vec<(String, String)>,
}

const BLOCK: usize = 512;

fn octal(field: &[u8]) -> u64 {
    let text: String = field
        .iter()
        .map(|b| *b as char)
        .filter(|c| c.is_digit(8))
        .collect();
    u64::from_str_radix(&text, 8).unwrap_or(0)
}

/// Sets a header's size field and checksum.
fn set_size(block: &mut [u8], size: u64) {
    block[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    block[148..156].fill(b' ');
    let sum: u32 = block.iter().map(|b| u32::from(*b)).sum();
    block[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}

fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body = [b" ".as_slice(), key.as_bytes(), b"=", value, b"\n"].concat();
    let mut len = body.len() + 1;
    while len.to_string().len() + body.len() != len {
        len += 1;
    }
    [len.to_string().into_bytes(), body].concat()
}

fn padded(data: &[u8]) -> Vec<u8> {
    let mut v = data.to_vec();
    v.resize(data.len().div_ceil(BLOCK) * BLOCK, 0);
    v
}

/// `plain` (a tar stream) with the data of every regular file of at least `min_size` bytes
/// replaced by a quilt reference (its own PAX header, records merged with any the member had);
/// the content of each, by key.
pub fn quilt_tar(
    plain: &[u8],
    min_size: u64,
    key_of: impl Fn(&[u8; 32]) -> String,
) -> (Vec<u8>, Vec<(String, Vec<u8>)>) {
    let (mut out, mut content) = (Vec::new(), Vec::new());
    // Extended headers waiting for their member: (header, data).
    let mut pending: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut pos = 0;
    loop {
        let block = &plain[pos..pos + BLOCK];
        if block.iter().all(|b| *b == 0) {
            out.extend_from_slice(&plain[pos..]);
            return (out, content);
        }
        let size = octal(&block[124..136]) as usize;
        let data = &plain[pos + BLOCK..pos + BLOCK + size];
        pos += BLOCK + size.div_ceil(BLOCK) * BLOCK;
        let typeflag = block[156];
        if matches!(typeflag, b'x' | b'L' | b'K') {
            pending.push((block.to_vec(), data.to_vec()));
            continue;
        }
        if matches!(typeflag, b'0' | 0) && size as u64 >= min_size {
            let sha: [u8; 32] = Sha256::digest(data).into();
            let key = key_of(&sha);
            let records = [
                pax_record("S3NAP.quilt.key", key.as_bytes()),
                pax_record("S3NAP.quilt.size", size.to_string().as_bytes()),
                pax_record("S3NAP.quilt.sha256", hex::encode(sha).as_bytes()),
            ]
            .concat();
            match pending.iter_mut().find(|(h, _)| h[156] == b'x') {
                Some((_, d)) => d.extend_from_slice(&records),
                None => {
                    let mut h = tar::Header::new_ustar();
                    h.set_path("PaxHeaders/quilted").unwrap();
                    h.set_entry_type(tar::EntryType::XHeader);
                    h.set_mode(0o644);
                    pending.push((h.as_bytes().to_vec(), records));
                }
            }
            for (mut h, d) in pending.drain(..) {
                set_size(&mut h, d.len() as u64);
                out.extend_from_slice(&h);
                out.extend_from_slice(&padded(&d));
            }
            let mut h = block.to_vec();
            h[156] = b'0';
            set_size(&mut h, 0);
            out.extend_from_slice(&h);
            content.push((key, data.to_vec()));
            continue;
        }
        for (h, d) in pending.drain(..) {
            out.extend_from_slice(&h);
            out.extend_from_slice(&padded(&d));
        }
        out.extend_from_slice(block);
        out.extend_from_slice(&padded(data));
    }
}

/// Turns the one run s3nap stored under `bucket`/`prefix` into a quilted run (files of at
/// least `min_size` bytes quilted, their content encrypted to `gpg`'s key), as the backup side
/// writes one: archive, range hashes and manifest replaced, content objects added.
pub fn quilt_run(
    server: &S3Server,
    bucket: &str,
    prefix: &str,
    gpg: &Gpg,
    min_size: u64,
) -> QuiltedRun {
    use s3nap::schema::manifest::RangeHashes;
    use s3nap::schema::quilt::QuiltSecret;
    let keys = server.keys(bucket);
    let find = |suffix: &str| {
        keys.iter()
            .find(|k| k.ends_with(suffix))
            .unwrap_or_else(|| panic!("no *{suffix} in {keys:?}"))
            .clone()
    };
    let (archive, ranges, manifest) = (
        find(".full.tar.zst.gpg"),
        find(".full.sha256"),
        find(".full.manifest.json"),
    );
    let mut m: serde_json::Value = serde_json::from_slice(&server.get(bucket, &manifest)).unwrap();
    let plain = pipe(
        Command::new("zstd").args(["-d", "-c"]),
        &gpg.decrypt(&server.get(bucket, &archive)),
    );
    let secret = QuiltSecret::from_bytes([7; 32]);
    let recipients = [gpg.fingerprint.clone()];
    let (quilted, content) =
        quilt_tar(&plain, min_size, |sha| secret.content_key(&recipients, sha));
    let seal = |data: &[u8]| gpg.encrypt(&zstd::encode_all(data, 3).unwrap());
    let stored = seal(&quilted);
    let range_size = m["archive"]["ranges"]["range_size"].as_u64().unwrap() as usize;
    let digests: Vec<[u8; 32]> = stored
        .chunks(range_size)
        .map(|c| Sha256::digest(c).into())
        .collect();
    let hashes = RangeHashes::encode(&digests);
    let root = prefix.trim_end_matches('/');
    let at_root = |key: &str| format!("{root}/{key}");
    for (key, data) in &content {
        server.put(bucket, &at_root(key), seal(data));
    }
    server.put(bucket, &archive, stored.clone());
    server.put(bucket, &ranges, hashes.clone());
    let mut listed: Vec<String> = content.iter().map(|(k, _)| k.clone()).collect();
    listed.sort();
    listed.dedup();
    m["format"] = 3.into();
    m["archive"]["stored_size"] = (stored.len() as u64).into();
    m["archive"]["sha256"] = hex::encode(Sha256::digest(&stored)).into();
    m["archive"]["plaintext_size"] = (quilted.len() as u64).into();
    m["archive"]["ranges"]["count"] = (digests.len() as u64).into();
    m["archive"]["ranges"]["sha256"] = hex::encode(Sha256::digest(&hashes)).into();
    m["quilt"] = serde_json::json!({
        "fingerprint": secret.fingerprint(),
        "min_size": min_size,
        "content": listed,
        "uploaded": listed.len(),
        "uploaded_bytes": 0,
        "reused": 0,
    });
    server.put(bucket, &manifest, serde_json::to_vec_pretty(&m).unwrap());
    // The members each content object stands for, as tar names them.
    let mut members = Vec::new();
    let mut reader = tar::Archive::new(&quilted[..]);
    for entry in reader.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().display().to_string();
        if let Some(records) = entry.pax_extensions().unwrap() {
            for r in records {
                let r = r.unwrap();
                if r.key().unwrap() == "S3NAP.quilt.key" {
                    members.push((at_root(r.value().unwrap()), name.clone()));
                }
            }
        }
    }
    assert_eq!(members.len(), content.len());
    QuiltedRun {
        archive,
        manifest,
        content: members,
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
    let dest = work.join("by-s3nap");
    untar_xattrs(&out.stdout, &dest);
    let inside = |dest: &Path| dest.join(tree.strip_prefix("/").unwrap());
    assert_same_tree(tree, &inside(&dest));

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
