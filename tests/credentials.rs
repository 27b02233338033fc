//! Credentials as AWS accounts hand them out, and server-side encryption, against moto (its
//! STS on the S3 server's port, IAM enforced): a shared-config profile whose `role_arn` +
//! `source_profile` go through STS, `RoleArn` + `ExternalId` on top of a key file, web identity
//! from the environment, `credential_process`, a key file with a session token (and one with
//! two profile sections, refused), and `ServerSideEncryption` stored on every object (a bucket
//! set's copies included).
//!
//! The base user of each role test may only call sts:AssumeRole: a run that writes proves the
//! role's credentials were used. STS is reached through `AWS_ENDPOINT_URL_STS`, as the AWS
//! SDKs and CLI take it.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::*;

const BUCKET: &str = "creds";

const STS_ONLY: &str = r#"{"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": "*"}]}"#;
const EVERYTHING: &str = r#"{"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": "*", "Resource": "*"}]}"#;

struct Env {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    server: S3Server,
    /// The configuration without credentials (Bucket, Endpoint, DiffDir, Host, GpgRecipient,
    /// one `<Command>` set); each test adds its own lines.
    base: String,
    /// The day of January 2026 the next run is made on (`--now`): every run a run of its own.
    day: std::cell::Cell<u32>,
    gpg: Gpg,
}

fn env() -> Env {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    fs::write(dir.join("sts-only.json"), STS_ONLY).unwrap();
    fs::write(dir.join("everything.json"), EVERYTHING).unwrap();
    let server = S3Server::start_with_roles(
        &[("base", &dir.join("sts-only.json"))],
        &[
            ("writer", &dir.join("everything.json"), None),
            ("guarded", &dir.join("everything.json"), Some("ext-4711")),
        ],
    );
    server.create_bucket(BUCKET);
    let gpg = Gpg::new(&dir);
    let text = ConfigBuilder::new(&dir)
        .s3(&server, BUCKET)
        .gpg(&gpg)
        .command("data", "printf 'some data\\n'")
        .text();
    // The test's own credentials instead of the key file the builder writes.
    let base = text
        .lines()
        .filter(|l| !l.starts_with("S3Keyfile "))
        .map(|l| format!("{l}\n"))
        .collect();
    Env {
        _tmp: tmp,
        dir,
        server,
        base,
        day: std::cell::Cell::new(1),
        gpg,
    }
}

impl Env {
    /// A run with `lines` added to the configuration, in an environment holding no AWS
    /// setting but `vars` (and shared files that do not exist unless `vars` name others).
    fn run(&self, lines: &str, vars: &[(&str, &str)]) -> Output {
        self.run_args(lines, vars, &[])
    }

    /// [`Env::run`] with a command after the global options.
    fn run_args(&self, lines: &str, vars: &[(&str, &str)], args: &[&str]) -> Output {
        let conf = write_config(&self.dir, &format!("{}{lines}\n", self.base));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_s3nap"));
        let now = format!("2026-01-{:02}T03:00:00Z", self.day.get());
        self.day.set(self.day.get() + 1);
        cmd.args(["-c", conf.to_str().unwrap(), "--now", &now, "--json"])
            .args(args)
            .stdin(Stdio::null());
        for (k, _) in std::env::vars() {
            if k.starts_with("AWS_") {
                cmd.env_remove(k);
            }
        }
        let none = self.dir.join("no-such-file");
        cmd.env("AWS_CONFIG_FILE", &none)
            .env("AWS_SHARED_CREDENTIALS_FILE", &none)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_ENDPOINT_URL_STS", &self.server.endpoint);
        for (k, v) in vars {
            cmd.env(k, v);
        }
        output_within(&mut cmd, DEADLINE)
    }

    fn write(&self, name: &str, text: &str) -> String {
        let path = self.dir.join(name);
        fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    }

    fn keys(&self) -> Vec<String> {
        self.server.keys(BUCKET)
    }

    fn user(&self, name: &str) -> (String, String) {
        self.server.users[name].clone()
    }
}

/// Exit 0 and the run's three objects stored.
fn assert_committed(e: &Env, out: &Output, what: &str) {
    assert_eq!(out.status.code(), Some(0), "{what}: {}", stderr(out));
    let keys = e.keys();
    assert!(
        keys.iter().any(|k| k.ends_with(".manifest.json")),
        "{what}: nothing committed: {keys:?}"
    );
}

/// Exit 2, nothing stored, and `want` in the error.
fn assert_refused(e: &Env, out: &Output, want: &str, what: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(2), "{what}: {err}");
    assert!(err.contains(want), "{what}: no '{want}' in: {err}");
    assert_eq!(e.keys(), Vec::<String>::new(), "{what}: stored something");
}

#[test]
fn a_profile_with_role_arn_and_source_profile_assumes_the_role_through_sts() {
    let e = env();
    let (key, secret) = e.user("base");
    let credentials = e.write(
        "credentials",
        &format!("[base]\naws_access_key_id = {key}\naws_secret_access_key = {secret}\n"),
    );
    let config = e.write(
        "config",
        &format!(
            "[profile backup]\nrole_arn = {}\nsource_profile = base\n",
            e.server.roles["writer"]
        ),
    );
    let files = [
        ("AWS_CONFIG_FILE", config.as_str()),
        ("AWS_SHARED_CREDENTIALS_FILE", credentials.as_str()),
    ];
    // The base profile itself may not write: what writes below is the role.
    let out = e.run("Profile base", &files);
    assert_refused(&e, &out, "AccessDenied", "the base profile");
    // Credentials in the environment do not win over the profile named.
    let (k, s) = (e.server.access_key.clone(), e.server.secret_key.clone());
    let mut with_env = files.to_vec();
    with_env.extend([
        ("AWS_ACCESS_KEY_ID", k.as_str()),
        ("AWS_SECRET_ACCESS_KEY", s.as_str()),
    ]);
    let out = e.run("Profile base", &with_env);
    assert_refused(
        &e,
        &out,
        "AccessDenied",
        "the base profile, keys in the environment",
    );

    let out = e.run("Profile backup", &files);
    assert_committed(&e, &out, "the role profile");

    // A profile the files do not define fails the set at once, naming it.
    let stored = e.keys();
    let out = e.run("Profile nosuch", &files);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("Profile nosuch: "), "{err}");
    assert!(
        !err.contains("retrying"),
        "credentials missing are not retried: {err}"
    );
    assert_eq!(e.keys(), stored);
}

#[test]
fn role_arn_with_external_id_assumes_the_role_over_the_key_files_credentials() {
    let e = env();
    let (key, secret) = e.user("base");
    let keys = e.write("base.keys", &format!("key={key}\nsecret={secret}\n"));
    let role = &e.server.roles["guarded"];

    let out = e.run(&format!("S3Keyfile {keys}"), &[]);
    assert_refused(&e, &out, "AccessDenied", "the key file alone");
    let out = e.run(
        &format!("S3Keyfile {keys}\nRoleArn {role}\nExternalId ext-0000"),
        &[],
    );
    // moto answers AssumeRole's AccessDenied in a form the SDK cannot read (its <Errors>
    // wrapper), so the error names the credentials, not the code.
    assert_refused(&e, &out, "while loading credentials", "a wrong ExternalId");
    let out = e.run(
        &format!(
            "S3Keyfile {keys}\nRoleArn {role}\nExternalId ext-4711\nRoleSessionName s3nap-test"
        ),
        &[],
    );
    assert_committed(&e, &out, "RoleArn + ExternalId");

    // A companion without RoleArn is a configuration error naming its line.
    let out = e.run(&format!("S3Keyfile {keys}\nExternalId ext-4711"), &[]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("s3nap.conf:")
            && stderr(&out).contains("ExternalId and RoleSessionName need RoleArn"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn web_identity_from_the_environment_assumes_its_role() {
    let e = env();
    let token = e.write("token", "eyJhbGciOiJSUzI1NiJ9.e30.c2ln\n");
    let out = e.run(
        "",
        &[
            ("AWS_WEB_IDENTITY_TOKEN_FILE", token.as_str()),
            ("AWS_ROLE_ARN", e.server.roles["writer"].as_str()),
            ("AWS_ROLE_SESSION_NAME", "s3nap-ci"),
        ],
    );
    assert_committed(&e, &out, "web identity");
}

#[test]
fn credential_process_of_a_profile_supplies_the_keys() {
    let e = env();
    let script = e.write(
        "creds.sh",
        &format!(
            "#!/bin/sh\nprintf '{{\"Version\": 1, \"AccessKeyId\": \"%s\", \
             \"SecretAccessKey\": \"%s\"}}' '{}' '{}'\n",
            e.server.access_key, e.server.secret_key
        ),
    );
    fs::set_permissions(&script, fs::Permissions::from_mode(0o700)).unwrap();
    let config = e.write(
        "config",
        &format!("[profile proc]\ncredential_process = {script}\n"),
    );
    let out = e.run("Profile proc", &[("AWS_CONFIG_FILE", config.as_str())]);
    assert_committed(&e, &out, "credential_process");
    assert!(
        !stderr(&out).contains(&e.server.secret_key),
        "the secret was logged"
    );
}

/// Temporary credentials from STS (for the role `writer`), as boto3 gets them.
fn session(e: &Env) -> (String, String, String) {
    let (key, secret) = e.user("base");
    let code = format!(
        "import boto3\n\
         c = boto3.client('sts', endpoint_url='{}', region_name='us-east-1', \
         aws_access_key_id='{key}', aws_secret_access_key='{secret}')\n\
         r = c.assume_role(RoleArn='{}', RoleSessionName='tests')['Credentials']\n\
         print(r['AccessKeyId'], r['SecretAccessKey'], r['SessionToken'])\n",
        e.server.endpoint, e.server.roles["writer"]
    );
    let out = Command::new(common_python())
        .args(["-c", &code])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut words = text.split_whitespace().map(str::to_string);
    (
        words.next().unwrap(),
        words.next().unwrap(),
        words.next().unwrap(),
    )
}

fn common_python() -> PathBuf {
    std::env::var_os("S3NAP_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"))
}

#[test]
fn a_keyfile_with_a_session_token_works_and_one_with_two_profiles_is_refused() {
    let e = env();
    let (key, secret, token) = session(&e);
    let keys = e.write(
        "session.keys",
        &format!(
            "[default]\naws_access_key_id = {key}\naws_secret_access_key = {secret}\n\
             aws_session_token = {token}\n"
        ),
    );
    let out = e.run(&format!("S3Keyfile {keys}"), &[]);
    assert_committed(&e, &out, "a key file with a session token");
    let err = stderr(&out);
    assert!(
        !err.contains(&secret) && !err.contains(&token),
        "a secret was logged: {err}"
    );

    let two = e.write(
        "two.keys",
        &format!("[a]\nkey={key}\nsecret={secret}\n[b]\nkey={key}\nsecret={secret}\n"),
    );
    let out = e.run(&format!("S3Keyfile {two}"), &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains(&format!("{two}:4: a second profile section [b]")),
        "{err}"
    );
}

#[test]
fn server_side_encryption_is_stored_on_every_object() {
    let e = env();
    let keys = e.server.keyfile(&e.dir);
    let keys = keys.display();

    let out = e.run(
        &format!("S3Keyfile {keys}\nServerSideEncryption AES256"),
        &[],
    );
    assert_committed(&e, &out, "AES256");
    let stored = e.keys();
    assert_eq!(
        stored.len(),
        3,
        "archive, range hashes, manifest: {stored:?}"
    );
    for key in &stored {
        let head = e
            .server
            .block_on(e.server.client.head_object().bucket(BUCKET).key(key).send())
            .unwrap();
        assert_eq!(
            head.server_side_encryption().map(|s| s.as_str()),
            Some("AES256"),
            "{key}"
        );
    }

    let kms = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";
    let out = e.run(
        &format!("S3Keyfile {keys}\nServerSideEncryption aws:kms\nKmsKeyId {kms}"),
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let new: Vec<String> = e
        .keys()
        .into_iter()
        .filter(|k| !stored.contains(k))
        .collect();
    assert_eq!(new.len(), 3, "{new:?}");
    for key in &new {
        let head = e
            .server
            .block_on(e.server.client.head_object().bucket(BUCKET).key(key).send())
            .unwrap();
        assert_eq!(
            head.server_side_encryption().map(|s| s.as_str()),
            Some("aws:kms"),
            "{key}"
        );
        assert_eq!(head.ssekms_key_id(), Some(kms), "{key}");
    }

    for (lines, want) in [
        (
            "ServerSideEncryption AES128",
            "ServerSideEncryption must be AES256, aws:kms or none, not 'AES128'",
        ),
        (
            "ServerSideEncryption AES256\nKmsKeyId k",
            "KmsKeyId needs ServerSideEncryption aws:kms",
        ),
    ] {
        let out = e.run(&format!("S3Keyfile {keys}\n{lines}"), &[]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(3), "{err}");
        assert!(err.contains("s3nap.conf:") && err.contains(want), "{err}");
    }
}

/// A bucket set's copies into its replica (CopyObject) ask for the encryption too; the copies
/// `bucket restore` makes into the master (the site's objects) do not.
#[test]
fn server_side_encryption_is_asked_for_on_a_bucket_sets_copies() {
    let e = env();
    let keys = e.server.keyfile(&e.dir);
    let c = &e.server.client;
    e.server.create_bucket("master");
    e.server.create_bucket("replica");
    e.server.enable_versioning("replica");
    for key in ["a.txt", "dir/b.txt"] {
        e.server.put("master", key, format!("{key}\n").into_bytes());
    }
    let lines = format!(
        "S3Keyfile {}\nServerSideEncryption AES256\n\
         <Bucket data>\n  Master s3://master\n  Replica s3://replica\n  Mode copy\n</Bucket>",
        keys.display()
    );
    let out = e.run(&lines, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let copied = e.server.keys("replica");
    assert_eq!(copied.len(), 2, "{copied:?}");
    for key in &copied {
        let head = e
            .server
            .block_on(c.head_object().bucket("replica").key(key).send())
            .unwrap();
        assert_eq!(
            head.server_side_encryption().map(|s| s.as_str()),
            Some("AES256"),
            "replica {key}"
        );
    }
    e.server.put("master", "a.txt", b"changed\n".to_vec());
    let identity = e.gpg.secret.to_str().unwrap();
    let args = ["bucket", "restore", "data", "--identity", identity];
    let out = e.run_args(&lines, &[], &args);
    assert_eq!(out.status.code(), Some(0), "restore: {}", stderr(&out));
    assert_eq!(e.server.get("master", "a.txt"), b"a.txt\n");
    let head = e
        .server
        .block_on(c.head_object().bucket("master").key("a.txt").send())
        .unwrap();
    assert_eq!(
        head.server_side_encryption(),
        None,
        "restored into the master"
    );
}
