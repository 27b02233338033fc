//! How s3nap reaches its server, against real moto behind scripts/fault-proxy.py: an https://
//! endpoint whose certificate a private CA signed (trusted with `CaFile`; refused at once, and
//! clearly, without it or with another CA), the addressing styles as the server sees them (its
//! Host header and request paths), per-bucket regions of a bucket set as the requests are
//! signed, and a bucket in another region than configured, reported naming the region.
//!
//! moto serves any bucket to requests signed for any region (it never answers 301
//! PermanentRedirect or AuthorizationHeaderMalformed, as S3 does), so the region refusal comes
//! from the proxy, shaped as S3 sends it.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::proxy::FaultProxy;
use common::*;
use serde_json::{json, Value};

const BUCKET: &str = "endpoints";

struct Env {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    tree: PathBuf,
    gpg: Gpg,
    server: S3Server,
}

fn env() -> Env {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let tree = dir.join("tree");
    fs::create_dir_all(tree.join("sub")).unwrap();
    fs::write(tree.join("sub/small.txt"), b"small\n").unwrap();
    fs::write(tree.join("data.bin"), random_bytes(300 << 10, 5)).unwrap();
    let gpg = Gpg::new(&dir);
    let server = S3Server::start();
    server.create_bucket(BUCKET);
    Env {
        _tmp: tmp,
        dir,
        tree,
        gpg,
        server,
    }
}

impl Env {
    /// A configuration in its own directory `name` (its own DiffDir) backing up the tree to
    /// `s3://BUCKET/name` at `endpoint`, with `lines` added.
    fn config(&self, name: &str, endpoint: &str, lines: &str) -> PathBuf {
        let dir = self.dir.join(name);
        fs::create_dir_all(&dir).unwrap();
        let text = ConfigBuilder::new(&dir)
            .s3(&self.server, &format!("{BUCKET}/{name}"))
            .gpg(&self.gpg)
            .line(lines)
            .directory(&self.tree)
            .text()
            .replace(&self.server.endpoint, endpoint);
        write_config(&dir, &text)
    }

    fn set(&self) -> String {
        format!("dir{}", self.tree.display())
    }

    fn keys(&self) -> BTreeSet<String> {
        self.server.keys(BUCKET).into_iter().collect()
    }

    /// Recovers the latest run through `conf` and compares it with the tree.
    fn assert_recovers(&self, conf: &Path, name: &str) {
        let out = s3nap(
            &[
                "-c",
                conf.to_str().unwrap(),
                "recover",
                &self.set(),
                "--identity",
                self.gpg.secret.to_str().unwrap(),
            ],
            &[],
        );
        assert!(out.status.success(), "recover: {}", stderr(&out));
        let dest = self.dir.join(format!("restored-{name}"));
        untar_incremental(&out.stdout, &dest);
        assert_same_tree(&self.tree, &dest.join(self.tree.strip_prefix("/").unwrap()));
    }
}

fn run(conf: &Path) -> Output {
    s3nap(&["-c", conf.to_str().unwrap()], &[])
}

/// s3nap with `conf`, its HTTP requests sent through the HTTP proxy at `proxy` (the
/// environment's `http_proxy`, as the SDK reads it), which resolves no name.
fn run_via_http_proxy(conf: &Path, proxy: &str) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_s3nap"));
    cmd.args(["-c", conf.to_str().unwrap()])
        .stdin(Stdio::null())
        .env("http_proxy", proxy)
        .env("HTTP_PROXY", proxy)
        .env_remove("no_proxy")
        .env_remove("NO_PROXY")
        .env_remove("all_proxy")
        .env_remove("ALL_PROXY");
    output_within(&mut cmd, DEADLINE)
}

/// A private CA (`ca.pem`), a server certificate it signed for localhost and 127.0.0.1
/// (`server.pem`, `server.key`), and a second CA that signed nothing here (`other-ca.pem`),
/// made with the openssl command.
struct Pki {
    ca: PathBuf,
    other_ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("running openssl (scripts/setup-tests.sh installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn pki(dir: &Path) -> Pki {
    let dir = dir.join("pki");
    fs::create_dir_all(&dir).unwrap();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    for (name, cn) in [("ca", "s3nap test CA"), ("other-ca", "another CA")] {
        let (key, pem, subj) = (
            format!("{name}.key"),
            format!("{name}.pem"),
            format!("/CN={cn}"),
        );
        let mut args = vec!["req", "-x509"];
        args.extend(ec);
        args.extend([
            "-keyout",
            &key,
            "-out",
            &pem,
            "-days",
            "2",
            "-subj",
            &subj,
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        openssl(&dir, &args);
    }
    let mut args = vec!["req"];
    args.extend(ec);
    args.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    openssl(&dir, &args);
    fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        &dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ],
    );
    Pki {
        ca: dir.join("ca.pem"),
        other_ca: dir.join("other-ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    }
}

/// Backup and recovery through an https:// endpoint whose certificate a private CA signed,
/// trusted with CaFile.
#[test]
fn an_https_endpoint_is_trusted_with_ca_file() {
    let e = env();
    let pki = pki(&e.dir);
    let proxy = FaultProxy::start_tls(&e.server, &pki.cert, &pki.key);
    assert!(proxy.endpoint.starts_with("https://"), "{}", proxy.endpoint);
    let seen = proxy.add(json!({"action": "pass", "times": 0}));
    let conf = e.config(
        "trusted",
        &proxy.endpoint,
        &format!("CaFile {}", pki.ca.display()),
    );
    let out = run(&conf);
    assert!(out.status.success(), "backup over TLS: {}", stderr(&out));
    assert!(
        e.keys().iter().any(|k| k.ends_with(".manifest.json")),
        "committed: {:?}",
        e.keys()
    );
    e.assert_recovers(&conf, "trusted");
    assert!(
        proxy.hits_of(seen) > 0,
        "the requests went through the TLS proxy"
    );
    assert!(
        proxy.events("tls_refused").is_empty(),
        "{:?}",
        proxy.events("tls_refused")
    );
}

/// Without the CA (or with another one) the handshake fails at once, not after the retries,
/// naming the server and CaFile; nothing is stored; exit status 2 (the set failed). A CaFile
/// that is missing or holds no certificate is a configuration error (3) naming the file.
#[test]
fn an_untrusted_certificate_fails_at_once_and_clearly() {
    let e = env();
    let pki = pki(&e.dir);
    let proxy = FaultProxy::start_tls(&e.server, &pki.cert, &pki.key);
    let server = proxy.endpoint.clone();

    for (name, lines) in [
        ("no-ca", String::new()),
        ("wrong-ca", format!("CaFile {}", pki.other_ca.display())),
    ] {
        let conf = e.config(name, &server, &lines);
        let out = run(&conf);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{name}: {err}");
        assert!(
            err.contains(&format!("TLS handshake with {server} failed")),
            "{name}: names the server: {err}"
        );
        assert!(err.contains("UnknownIssuer"), "{name}: says why: {err}");
        assert!(err.contains("CaFile"), "{name}: says what to do: {err}");
        if name == "wrong-ca" {
            assert!(
                err.contains(pki.other_ca.to_str().unwrap()),
                "{name}: names the CaFile: {err}"
            );
        }
        // The handshake is tried once per request: every retry would log `… retrying in …`
        // (the SDK's own retries are off). No time bound: a loaded machine would break it.
        assert!(!err.contains("retrying"), "{name}: retried: {err}");
        assert!(e.keys().is_empty(), "{name}: stored {:?}", e.keys());
    }
    assert!(
        !proxy.events("tls_refused").is_empty(),
        "s3nap refused the certificate in the handshake"
    );

    let missing = e.dir.join("missing-ca.pem");
    let garbage = e.dir.join("garbage-ca.pem");
    fs::write(&garbage, "this is no certificate\n").unwrap();
    for (name, file) in [("missing", &missing), ("garbage", &garbage)] {
        let conf = e.config(name, &server, &format!("CaFile {}", file.display()));
        let out = run(&conf);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(3), "{name}: {err}");
        assert!(
            err.contains(&format!("CaFile {}", file.display())),
            "{name}: names the file: {err}"
        );
    }
    assert!(e.keys().is_empty(), "stored {:?}", e.keys());
}

/// The requests the proxy saw: (Host header, request target).
fn seen(proxy: &FaultProxy, rule: u64) -> Vec<(String, String)> {
    proxy
        .hits()
        .iter()
        .filter(|h| h["rule"] == rule)
        .map(|h| {
            (
                h["host"].as_str().unwrap_or_default().to_string(),
                h["target"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// AddressingStyle as the server sees it: `virtual` names the bucket in the Host header,
/// `path` and `auto` (with an Endpoint) in the path. The endpoint's host is reached through
/// an HTTP proxy, so `endpoints.localhost` needs no DNS.
#[test]
fn addressing_styles_as_the_server_sees_them() {
    let e = env();
    let proxy = FaultProxy::start(&e.server);
    // moto takes a Host of `localhost:…` as path-style, `BUCKET.localhost:…` as
    // virtual-hosted. Port 9 (discard): nothing would answer there directly.
    let endpoint = "http://localhost:9";
    for (style, host, path_prefix) in [
        ("virtual", format!("{BUCKET}.localhost:9"), "/virtual/h/"),
        ("path", "localhost:9".to_string(), "/endpoints/path/h/"),
        ("auto", "localhost:9".to_string(), "/endpoints/auto/h/"),
    ] {
        let rule = proxy.add(json!({"action": "pass", "times": 0}));
        // A Region: else the SDK would ask the instance metadata service, through the proxy.
        let conf = e.config(
            style,
            endpoint,
            &format!("AddressingStyle {style}\nRegion us-east-1"),
        );
        let out = run_via_http_proxy(&conf, &proxy.endpoint);
        assert!(out.status.success(), "{style}: {}", stderr(&out));
        let requests = seen(&proxy, rule);
        assert!(!requests.is_empty(), "{style}: no request seen");
        for (seen_host, target) in &requests {
            assert_eq!(seen_host, &host, "{style}: {target}");
        }
        // The run's own objects (under STYLE/h/): their paths show where the bucket went.
        assert!(
            requests.iter().any(|(_, t)| t.starts_with(path_prefix)),
            "{style}: {requests:?}"
        );
        if style == "virtual" {
            assert!(
                requests.iter().all(|(_, t)| !t.starts_with("/endpoints")),
                "{style}: {requests:?}"
            );
        }
        proxy.clear();
    }
    let runs: BTreeSet<String> = e
        .keys()
        .into_iter()
        .filter(|k| k.ends_with(".manifest.json"))
        .map(|k| k.split('/').next().unwrap().to_string())
        .collect();
    let styles = ["auto", "path", "virtual"].map(String::from);
    assert_eq!(runs, BTreeSet::from(styles), "one run per style");
}

/// A bucket set's requests are signed for MasterRegion (the master's) and ReplicaRegion (the
/// replica's), not for the block's Region; the store's keep the top level's.
#[test]
fn bucket_set_regions_sign_each_buckets_requests() {
    let e = env();
    for bucket in ["master-b", "replica-b"] {
        e.server.create_bucket(bucket);
    }
    e.server.enable_versioning("replica-b");
    e.server.put("master-b", "a/one.txt", b"one".to_vec());
    let proxy = FaultProxy::start(&e.server);
    let rule = proxy.add(json!({"action": "pass", "times": 0}));
    let dir = e.dir.join("set");
    fs::create_dir_all(&dir).unwrap();
    let conf = ConfigBuilder::new(&dir)
        .s3_via(&e.server, &proxy, BUCKET)
        .gpg(&e.gpg)
        .line(
            "Region ca-central-1\n<Bucket site>\n  Master s3://master-b\n  \
             Replica s3://replica-b\n  Mode copy\n  Region ap-south-1\n  \
             MasterRegion eu-west-1\n  ReplicaRegion us-west-2\n</Bucket>",
        )
        .build();
    let out = run(&conf);
    assert!(out.status.success(), "{}", stderr(&out));
    let hits: Vec<Value> = proxy
        .hits()
        .into_iter()
        .filter(|h| h["rule"] == rule)
        .collect();
    let regions = |bucket: &str| -> BTreeSet<String> {
        hits.iter()
            .filter(|h| {
                let t = h["target"].as_str().unwrap();
                t == format!("/{bucket}")
                    || t.starts_with(&format!("/{bucket}/"))
                    || t.starts_with(&format!("/{bucket}?"))
            })
            .map(|h| h["region"].as_str().unwrap_or("none").to_string())
            .collect()
    };
    let one = |r: &str| BTreeSet::from([r.to_string()]);
    assert_eq!(regions("master-b"), one("eu-west-1"), "master: {hits:?}");
    assert_eq!(regions("replica-b"), one("us-west-2"), "replica: {hits:?}");
    assert_eq!(regions(BUCKET), one("ca-central-1"), "the store: {hits:?}");
    // The copy reached the replica: the set really ran against both buckets.
    assert!(e
        .server
        .keys("replica-b")
        .contains(&"a/one.txt".to_string()));
    // `bucket restore` into the master: its listing and copies are the master's requests,
    // signed for MasterRegion although the copies' source is the replica.
    e.server.put("master-b", "a/one.txt", b"changed".to_vec());
    proxy.clear();
    let rule = proxy.add(json!({"action": "pass", "times": 0}));
    let out = s3nap(
        &[
            "-c",
            conf.to_str().unwrap(),
            "bucket",
            "restore",
            "site",
            "--identity",
            e.gpg.secret.to_str().unwrap(),
        ],
        &[],
    );
    assert!(out.status.success(), "restore: {}", stderr(&out));
    let hits: Vec<Value> = proxy
        .hits()
        .into_iter()
        .filter(|h| h["rule"] == rule)
        .collect();
    let regions = |bucket: &str| -> BTreeSet<String> {
        hits.iter()
            .filter(|h| {
                let t = h["target"].as_str().unwrap();
                t == format!("/{bucket}")
                    || t.starts_with(&format!("/{bucket}/"))
                    || t.starts_with(&format!("/{bucket}?"))
            })
            .map(|h| h["region"].as_str().unwrap_or("none").to_string())
            .collect()
    };
    assert_eq!(regions("master-b"), one("eu-west-1"), "restore: {hits:?}");
    assert!(
        hits.iter().any(|h| h["method"] == "PUT"
            && h["target"]
                .as_str()
                .unwrap()
                .starts_with("/master-b/a/one.txt")),
        "restore copied nothing into the master: {hits:?}"
    );
    assert_eq!(e.server.get("master-b", "a/one.txt"), b"one");
}

/// A bucket in another region than the requests are signed for (S3's 301 PermanentRedirect
/// and 400 AuthorizationHeaderMalformed, with x-amz-bucket-region): reported naming the
/// bucket and the region to configure, not retried, nothing stored, exit status 2.
#[test]
fn a_bucket_in_another_region_is_reported_with_the_region() {
    let e = env();
    let proxy = FaultProxy::start(&e.server);
    for (code, region) in [(301, "eu-west-3"), (400, "sa-east-1")] {
        let rule = proxy.add(json!({
            "action": "status", "code": code, "region": region, "times": 0
        }));
        let conf = e.config(&format!("moved-{code}"), &proxy.endpoint, "");
        let out = run(&conf);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{code}: {err}");
        assert!(
            err.contains(&format!("s3://{BUCKET}/")),
            "{code}: names the bucket: {err}"
        );
        assert!(
            err.contains(&format!("configure `Region {region}`")),
            "{code}: names the region: {err}"
        );
        // Each request once: no retry changes the bucket's region.
        let hits: Vec<(String, String)> = proxy
            .hits()
            .iter()
            .filter(|h| h["rule"] == rule)
            .map(|h| {
                (
                    h["method"].as_str().unwrap().to_string(),
                    h["target"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert!(!hits.is_empty(), "{code}: the refusal was never sent");
        // Each request once (GetBucketVersioning once by each of the run's two stores, the
        // writing and the deleting one); retries would repeat each six times.
        for request in hits.iter().collect::<BTreeSet<_>>() {
            let times = hits.iter().filter(|h| *h == request).count();
            let allowed = if request.1.ends_with("?versioning") {
                2
            } else {
                1
            };
            assert!(times <= allowed, "{code}: {request:?} retried: {hits:?}");
        }
        proxy.clear();
    }
    assert!(e.keys().is_empty(), "stored {:?}", e.keys());
}
