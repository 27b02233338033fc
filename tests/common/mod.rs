//! Shared test fixtures: a real S3 server (moto, or s3s-fs as the second implementation;
//! started per test), a real GnuPG home with a fresh key, configuration files (written with
//! [`ConfigBuilder`]), the s3nap binary, and tree comparison.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_s3::config::{Credentials, Region};
use aws_sdk_s3::Client;

pub mod databases;
pub mod proxy;
pub mod quilt;

/// Sets extended attribute `name` on `path` itself (not a link's target).
pub fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    let p = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    // SAFETY: both strings are NUL-terminated and live across the call; `value` is read only.
    let rc = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(
        rc,
        0,
        "setxattr {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

/// The S3 server of one test (moto by default, s3s-fs from [`S3Server::start_s3s_fs`]). Killed
/// when dropped.
pub struct S3Server {
    child: Child,
    /// s3s-fs's data directory (removed when dropped, after the server).
    root: Option<tempfile::TempDir>,
    pub endpoint: String,
    pub access_key: String,
    pub secret_key: String,
    pub pid: u32,
    runtime: tokio::runtime::Runtime,
    pub client: Client,
    /// The IAM users made with [`S3Server::start_with_users`]: name → (access key, secret).
    pub users: BTreeMap<String, (String, String)>,
    /// The IAM roles made with [`S3Server::start_with_roles`]: name → ARN.
    pub roles: BTreeMap<String, String>,
}

pub(crate) fn python() -> PathBuf {
    match std::env::var_os("S3NAP_TEST_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => {
            let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
            assert!(
                venv.exists(),
                "no test S3 server: run `bash scripts/test.sh` (it installs moto into .venv), \
                 or set S3NAP_TEST_PYTHON to a python with moto[server] 5.2.5"
            );
            venv
        }
    }
}

/// The s3s-fs binary the tests start; fails the test naming what is missing.
pub(crate) fn s3s_fs() -> PathBuf {
    let path = match std::env::var_os("S3NAP_TEST_S3S_FS") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/bin/s3s-fs"),
    };
    assert!(
        path.is_file(),
        "no second S3 server: {} is missing; run `bash scripts/setup-tests.sh` (it builds \
         s3s-fs 0.14.1 into .tools, 5-11 minutes), or set S3NAP_TEST_S3S_FS to an s3s-fs \
         0.14.1 binary",
        path.display()
    );
    path
}

impl S3Server {
    pub fn start() -> S3Server {
        Self::start_with_users(&[])
    }

    /// A server with one more IAM user per `(name, policy file)`, allowed only what the policy
    /// allows (moto enforces actions and resource ARNs, not conditions); their keys are in
    /// [`S3Server::users`].
    pub fn start_with_users(users: &[(&str, &Path)]) -> S3Server {
        Self::start_with_roles(users, &[])
    }

    /// Also with one IAM role per `(name, policy file, external id)` that any caller may
    /// assume (with that ExternalId, when one is given), allowed only what the policy allows;
    /// their ARNs are in [`S3Server::roles`].
    pub fn start_with_roles(
        users: &[(&str, &Path)],
        roles: &[(&str, &Path, Option<&str>)],
    ) -> S3Server {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/s3-test-server.py");
        let mut child = Command::new(python())
            .arg(script)
            .args(users.iter().flat_map(|(name, policy)| {
                ["--user".to_string(), format!("{name}={}", policy.display())]
            }))
            .args(roles.iter().flat_map(|(name, policy, external_id)| {
                let id = external_id.map(|id| format!(",{id}")).unwrap_or_default();
                [
                    "--role".to_string(),
                    format!("{name}={}{id}", policy.display()),
                ]
            }))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting the moto S3 server");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(!line.is_empty(), "the moto S3 server did not start");
        let info: serde_json::Value = serde_json::from_str(&line).expect("server info line");
        let s = |k: &str| info[k].as_str().unwrap().to_string();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let config = aws_sdk_s3::config::Builder::new()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(s("endpoint"))
            .force_path_style(true)
            .credentials_provider(Credentials::new(
                s("access_key"),
                s("secret_key"),
                None,
                None,
                "test",
            ))
            .build();
        S3Server {
            endpoint: s("endpoint"),
            access_key: s("access_key"),
            secret_key: s("secret_key"),
            pid: info["pid"].as_u64().unwrap() as u32,
            users: info["users"]
                .as_object()
                .map(|users| {
                    users
                        .iter()
                        .map(|(name, keys)| {
                            let key = |k: &str| keys[k].as_str().unwrap().to_string();
                            (name.clone(), (key("access_key"), key("secret_key")))
                        })
                        .collect()
                })
                .unwrap_or_default(),
            roles: info["roles"]
                .as_object()
                .map(|roles| {
                    roles
                        .iter()
                        .map(|(name, arn)| (name.clone(), arn.as_str().unwrap().to_string()))
                        .collect()
                })
                .unwrap_or_default(),
            child,
            root: None,
            client: Client::from_conf(config),
            runtime,
        }
    }

    /// s3s-fs (`S3NAP_TEST_S3S_FS`, else `.tools/bin/s3s-fs`, which scripts/setup-tests.sh
    /// builds) on 127.0.0.1 over a fresh directory, with SigV4 enforced for one key pair. The
    /// second S3 implementation of the test matrix: it lacks some calls (README, "Tests and
    /// benchmarks"), so [`S3Server::open_uploads`] and the IAM users are moto's only.
    pub fn start_s3s_fs() -> S3Server {
        let binary = s3s_fs();
        let root = tempfile::tempdir().expect("a directory for s3s-fs");
        let data = root.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let log = root.path().join("s3s-fs.log");
        // Keys unique to this server (they are test keys: no secret to protect).
        let nonce = format!(
            "{:x}{:x}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        let (access_key, secret_key) = (format!("AK{nonce}"), format!("SK{nonce}"));
        // A port free a moment ago; another process may take it first: then try another.
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let mut child = Command::new(&binary)
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["--access-key", &access_key, "--secret-key", &secret_key])
                .arg(&data)
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(&log).unwrap())
                .stderr(std::fs::File::create(root.path().join("s3s-fs.err")).unwrap())
                .spawn()
                .unwrap_or_else(|e| panic!("starting s3s-fs {}: {e}", binary.display()));
            let started = std::time::Instant::now();
            let up = loop {
                if let Some(status) = child.try_wait().unwrap() {
                    break Err(status);
                }
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    break Ok(());
                }
                assert!(
                    started.elapsed() < Duration::from_secs(20),
                    "s3s-fs {} did not listen on 127.0.0.1:{port} within 20 s",
                    binary.display()
                );
                std::thread::sleep(Duration::from_millis(20));
            };
            if let Err(status) = up {
                let said = std::fs::read_to_string(root.path().join("s3s-fs.err")).unwrap();
                if said.contains("Address already in use") {
                    continue;
                }
                panic!("s3s-fs {} exited ({status}): {said}", binary.display());
            }
            let endpoint = format!("http://127.0.0.1:{port}");
            let config = aws_sdk_s3::config::Builder::new()
                .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
                .region(Region::new("us-east-1"))
                .endpoint_url(&endpoint)
                .force_path_style(true)
                .credentials_provider(Credentials::new(
                    &access_key,
                    &secret_key,
                    None,
                    None,
                    "test",
                ))
                .build();
            return S3Server {
                pid: child.id(),
                child,
                root: Some(root),
                endpoint,
                access_key,
                secret_key,
                runtime: tokio::runtime::Runtime::new().unwrap(),
                client: Client::from_conf(config),
                users: BTreeMap::new(),
                roles: BTreeMap::new(),
            };
        }
        panic!("s3s-fs found no free port in 5 tries");
    }

    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }

    pub fn create_bucket(&self, name: &str) {
        self.block_on(self.client.create_bucket().bucket(name).send())
            .expect("create bucket");
    }

    /// Turns versioning on for `name`.
    pub fn enable_versioning(&self, name: &str) {
        self.block_on(
            self.client
                .put_bucket_versioning()
                .bucket(name)
                .versioning_configuration(
                    aws_sdk_s3::types::VersioningConfiguration::builder()
                        .status(aws_sdk_s3::types::BucketVersioningStatus::Enabled)
                        .build(),
                )
                .send(),
        )
        .expect("enable versioning");
    }

    /// Every object key in the bucket (all pages: a listing returns at most 1,000).
    pub fn keys(&self, bucket: &str) -> Vec<String> {
        self.block_on(async {
            let mut pages = self
                .client
                .list_objects_v2()
                .bucket(bucket)
                .into_paginator()
                .send();
            let mut keys = Vec::new();
            while let Some(page) = pages.next().await {
                let page = page.unwrap();
                keys.extend(page.contents().iter().map(|o| o.key().unwrap().to_string()));
            }
            keys
        })
    }

    pub fn open_uploads(&self, bucket: &str) -> Vec<String> {
        let out = self
            .block_on(self.client.list_multipart_uploads().bucket(bucket).send())
            .unwrap();
        out.uploads()
            .iter()
            .map(|u| u.key().unwrap().to_string())
            .collect()
    }

    pub fn get(&self, bucket: &str, key: &str) -> Vec<u8> {
        let out = self
            .block_on(self.client.get_object().bucket(bucket).key(key).send())
            .unwrap();
        self.block_on(out.body.collect())
            .unwrap()
            .into_bytes()
            .to_vec()
    }

    pub fn put(&self, bucket: &str, key: &str, data: Vec<u8>) {
        self.block_on(
            self.client
                .put_object()
                .bucket(bucket)
                .key(key)
                .body(data.into())
                .send(),
        )
        .unwrap();
    }

    /// SIGSTOP / SIGCONT: the server stops answering but keeps its state.
    pub fn pause(&self) {
        signal(self.pid, "STOP");
    }

    pub fn resume(&self) {
        signal(self.pid, "CONT");
    }

    /// Runs s3nap with `args` and stops this server (SIGSTOP) as soon as its multipart upload
    /// into `bucket` is under way; resumes the server after `outage`, or once s3nap exited
    /// when `outage` is `None`.
    pub fn s3nap_with_outage(
        &self,
        bucket: &str,
        args: &[&str],
        outage: Option<std::time::Duration>,
    ) -> Output {
        use std::time::Instant;
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_s3nap"));
        cmd.args(args).stdin(Stdio::null());
        let child = Running::spawn(&mut cmd);
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.open_uploads(bucket).is_empty() {
            assert!(Instant::now() < deadline, "the upload never started");
            std::thread::sleep(Duration::from_millis(20));
        }
        self.pause();
        if let Some(outage) = outage {
            std::thread::sleep(outage);
            self.resume();
        }
        // Resumed even when the deadline fails the test, or the server stays stopped.
        struct Resume<'a>(&'a S3Server);
        impl Drop for Resume<'_> {
            fn drop(&mut self) {
                self.0.resume();
            }
        }
        let _resume = Resume(self);
        child.wait(DEADLINE)
    }

    /// An s3napback key file `DIR/NAME.keys` with the keys of the IAM user `name`.
    pub fn user_keyfile(&self, name: &str, dir: &Path) -> PathBuf {
        let (key, secret) = &self.users[name];
        let path = dir.join(format!("{name}.keys"));
        std::fs::write(&path, format!("key={key}\nsecret={secret}\n")).unwrap();
        path
    }

    /// A client of this server with the keys of the IAM user `name`.
    pub fn user_client(&self, name: &str) -> Client {
        let (key, secret) = &self.users[name];
        let config = self
            .client
            .config()
            .to_builder()
            .credentials_provider(Credentials::new(key, secret, None, None, "test-user"))
            .build();
        Client::from_conf(config)
    }

    /// An s3napback key file with this server's credentials.
    pub fn keyfile(&self, dir: &Path) -> PathBuf {
        let path = dir.join("s3key.txt");
        std::fs::write(
            &path,
            format!("key={}\nsecret={}\n", self.access_key, self.secret_key),
        )
        .unwrap();
        path
    }
}

fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = signal_quiet(self.pid);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn signal_quiet(pid: u32) -> std::io::Result<std::process::ExitStatus> {
    Command::new("kill")
        .args(["-CONT", &pid.to_string()])
        .stderr(Stdio::null())
        .status()
}

/// A GnuPG home with one fresh key pair (no passphrase unless given).
pub struct Gpg {
    pub home: PathBuf,
    pub email: String,
    pub fingerprint: String,
    /// Exported certificate (public key) file.
    pub cert: PathBuf,
    /// Exported secret key file.
    pub secret: PathBuf,
}

impl Gpg {
    pub fn new(dir: &Path) -> Gpg {
        Gpg::with_passphrase(dir, None)
    }

    pub fn with_passphrase(dir: &Path, passphrase: Option<&str>) -> Gpg {
        let home = dir.join("gnupg");
        std::fs::create_dir_all(&home).unwrap();
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
        let email = "backup@example.org".to_string();
        let gpg = |args: &[&str]| -> Output {
            let out = Command::new("gpg")
                .env("GNUPGHOME", &home)
                .args(["--batch", "--pinentry-mode", "loopback"])
                .args(args)
                .output()
                .expect("running gpg");
            assert!(
                out.status.success(),
                "gpg {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            out
        };
        gpg(&[
            "--passphrase",
            passphrase.unwrap_or(""),
            "--quick-gen-key",
            "Backup Test <backup@example.org>",
            "future-default",
            "default",
            "never",
        ]);
        let listing = gpg(&["--with-colons", "--list-keys", &email]);
        let fingerprint = String::from_utf8_lossy(&listing.stdout)
            .lines()
            .find(|l| l.starts_with("fpr:"))
            .and_then(|l| l.split(':').nth(9))
            .unwrap()
            .to_string();
        let cert = dir.join("backup.pub");
        std::fs::write(&cert, gpg(&["--export", &email]).stdout).unwrap();
        let secret = dir.join("backup.sec");
        std::fs::write(
            &secret,
            gpg(&[
                "--passphrase",
                passphrase.unwrap_or(""),
                "--export-secret-keys",
                &email,
            ])
            .stdout,
        )
        .unwrap();
        Gpg {
            home,
            email,
            fingerprint,
            cert,
            secret,
        }
    }

    /// `gpg --decrypt` of `data` with this home.
    pub fn decrypt(&self, data: &[u8]) -> Vec<u8> {
        pipe(
            Command::new("gpg").env("GNUPGHOME", &self.home).args([
                "--batch",
                "--quiet",
                "--decrypt",
            ]),
            data,
        )
    }

    pub fn encrypt(&self, data: &[u8]) -> Vec<u8> {
        pipe(
            Command::new("gpg")
                .env("GNUPGHOME", &self.home)
                .args([
                    "--batch",
                    "--quiet",
                    "--trust-model",
                    "always",
                    "--encrypt",
                    "-r",
                ])
                .arg(&self.email),
            data,
        )
    }
}

/// Runs `cmd` with `input` on stdin; panics with its stderr on failure.
pub fn pipe(cmd: &mut Command, input: &[u8]) -> Vec<u8> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// How long a test waits for s3nap before it fails instead of hanging: generous, for debug
/// builds on a slow, busy CI machine.
pub const DEADLINE: Duration = Duration::from_secs(300);

/// Runs the s3nap binary (failing the test after [`DEADLINE`]).
pub fn s3nap(args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_s3nap"));
    cmd.args(args).stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    output_within(&mut cmd, DEADLINE)
}

/// `cmd.output()`, except that a command still running after `deadline` is killed and fails
/// the test (a deadlock fails CI instead of hanging it). Set stdin; stdout and stderr are
/// captured.
pub fn output_within(cmd: &mut Command, deadline: Duration) -> Output {
    Running::spawn(cmd).wait(deadline)
}

/// A child whose stdout and stderr are read on threads as it runs (so it never blocks on a
/// full pipe, and what it said so far can be shown when it is killed). Killed when dropped
/// unwaited (a test that fails first leaves nothing running).
pub struct Running {
    child: Child,
    what: String,
    stdout: Drained,
    stderr: Drained,
}

type Drained = (Arc<Mutex<Vec<u8>>>, Option<std::thread::JoinHandle<()>>);

fn drain(mut from: impl Read + Send + 'static) -> Drained {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let sink = buf.clone();
    let reader = std::thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        while let Ok(n) = from.read(&mut chunk) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&chunk[..n]);
        }
    });
    (buf, Some(reader))
}

/// Everything `drained` read, once its pipe closed.
fn collect(drained: &mut Drained) -> Vec<u8> {
    if let Some(reader) = drained.1.take() {
        reader.join().unwrap();
    }
    std::mem::take(&mut *drained.0.lock().unwrap())
}

impl Running {
    pub fn spawn(cmd: &mut Command) -> Running {
        let what = format!("{cmd:?}");
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let stdout = drain(child.stdout.take().unwrap());
        let stderr = drain(child.stderr.take().unwrap());
        Running {
            child,
            what,
            stdout,
            stderr,
        }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the child's exit; kills it and panics when that takes longer than `deadline`.
    pub fn wait(mut self, deadline: Duration) -> Output {
        let started = std::time::Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > deadline {
                // (Killed by drop.) The readers are not joined: a grandchild may hold the pipes.
                panic!(
                    "{} still running after {deadline:?}: killed (a hang?); its stderr so far:\n{}",
                    self.what,
                    String::from_utf8_lossy(&self.stderr.0.lock().unwrap())
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        Output {
            status,
            stdout: collect(&mut self.stdout),
            stderr: collect(&mut self.stderr),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `tar -x -C dest` of `stream` (GNU tar).
pub fn untar(stream: &[u8], dest: &Path) {
    std::fs::create_dir_all(dest).unwrap();
    pipe(
        Command::new("tar")
            .args(["-x", "--numeric-owner", "-C"])
            .arg(dest),
        stream,
    );
}

/// Metadata and content of every path under `root`, for comparing trees.
#[derive(Debug, PartialEq, Eq)]
pub enum Node {
    Dir {
        mode: u32,
        xattrs: Vec<(String, Vec<u8>)>,
    },
    File {
        mode: u32,
        mtime: i64,
        sha: String,
        len: u64,
        ino_group: usize,
        xattrs: Vec<(String, Vec<u8>)>,
    },
    Symlink {
        target: OsString,
    },
    Other {
        mode: u32,
    },
}

pub fn snapshot(root: &Path) -> BTreeMap<Vec<u8>, Node> {
    use sha2::{Digest, Sha256};
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<(u64, u64), usize> = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let rel = path
            .strip_prefix(root)
            .unwrap()
            .as_os_str()
            .as_bytes()
            .to_vec();
        let ft = meta.file_type();
        let node = if ft.is_dir() {
            for e in std::fs::read_dir(&path).unwrap() {
                stack.push(e.unwrap().path());
            }
            Node::Dir {
                mode: meta.mode() & 0o7777,
                xattrs: user_xattrs(&path),
            }
        } else if ft.is_symlink() {
            Node::Symlink {
                target: std::fs::read_link(&path).unwrap().into_os_string(),
            }
        } else if ft.is_file() {
            let mut f = std::fs::File::open(&path).unwrap();
            let mut h = Sha256::new();
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = f.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
            let next = inodes.len();
            let group = if meta.nlink() > 1 {
                *inodes.entry((meta.dev(), meta.ino())).or_insert(next)
            } else {
                usize::MAX
            };
            Node::File {
                mode: meta.mode() & 0o7777,
                mtime: meta.mtime(),
                sha: hex::encode(h.finalize()),
                len: meta.len(),
                ino_group: group,
                xattrs: user_xattrs(&path),
            }
        } else {
            Node::Other {
                mode: meta.mode() & 0o7777,
            }
        };
        out.insert(rel, node);
    }
    // Directory mtimes change when extraction fills them; files and links are compared.
    out
}

/// The `user.*` extended attributes of `path` (what GNU tar restores by default).
pub fn user_xattrs(path: &Path) -> Vec<(String, Vec<u8>)> {
    s3nap::source::xattr::pax_records(path)
        .unwrap()
        .into_iter()
        .filter(|(k, _)| k.starts_with("SCHILY.xattr.user."))
        .collect()
}

/// `tar -x -G --xattrs -C dest` (GNU tar, replaying dumpdirs).
pub fn untar_incremental(stream: &[u8], dest: &Path) {
    std::fs::create_dir_all(dest).unwrap();
    pipe(
        Command::new("tar")
            .args([
                "-x",
                "-G",
                "--xattrs",
                "--xattrs-include=user.*",
                "--numeric-owner",
                "-C",
            ])
            .arg(dest),
        stream,
    );
}

/// Asserts two trees are equal, naming the first difference.
pub fn assert_same_tree(want: &Path, got: &Path) {
    let a = snapshot(want);
    let b = snapshot(got);
    for (k, v) in &a {
        match b.get(k) {
            None => panic!(
                "{} missing from {}",
                String::from_utf8_lossy(k),
                got.display()
            ),
            Some(w) => assert_eq!(v, w, "{} differs", String::from_utf8_lossy(k)),
        }
    }
    for k in b.keys() {
        assert!(
            a.contains_key(k),
            "{} is extra in {}",
            String::from_utf8_lossy(k),
            got.display()
        );
    }
}

/// Writes a configuration file and returns its path.
pub fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("s3nap.conf");
    std::fs::write(&path, text).unwrap();
    path
}

/// The lines of a configuration's sets: the whole file's after its global settings, or one
/// `<Cycle>` block's.
#[derive(Debug, Default)]
pub struct Lines(Vec<String>);

impl Lines {
    /// Any text: a setting, a source, or a block written out (it may span lines).
    pub fn line(mut self, text: impl std::fmt::Display) -> Self {
        self.0.push(text.to_string());
        self
    }

    pub fn directory(self, path: &Path) -> Self {
        self.line(format!("Directory {}", path.display()))
    }

    /// `<Command name>` running `run`.
    pub fn command(self, name: &str, run: impl std::fmt::Display) -> Self {
        self.line(format!("<Command {name}>\n  Run {run}\n</Command>"))
    }
}

/// A test's configuration file, `DIR/s3nap.conf`: by default `Bucket DIR/store`,
/// `DiffDir DIR/state` and `Host h`, then the sets in the order they were added, e.g.
/// `ConfigBuilder::new(dir).s3(&server, "b").gpg(&gpg).directory(&tree).build()`.
#[derive(Debug)]
pub struct ConfigBuilder {
    dir: PathBuf,
    bucket: String,
    s3: Option<(String, PathBuf)>,
    diff_dir: PathBuf,
    gpg: Option<(String, PathBuf)>,
    host: Option<String>,
    sets: Lines,
}

impl ConfigBuilder {
    pub fn new(dir: &Path) -> Self {
        ConfigBuilder {
            dir: dir.to_path_buf(),
            bucket: dir.join("store").display().to_string(),
            s3: None,
            diff_dir: dir.join("state"),
            gpg: None,
            host: Some("h".into()),
            sets: Lines::default(),
        }
    }

    /// `Bucket` as given: a local directory or an `s3://` address.
    pub fn bucket(mut self, bucket: impl std::fmt::Display) -> Self {
        self.bucket = bucket.to_string();
        self
    }

    /// `Bucket s3://BUCKET` (`BUCKET` may carry a prefix) on `server`, with its endpoint and
    /// a key file written into the configuration's directory.
    pub fn s3(mut self, server: &S3Server, bucket: &str) -> Self {
        self.bucket = format!("s3://{bucket}");
        self.s3 = Some((server.endpoint.clone(), server.keyfile(&self.dir)));
        self
    }

    pub fn diff_dir(mut self, path: &Path) -> Self {
        self.diff_dir = path.to_path_buf();
        self
    }

    /// Encrypts to `gpg`'s e-mail address with its certificate as the keyring.
    pub fn gpg(self, gpg: &Gpg) -> Self {
        let email = gpg.email.clone();
        self.gpg_recipient(&email, &gpg.cert)
    }

    pub fn gpg_recipient(mut self, recipient: &str, keyring: &Path) -> Self {
        self.gpg = Some((recipient.to_string(), keyring.to_path_buf()));
        self
    }

    /// `Host name`, or no `Host` line (the machine's name) for `None`.
    pub fn host(mut self, name: Option<&str>) -> Self {
        self.host = name.map(str::to_string);
        self
    }

    /// Any line after the global settings (see [`Lines::line`]).
    pub fn line(mut self, text: impl std::fmt::Display) -> Self {
        self.sets = self.sets.line(text);
        self
    }

    pub fn directory(mut self, path: &Path) -> Self {
        self.sets = self.sets.directory(path);
        self
    }

    pub fn command(mut self, name: &str, run: impl std::fmt::Display) -> Self {
        self.sets = self.sets.command(name, run);
        self
    }

    /// `<Cycle name>` holding the lines `fill` adds.
    pub fn cycle(self, name: &str, fill: impl FnOnce(Lines) -> Lines) -> Self {
        let body: String = fill(Lines::default())
            .0
            .iter()
            .flat_map(|text| text.lines().map(|l| format!("  {l}\n")))
            .collect();
        self.line(format!("<Cycle {name}>\n{body}</Cycle>"))
    }

    /// The file's text.
    pub fn text(&self) -> String {
        let mut text = format!("Bucket {}\n", self.bucket);
        if let Some((endpoint, keyfile)) = &self.s3 {
            text += &format!("Endpoint {endpoint}\nS3Keyfile {}\n", keyfile.display());
        }
        text += &format!("DiffDir {}\n", self.diff_dir.display());
        if let Some((recipient, keyring)) = &self.gpg {
            text += &format!(
                "GpgRecipient {recipient}\nGpgKeyring {}\n",
                keyring.display()
            );
        }
        if let Some(host) = &self.host {
            text += &format!("Host {host}\n");
        }
        for line in &self.sets.0 {
            text += line;
            text.push('\n');
        }
        text
    }

    /// Writes `DIR/s3nap.conf` and returns its path.
    pub fn build(self) -> PathBuf {
        write_config(&self.dir, &self.text())
    }
}

/// Deterministic pseudo-random bytes (xorshift), incompressible.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Every file below `root` whose path ends with `suffix`, sorted.
pub fn find_files(root: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        } else if p.to_string_lossy().ends_with(suffix) {
            out.push(p);
        }
    }
    out.sort();
    out
}
