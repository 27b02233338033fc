//! Settings under construction: directive values in, the run's [`Config`] and each level's
//! inherited [`Scope`] out.
//!
//! The directive table ([`super::directives`]) says which of these a directive changes; the
//! appliers here are the ones with more to check than reading one value.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::syntax::{ConfigError, Directive, Pos};
use super::values::{absolute_path, choice, err, number, positive, single, size};
use super::{
    BucketMode, BucketUrl, Config, CycleSettings, CycleType, LogSpec, S3Spec, StoreSpec, SyslogSpec,
};
use crate::pipeline::compress::Compression;
use crate::pipeline::schedule::{MAX_PART, MIN_PART};
use crate::store::endpoint::Addressing;
use crate::store::retrieval::Retrieval;
use crate::store::{LockMode, RetrievalTier, StorageClass};

/// What applying one directive to the settings gives.
pub(super) type Applied = Result<(), ConfigError>;

/// With the backoff capped at 30 s, more retries than this only hide a dead endpoint.
const MAX_RETRIES: u64 = 100;

const FACILITIES: &[(&str, u8)] = &[
    ("kern", 0),
    ("user", 1),
    ("mail", 2),
    ("daemon", 3),
    ("auth", 4),
    ("syslog", 5),
    ("lpr", 6),
    ("news", 7),
    ("uucp", 8),
    ("cron", 9),
    ("authpriv", 10),
    ("ftp", 11),
    ("local0", 16),
    ("local1", 17),
    ("local2", 18),
    ("local3", 19),
    ("local4", 20),
    ("local5", 21),
    ("local6", 22),
    ("local7", 23),
];

/// Stores a read value in its setting.
pub(super) fn set<T>(slot: &mut T, value: Result<T, ConfigError>) -> Applied {
    *slot = value?;
    Ok(())
}

/// The run's own settings, from the top level's directives.
pub(super) struct Globals {
    /// Relative paths in the configuration are relative to its file's directory.
    pub(super) base: PathBuf,
    pub(super) store: Option<StoreSpec>,
    pub(super) diff_dir: Option<PathBuf>,
    pub(super) s3: S3Spec,
    pub(super) recipients: Vec<String>,
    pub(super) keyring: Option<PathBuf>,
    pub(super) chunk_size: u64,
    pub(super) host: Option<String>,
    pub(super) parallel_uploads: usize,
    pub(super) memory_limit: u64,
    /// Where ChunkSize, ParallelUploads and MemoryLimit were given (the last of them), for
    /// the error when the parts in flight cannot fit in the limit.
    pub(super) memory_at: Option<Pos>,
    pub(super) retries: u32,
    pub(super) prune_after_run: bool,
    pub(super) log: LogSpec,
    /// Where `LogConfig` was given, for its conflict with `LogFile` and `LogLevel`.
    pub(super) log_config_at: Option<Pos>,
    pub(super) syslog: bool,
    /// Used only when `syslog` is on.
    pub(super) syslog_spec: SyslogSpec,
    pub(super) metrics_file: Option<PathBuf>,
    pub(super) notify: Vec<String>,
    pub(super) retrieval: Retrieval,
    pub(super) operations: super::Operations,
    pub(super) quilt_key_file: Option<PathBuf>,
    /// Credential and encryption directives checked together once all are read.
    pub(super) access: Access,
}

impl Globals {
    pub(super) fn new(file: &Path) -> Self {
        Globals {
            base: file.parent().unwrap_or(Path::new(".")).to_path_buf(),
            store: None,
            diff_dir: None,
            s3: S3Spec {
                endpoint: None,
                region: None,
                keyfile: None,
                prune_keyfile: None,
                timeout: Duration::from_secs(60),
                ca_file: None,
                addressing: Addressing::Auto,
                profile: None,
                role: None,
                encryption: None,
            },
            recipients: Vec::new(),
            keyring: None,
            chunk_size: 16 << 20,
            host: None,
            parallel_uploads: 4,
            memory_limit: 256 << 20,
            memory_at: None,
            retries: 6,
            prune_after_run: true,
            log: LogSpec::default(),
            log_config_at: None,
            syslog: false,
            syslog_spec: SyslogSpec {
                facility: 3,
                tag: "s3nap".into(),
                socket: PathBuf::from("/dev/log"),
            },
            metrics_file: None,
            notify: Vec::new(),
            retrieval: Retrieval::default(),
            operations: super::Operations::default(),
            quilt_key_file: None,
            access: Access::default(),
        }
    }

    /// The configuration without its sets, once the required settings are known to be there.
    pub(super) fn finish(self, file: &Path) -> Result<Config, ConfigError> {
        let top = Pos {
            file: Arc::from(file),
            line: 1,
            column: 1,
        };
        let store = self
            .store
            .ok_or_else(|| err(&top, "missing required directive Bucket"))?;
        let diff_dir = self
            .diff_dir
            .ok_or_else(|| err(&top, "missing required directive DiffDir"))?;
        let host = match self.host {
            Some(h) => h,
            None => machine_host(
                nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()),
                &top,
            )?,
        };
        let mut log = self.log;
        if self.syslog {
            log.syslog = Some(self.syslog_spec);
        }
        // The limit is kept by holding fewer parts; it cannot be kept by holding fewer than the
        // configuration asks for at its smallest part size, so that is an error, not an
        // adjustment behind the configuration's back.
        if self.chunk_size.saturating_mul(self.parallel_uploads as u64) > self.memory_limit {
            return Err(err(
                self.memory_at.as_ref().unwrap_or(&top),
                format!(
                    "ChunkSize ({} bytes) × ParallelUploads ({}) exceeds MemoryLimit ({} bytes): \
                     raise MemoryLimit or lower one of the others",
                    self.chunk_size, self.parallel_uploads, self.memory_limit
                ),
            ));
        }
        if let Some(pos) = &self.log_config_at {
            if log.file.is_some() || log.level.is_some() {
                return Err(err(
                    pos,
                    "LogConfig replaces LogFile and LogLevel: use one or the other",
                ));
            }
        }
        let s3 = self.access.finish(self.s3)?;
        Ok(Config {
            file: file.to_path_buf(),
            store,
            s3,
            diff_dir,
            recipients: self.recipients,
            keyring: self.keyring,
            chunk_size: self.chunk_size,
            host,
            parallel_uploads: self.parallel_uploads,
            memory_limit: self.memory_limit,
            retries: self.retries,
            prune_after_run: self.prune_after_run,
            log,
            metrics_file: self.metrics_file,
            notify: self.notify,
            retrieval: self.retrieval,
            operations: self.operations,
            quilt_key_file: self.quilt_key_file,
            sets: Vec::new(),
        })
    }
}

pub(super) fn store(g: &mut Globals, d: &Directive) -> Applied {
    let w = single(d)?;
    let mut spec = StoreSpec::parse(&w.text).map_err(|m| err(&w.pos, m))?;
    if let StoreSpec::Local(p) = &mut spec {
        if p.is_relative() {
            *p = g.base.join(&*p);
        }
    }
    g.store = Some(spec);
    Ok(())
}

pub(super) fn gpg_recipient(g: &mut Globals, d: &Directive) -> Applied {
    if d.values.is_empty() {
        return Err(err(
            &d.name.pos,
            "GpgRecipient needs a key id, fingerprint or e-mail",
        ));
    }
    g.recipients.extend(d.values.iter().map(|w| w.text.clone()));
    Ok(())
}

pub(super) fn chunk_size(g: &mut Globals, d: &Directive) -> Applied {
    g.chunk_size = size(d)?;
    g.memory_at = Some(d.name.pos.clone());
    // Parts outside S3's limits would be refused by S3 (or adjusted behind the configuration's
    // back): say so here instead.
    if !(MIN_PART..=MAX_PART).contains(&g.chunk_size) {
        let w = single(d)?;
        return Err(err(
            &w.pos,
            format!(
                "ChunkSize must be at least 5 MiB ({MIN_PART} bytes) and at most 5 GiB, \
                 S3's part size limits, not '{}'",
                w.text
            ),
        ));
    }
    Ok(())
}

pub(super) fn parallel_uploads(g: &mut Globals, d: &Directive) -> Applied {
    g.parallel_uploads = positive(d)? as usize;
    g.memory_at = Some(d.name.pos.clone());
    Ok(())
}

pub(super) fn memory_limit(g: &mut Globals, d: &Directive) -> Applied {
    g.memory_limit = size(d)?;
    g.memory_at = Some(d.name.pos.clone());
    // Two of S3's smallest parts: one being filled while one is stored.
    if g.memory_limit < 2 * MIN_PART {
        let w = single(d)?;
        return Err(err(
            &w.pos,
            format!(
                "MemoryLimit must be at least 10 MiB (two of S3's smallest parts), not '{}'",
                w.text
            ),
        ));
    }
    Ok(())
}

/// The host name when `Host` is not set: the machine's, which must be one `Host` could take
/// (a machine named `quilt` would write under the quilt's prefix).
fn machine_host(name: nix::Result<String>, top: &Pos) -> Result<String, ConfigError> {
    let name = name.map_err(|e| err(top, format!("cannot read the host name ({e}); set Host")))?;
    crate::schema::layout::check_host(&name).map_err(|e| {
        err(
            top,
            format!("Host is not set and the machine's name cannot stand for it: {e}; set Host"),
        )
    })?;
    Ok(name)
}

pub(super) fn host(g: &mut Globals, d: &Directive) -> Applied {
    let w = single(d)?;
    if let Err(e) = crate::schema::layout::check_host(&w.text) {
        return Err(err(&w.pos, format!("Host: {e}")));
    }
    g.host = Some(w.text.clone());
    Ok(())
}

pub(super) fn retries(g: &mut Globals, d: &Directive) -> Applied {
    let n = number(d)?;
    if n > MAX_RETRIES {
        return Err(err(
            &single(d)?.pos,
            format!("Retries must be at most {MAX_RETRIES}, not {n}"),
        ));
    }
    // Attempts in all: the first one and its retries.
    g.retries = n as u32 + 1;
    Ok(())
}

pub(super) fn log_config(g: &mut Globals, d: &Directive) -> Applied {
    g.log.config_file = Some(super::values::file_path(&g.base, d)?);
    g.log_config_at = Some(d.name.pos.clone());
    Ok(())
}

pub(super) fn log_level(g: &mut Globals, d: &Directive) -> Applied {
    let w = single(d)?;
    let level = w.text.parse().map_err(|_| {
        err(
            &w.pos,
            format!(
                "LogLevel must be error, warn, info, debug or trace, not '{}'",
                w.text
            ),
        )
    })?;
    g.log.level = Some(level);
    Ok(())
}

pub(super) fn syslog_facility(g: &mut Globals, d: &Directive) -> Applied {
    g.syslog_spec.facility = choice(d, FACILITIES, |given| {
        format!("unknown syslog facility '{given}' (daemon, user, local0…local7, …)")
    })?;
    Ok(())
}

/// Settings inherited inward: a `<Cycle>` sees the top level's, a block its `<Cycle>`'s.
#[derive(Debug, Clone)]
pub(super) struct Scope {
    pub(super) cycle: CycleSettings,
    pub(super) compression: Compression,
    /// With where it was given: a local store has no storage classes.
    pub(super) storage_class: (StorageClass, Option<Pos>),
    pub(super) excludes: Vec<PathBuf>,
    pub(super) one_file_system: bool,
    pub(super) mysql_options: Vec<String>,
    pub(super) pg_custom_format: bool,
    pub(super) restore: Vec<String>,
    /// `Run` of a `<Command>` or `<Picker>` block.
    pub(super) run: Option<Vec<String>>,
    pub(super) bucket: BucketScope,
    /// `ObjectLock`; `None`: off.
    pub(super) object_lock: Option<LockMode>,
    pub(super) lock_margin: chrono::Duration,
    pub(super) lock_max_days: u64,
    /// `Before`, `After`, `HookTimeout`.
    pub(super) hooks: super::Hooks,
    /// `Quilt`, with where it was given (for the errors of sets that cannot be quilted).
    pub(super) quilt: (bool, Option<Pos>),
    /// `QuiltMinSize`.
    pub(super) quilt_min_size: u64,
}

/// Settings of a `<Bucket>` block; `Region` and `Endpoint` are inherited from the top level.
#[derive(Debug, Clone)]
pub(super) struct BucketScope {
    pub(super) master: Option<BucketUrl>,
    pub(super) replica: Option<(BucketUrl, Pos)>,
    pub(super) region: Option<String>,
    pub(super) master_region: Option<String>,
    pub(super) replica_region: Option<String>,
    pub(super) endpoint: Option<String>,
    pub(super) addressing: Addressing,
    pub(super) mode: BucketMode,
    pub(super) workers: usize,
}

impl Default for Scope {
    fn default() -> Self {
        Scope {
            cycle: CycleSettings::default(),
            quilt: (false, None),
            quilt_min_size: crate::schema::quilt::DEFAULT_MIN_SIZE,
            object_lock: None,
            lock_margin: chrono::Duration::days(7),
            lock_max_days: 3650,
            hooks: super::Hooks {
                timeout: Some(Duration::from_secs(3600)),
                ..super::Hooks::default()
            },
            compression: Compression::default(),
            storage_class: (StorageClass::Standard, None),
            excludes: Vec::new(),
            one_file_system: false,
            mysql_options: Vec::new(),
            pg_custom_format: false,
            restore: Vec::new(),
            run: None,
            bucket: BucketScope {
                master: None,
                replica: None,
                region: None,
                master_region: None,
                replica_region: None,
                endpoint: None,
                addressing: Addressing::Auto,
                mode: BucketMode::Replicated,
                workers: 8,
            },
        }
    }
}

pub(super) fn object_lock(s: &mut Scope, d: &Directive) -> Applied {
    let modes = [
        ("governance", Some(LockMode::Governance)),
        ("compliance", Some(LockMode::Compliance)),
        ("no", None),
        ("off", None),
    ];
    s.object_lock = choice(d, &modes, |given| {
        format!("ObjectLock must be governance, compliance or no, not '{given}'")
    })?;
    Ok(())
}

pub(super) fn quilt(s: &mut Scope, d: &Directive) -> Applied {
    let on = super::values::boolean(d)?;
    s.quilt = (on, Some(d.name.pos.clone()));
    Ok(())
}

pub(super) fn addressing(d: &Directive) -> Result<Addressing, ConfigError> {
    choice(d, &Addressing::NAMES, |given| {
        format!("AddressingStyle must be auto, path or virtual, not '{given}'")
    })
}

pub(super) fn cycle_type(s: &mut Scope, d: &Directive) -> Applied {
    let types = [
        ("simplecycle", CycleType::Simple),
        ("simple", CycleType::Simple),
        ("hanoicycle", CycleType::Hanoi),
        ("hanoi", CycleType::Hanoi),
    ];
    s.cycle.cycle_type = choice(d, &types, |given| {
        format!("CycleType must be SimpleCycle or HanoiCycle, not '{given}'")
    })?;
    Ok(())
}

pub(super) fn format(s: &mut Scope, d: &Directive) -> Applied {
    let formats = [("plain", false), ("custom", true)];
    s.pg_custom_format = choice(d, &formats, |given| {
        format!("Format must be plain or custom, not '{given}'")
    })?;
    Ok(())
}

pub(super) fn mode(s: &mut Scope, d: &Directive) -> Applied {
    let modes = [
        ("replicated", BucketMode::Replicated),
        ("copy", BucketMode::Copy),
    ];
    s.bucket.mode = choice(d, &modes, |given| {
        format!("Mode must be replicated or copy, not '{given}'")
    })?;
    Ok(())
}

pub(super) fn compression(s: &mut Scope, d: &Directive) -> Applied {
    let w = single(d)?;
    s.compression = Compression::parse(&w.text).map_err(|m| err(&w.pos, m))?;
    Ok(())
}

pub(super) fn storage_class(s: &mut Scope, d: &Directive) -> Applied {
    let w = single(d)?;
    let class = StorageClass::parse(&w.text).ok_or_else(|| {
        let names: Vec<&str> = StorageClass::ALL.iter().map(|c| c.name()).collect();
        err(
            &w.pos,
            format!(
                "StorageClass must be one of {}, not '{}'",
                names.join(", "),
                w.text
            ),
        )
    })?;
    s.storage_class = (class, Some(w.pos.clone()));
    Ok(())
}

pub(super) fn retrieval_tier(g: &mut Globals, d: &Directive) -> Applied {
    let tiers = RetrievalTier::ALL.map(|t| (t.name(), t));
    g.retrieval.tier = choice(d, &tiers, |given| {
        format!("RetrievalTier must be Standard, Bulk or Expedited, not '{given}'")
    })?;
    Ok(())
}

pub(super) fn retrieval_days(g: &mut Globals, d: &Directive) -> Applied {
    let days = positive(d)?;
    let pos = &single(d)?.pos;
    g.retrieval.days =
        u32::try_from(days).map_err(|_| err(pos, format!("RetrievalDays {days} is too large")))?;
    Ok(())
}

/// Excludes accumulate: each level adds to what it inherits.
pub(super) fn exclude(s: &mut Scope, d: &Directive) -> Applied {
    if d.values.is_empty() {
        return Err(err(&d.name.pos, "Exclude needs a path"));
    }
    for w in &d.values {
        s.excludes.push(absolute_path("Exclude", w)?);
    }
    Ok(())
}

pub(super) fn replica(s: &mut Scope, d: &Directive) -> Applied {
    s.bucket.replica = Some((super::values::bucket_url(d)?, d.name.pos.clone()));
    Ok(())
}

pub(super) fn mysql_options(s: &mut Scope, d: &Directive) -> Applied {
    if let Some(w) = d.values.iter().find(|w| mysql_password_option(&w.text)) {
        return Err(err(
            &w.pos,
            format!(
                "MySQLOptions must not carry a password ('{}'): the dump's command line shows \
                 in the process list and is recorded in the run's manifest; put it in an \
                 option file (MySQLOptions --defaults-extra-file=/etc/s3nap/my.cnf, with \
                 password=… under [client])",
                password_option_name(&w.text)
            ),
        ));
    }
    s.mysql_options = d.values.iter().map(|w| w.text.clone()).collect();
    Ok(())
}

/// `--password[=…]` (and its unambiguous abbreviations, `--loose-` and `_` spellings) or
/// `-p[…]`: the MySQL clients' ways of taking a password on the command line.
fn mysql_password_option(arg: &str) -> bool {
    if let Some(long) = arg.strip_prefix("--") {
        let name = long.split('=').next().unwrap_or_default();
        let name = name.to_ascii_lowercase().replace('_', "-");
        let name = name.strip_prefix("loose-").unwrap_or(&name);
        (name.len() >= 3 && "password".starts_with(name)) || name.starts_with("password")
    } else {
        arg.starts_with("-p")
    }
}

/// The option of a password argument without its value, fit for an error message.
fn password_option_name(arg: &str) -> &str {
    if arg.starts_with("--") {
        arg.split('=').next().unwrap_or_default()
    } else {
        "-p"
    }
}

// Operations (issue 17): hooks around a set's run, and how the process treats the machine.

/// `HookTimeout DURATION`: `0` means no deadline.
pub(super) fn hook_timeout(s: &mut Scope, d: &Directive) -> Applied {
    let span = super::values::duration(d)?;
    s.hooks.timeout =
        (span > chrono::Duration::zero()).then(|| span.to_std().expect("a positive span"));
    Ok(())
}

/// The least `MaxUploadRate`: anything slower is a forgotten unit (`MaxUploadRate 10` is
/// 10 bytes/s, a backup that never ends), not a wish.
const MIN_UPLOAD_RATE: u64 = 64_000;

/// `MaxUploadRate SIZE`: bytes per second, e.g. `10M` or `2MiB`; at least 64K.
pub(super) fn max_upload_rate(g: &mut Globals, d: &Directive) -> Applied {
    let rate = size(d)?;
    if rate < MIN_UPLOAD_RATE {
        let w = single(d)?;
        return Err(err(
            &w.pos,
            format!(
                "MaxUploadRate is in bytes per second and must be at least 64K \
                 ({MIN_UPLOAD_RATE} bytes/s), not '{}' (a unit forgotten? e.g. 10M)",
                w.text
            ),
        ));
    }
    g.operations.max_upload_rate = Some(rate);
    Ok(())
}

/// `Nice N`: -20 (first) to 19 (last), as nice(1) takes it.
pub(super) fn nice(g: &mut Globals, d: &Directive) -> Applied {
    let w = single(d)?;
    match w.text.parse::<i32>() {
        Ok(n) if (-20..=19).contains(&n) => {
            g.operations.nice = Some(n);
            Ok(())
        }
        _ => Err(err(
            &w.pos,
            format!("Nice must be a number from -20 to 19, not '{}'", w.text),
        )),
    }
}

/// `IoNice CLASS[:LEVEL]`: idle, best-effort[:0-7] or realtime[:0-7], as ionice(1) has them.
pub(super) fn io_nice(g: &mut Globals, d: &Directive) -> Applied {
    let w = single(d)?;
    g.operations.io_nice =
        Some(crate::process::IoPriority::parse(&w.text).map_err(|m| err(&w.pos, m))?);
    Ok(())
}

/// Where the credential and encryption directives stand, and the values that only make sense
/// together (`ExternalId` and `RoleSessionName` with `RoleArn`, `KmsKeyId` with `aws:kms`),
/// whichever order they come in.
#[derive(Default)]
pub(super) struct Access {
    profile_at: Option<Pos>,
    role: Option<(String, Pos)>,
    external_id: Option<(String, Pos)>,
    session_name: Option<(String, Pos)>,
    kms_key_id: Option<(String, Pos)>,
    /// Where `ServerSideEncryption` is, for refusing it with a local store.
    pub(super) encryption_at: Option<Pos>,
}

impl Access {
    /// The store settings with these directives' values, or the error naming the directive
    /// that needs another (or excludes one).
    fn finish(self, mut s3: S3Spec) -> Result<S3Spec, ConfigError> {
        use crate::store::s3::{AssumeRole, Encryption};
        if let (Some(at), Some(_)) = (&self.profile_at, &s3.keyfile) {
            return Err(err(
                at,
                "Profile and S3Keyfile both name the credentials: keep one",
            ));
        }
        match self.role {
            Some((arn, _)) => {
                s3.role = Some(AssumeRole {
                    arn,
                    external_id: self.external_id.map(|(v, _)| v),
                    session_name: self.session_name.map(|(v, _)| v),
                })
            }
            None => {
                if let Some((_, at)) = self.external_id.as_ref().or(self.session_name.as_ref()) {
                    return Err(err(at, "ExternalId and RoleSessionName need RoleArn"));
                }
            }
        }
        match (&mut s3.encryption, self.kms_key_id) {
            (Some(Encryption::Kms { key_id }), Some((id, _))) => *key_id = Some(id),
            (_, Some((_, at))) => {
                return Err(err(&at, "KmsKeyId needs ServerSideEncryption aws:kms"));
            }
            _ => {}
        }
        Ok(s3)
    }
}

pub(super) fn profile(g: &mut Globals, d: &Directive) -> Applied {
    let w = single(d)?;
    g.s3.profile = Some(w.text.clone());
    g.access.profile_at = Some(w.pos.clone());
    Ok(())
}

pub(super) fn role_arn(g: &mut Globals, d: &Directive) -> Applied {
    let w = single(d)?;
    if !w.text.starts_with("arn:") || w.text.split(':').count() < 6 {
        return Err(err(
            &w.pos,
            format!(
                "RoleArn must be a role's ARN (arn:aws:iam::ACCOUNT:role/NAME), not '{}'",
                w.text
            ),
        ));
    }
    g.access.role = Some((w.text.clone(), w.pos.clone()));
    Ok(())
}

pub(super) fn external_id(g: &mut Globals, d: &Directive) -> Applied {
    let w = single(d)?;
    g.access.external_id = Some((w.text.clone(), w.pos.clone()));
    Ok(())
}

pub(super) fn role_session_name(g: &mut Globals, d: &Directive) -> Applied {
    let w = single(d)?;
    // STS's rule for a session name: 2 to 64 of [\w+=,.@-].
    let valid = (2..=64).contains(&w.text.len())
        && w.text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c));
    if !valid {
        return Err(err(
            &w.pos,
            format!(
                "RoleSessionName must be 2 to 64 letters, digits or _+=,.@- (STS's rule), not '{}'",
                w.text
            ),
        ));
    }
    g.access.session_name = Some((w.text.clone(), w.pos.clone()));
    Ok(())
}

pub(super) fn server_side_encryption(g: &mut Globals, d: &Directive) -> Applied {
    use crate::store::s3::Encryption;
    #[derive(Clone, Copy)]
    enum Choice {
        Aes256,
        Kms,
        None,
    }
    let chosen = choice(
        d,
        &[
            ("AES256", Choice::Aes256),
            ("aws:kms", Choice::Kms),
            ("none", Choice::None),
        ],
        |other| format!("ServerSideEncryption must be AES256, aws:kms or none, not '{other}'"),
    )?;
    g.access.encryption_at = Some(d.name.pos.clone());
    g.s3.encryption = match chosen {
        Choice::Aes256 => Some(Encryption::Aes256),
        Choice::Kms => Some(Encryption::Kms { key_id: None }),
        Choice::None => None,
    };
    Ok(())
}

pub(super) fn kms_key_id(g: &mut Globals, d: &Directive) -> Applied {
    let w = single(d)?;
    g.access.kms_key_id = Some((w.text.clone(), w.pos.clone()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_machine_name_no_host_could_take_asks_for_host() {
        let top = Pos {
            file: Arc::from(Path::new("/etc/s3nap/s3nap.conf")),
            line: 1,
            column: 1,
        };
        // A machine named after the quilt's prefix would store its sets under it.
        let e = machine_host(Ok("quilt".into()), &top)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/etc/s3nap/s3nap.conf") && e.contains("'quilt'") && e.contains("set Host"),
            "{e}"
        );
        assert_eq!(machine_host(Ok("box".into()), &top).unwrap(), "box");
        let e = machine_host(Err(nix::Error::EFAULT), &top)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("cannot read the host name") && e.contains("set Host"),
            "{e}"
        );
    }
}
