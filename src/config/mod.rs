//! Configuration: the s3napback-style file in, a typed [`Config`] out.
//!
//! Two steps, as in ripgrep: [`syntax`] turns text into a syntax tree with positions (pure, no
//! knowledge of directives), then [`resolve`] checks every directive against the table of what
//! s3nap knows ([`directives`]) and builds the typed configuration. Every error names
//! `file:line:column`. [`describe`] turns a configuration back into text for `config check`.

pub mod describe;
pub mod directives;
pub mod resolve;
mod sets;
mod settings;
mod shown;
pub mod syntax;
/// Values as directives write them; `values::span` serves the command line too (`--grace`).
pub mod values;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use syntax::{ConfigError, Pos};

use crate::pipeline::compress::Compression;
/// The cycle settings belong to the cycle policy, which reads them; the configuration fills them.
pub use crate::policy::cycle::{CycleSettings, CycleType};
pub use crate::schema::snapshot::BucketMode;
use crate::store::retrieval::Retrieval;
use crate::store::StorageClass;

/// Where the archives go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSpec {
    S3 { bucket: String, prefix: String },
    Local(PathBuf),
}

impl StoreSpec {
    /// `s3://bucket/prefix`, `file:///path`, an absolute or `./` path, or a plain bucket name.
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Some(rest) = text.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(format!("'{text}' names no bucket"));
            }
            return Ok(StoreSpec::S3 {
                bucket: bucket.to_string(),
                prefix: prefix.trim_matches('/').to_string(),
            });
        }
        if let Some(path) = text.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(format!("'{text}': file:// needs an absolute path"));
            }
            return Ok(StoreSpec::Local(PathBuf::from(path)));
        }
        if text.starts_with('/') || text.starts_with("./") || text.starts_with("../") {
            return Ok(StoreSpec::Local(PathBuf::from(text)));
        }
        let valid = !text.is_empty()
            && text.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_')
            });
        if valid {
            Ok(StoreSpec::S3 {
                bucket: text.to_string(),
                prefix: String::new(),
            })
        } else {
            Err(format!(
                "'{text}' is neither s3://bucket[/prefix], a bucket name, nor a local path"
            ))
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    Directory {
        path: PathBuf,
        excludes: Vec<PathBuf>,
        one_file_system: bool,
    },
    /// A database, or `all` for every database; `options` go first on mysqldump's command line
    /// (e.g. `--defaults-extra-file=…`: credentials stay in the client's option files).
    MySql {
        database: String,
        options: Vec<String>,
    },
    /// `[user@]database`, or `all` (pg_dumpall); connection through libpq's environment.
    PostgreSql {
        database: String,
        user: Option<String>,
        custom_format: bool,
    },
    Subversion {
        repository: PathBuf,
        /// Repositories found by SubversionDir rotate through FULL dumps only.
        full_only: bool,
    },
    /// Every repository in a directory (expanded when a run starts).
    SubversionDir { directory: PathBuf },
    /// A snapshotter: a program whose output is the data (`fd`: written to the descriptor it
    /// gets as its first argument, its stdout being the description).
    Command {
        name: String,
        run: Vec<String>,
        fd: bool,
    },
    /// A program printing the paths to archive, one per line.
    Picker { name: String, run: Vec<String> },
    /// Every executable in a directory, each a `Command` in descriptor mode (expanded when a
    /// run starts).
    SnapshotsDir { directory: PathBuf },
    /// A versioned S3 bucket whose version index is the set's archive.
    Bucket(BucketSpec),
}

/// `s3://bucket[/prefix]` of a protected or replica bucket; `prefix` has no leading or
/// trailing '/' and is empty for the whole bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketUrl {
    pub bucket: String,
    pub prefix: String,
}

impl BucketUrl {
    pub fn parse(text: &str) -> Result<Self, String> {
        match StoreSpec::parse(text) {
            Ok(StoreSpec::S3 { bucket, prefix }) if text.starts_with("s3://") => {
                Ok(BucketUrl { bucket, prefix })
            }
            _ => Err(format!("'{text}' is not s3://bucket[/prefix]")),
        }
    }

    /// The prefix as keys start with it: empty, or ending in '/'.
    pub fn key_prefix(&self) -> String {
        if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        }
    }
}

impl std::fmt::Display for BucketUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.prefix)
    }
}

/// A `<Bucket NAME>` set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketSpec {
    pub name: String,
    pub master: BucketUrl,
    /// The versioned bucket whose versions the snapshots reference (no prefix of its own: it
    /// holds the master's keys, as replication writes them).
    pub replica: String,
    pub region: Option<String>,
    /// `MasterRegion`, `ReplicaRegion`: the master's and the replica's own, before `region`.
    pub master_region: Option<String>,
    pub replica_region: Option<String>,
    pub endpoint: Option<String>,
    pub addressing: crate::store::endpoint::Addressing,
    pub mode: BucketMode,
    /// Requests in flight for listing, copying and deleting.
    pub workers: usize,
}

impl BucketSpec {
    /// The region of the master bucket: `MasterRegion`, else the block's `Region`.
    pub fn master_region(&self) -> Option<String> {
        self.master_region.clone().or_else(|| self.region.clone())
    }

    /// The region of the replica bucket: `ReplicaRegion`, else the block's `Region`.
    pub fn replica_region(&self) -> Option<String> {
        self.replica_region.clone().or_else(|| self.region.clone())
    }
}

impl SourceSpec {
    /// The set name of any source: `dir/etc`, `mysql/shop`, `mysql/all`, `pgsql/app`,
    /// `svn/srv/svn/repos/myproject`, `svndir/home/svn/repos`.
    pub fn set_name(&self) -> String {
        let path = |prefix: &str, p: &std::path::Path| {
            let text = p.to_string_lossy();
            let trimmed = text.trim_matches('/');
            if trimmed.is_empty() {
                prefix.to_string()
            } else {
                format!("{prefix}/{trimmed}")
            }
        };
        match self {
            SourceSpec::Directory { path: p, .. } => path("dir", p),
            SourceSpec::MySql { database, .. } => format!("mysql/{database}"),
            SourceSpec::PostgreSql { database, .. } => format!("pgsql/{database}"),
            SourceSpec::Subversion { repository, .. } => path("svn", repository),
            SourceSpec::SubversionDir { directory } => path("svndir", directory),
            SourceSpec::Command { name, .. } => format!("cmd/{name}"),
            SourceSpec::Picker { name, .. } => format!("picker/{name}"),
            SourceSpec::SnapshotsDir { directory } => path("snapshots", directory),
            SourceSpec::Bucket(b) => format!("bucket/{}", b.name),
        }
    }

    /// Whether DIFF runs exist for this source; dumps rotate through `Fulls` FULL slots.
    pub fn incremental(&self) -> crate::policy::cycle::Incremental {
        use crate::policy::cycle::Incremental;
        match self {
            SourceSpec::Directory { .. }
            | SourceSpec::Subversion {
                full_only: false, ..
            } => Incremental::Yes,
            _ => Incremental::No,
        }
    }

    /// The configured path, database or program, as a user would name it.
    pub fn target(&self) -> String {
        match self {
            SourceSpec::Directory { path: p, .. }
            | SourceSpec::Subversion { repository: p, .. }
            | SourceSpec::SubversionDir { directory: p }
            | SourceSpec::SnapshotsDir { directory: p } => p.display().to_string(),
            SourceSpec::MySql { database, .. } | SourceSpec::PostgreSql { database, .. } => {
                database.clone()
            }
            SourceSpec::Command { run, .. } | SourceSpec::Picker { run, .. } => run.join(" "),
            SourceSpec::Bucket(b) => b.master.to_string(),
        }
    }
}

/// One backup set: a source with its own name, layers and schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetSpec {
    pub name: String,
    pub source: SourceSpec,
    pub compression: Compression,
    /// Where its archives are stored (`StorageClass`); manifests stay in STANDARD.
    pub storage_class: StorageClass,
    pub cycle: CycleSettings,
    /// `ObjectLock` with its terms; `None`: the set's objects are not locked.
    pub object_lock: Option<ObjectLockSpec>,
    /// The configured restore command (`Restore`), for `recover --restore`.
    pub restore: Vec<String>,
    /// `Before` / `After` commands around the set's run.
    pub hooks: Hooks,
    /// `Quilt yes`: files of at least this many bytes (`QuiltMinSize`) are stored once in the
    /// quilt (`schema::quilt`); `None`: not quilted.
    pub quilt: Option<u64>,
    pub pos: Pos,
}

/// A set's `Before` and `After` commands (program and arguments, no shell; empty: none) and
/// the deadline of each (`HookTimeout`; `None`: none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hooks {
    pub before: Vec<String>,
    pub after: Vec<String>,
    pub timeout: Option<Duration>,
}

/// How the process treats the machine (`MaxUploadRate`, `Nice`, `IoNice`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Operations {
    /// Bytes per second that the archive parts of the whole process may be sent at.
    pub max_upload_rate: Option<u64>,
    /// The CPU niceness (-20..19) of the process and its children.
    pub nice: Option<i32>,
    /// The I/O scheduling class and level of the process and its children.
    pub io_nice: Option<crate::process::IoPriority>,
}

/// How a set's objects are locked (`ObjectLock`, `ObjectLockMargin`, `ObjectLockMaxDays`):
/// until the earliest moment retention could retire the run plus the margin, at most
/// `max_days` (see `policy::lock`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectLockSpec {
    pub mode: crate::store::LockMode,
    pub margin: chrono::Duration,
    pub max_days: u64,
}

impl ObjectLockSpec {
    pub fn terms(&self) -> crate::policy::lock::LockTerms {
        crate::policy::lock::LockTerms {
            margin: self.margin,
            max: chrono::Duration::days(self.max_days as i64),
        }
    }
}

/// Transport settings of the S3 store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Spec {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub keyfile: Option<PathBuf>,
    /// `PruneKeyfile`: the credentials deletions use (`prune`, and a run's own clean-up and
    /// retention with `PruneAfterRun yes`); `None`: `keyfile`'s.
    pub prune_keyfile: Option<PathBuf>,
    pub timeout: Duration,
    /// `CaFile`: CAs trusted besides the system's.
    pub ca_file: Option<PathBuf>,
    /// `AddressingStyle`.
    pub addressing: crate::store::endpoint::Addressing,
    /// `Profile`: credentials from this profile of the shared AWS files, when no `S3Keyfile`.
    pub profile: Option<String>,
    /// `RoleArn`, `ExternalId`, `RoleSessionName`: the role assumed with the credentials.
    pub role: Option<crate::store::s3::AssumeRole>,
    /// `ServerSideEncryption` and `KmsKeyId`: asked for on every object written.
    pub encryption: Option<crate::store::s3::Encryption>,
}

impl S3Spec {
    /// The settings deletions go through: `PruneKeyfile`'s credentials when it is set.
    /// `PruneKeyfile`'s keys are used as they are: neither `Profile` nor `RoleArn` (the backup
    /// role) applies to them.
    pub fn for_deletions(&self) -> S3Spec {
        match &self.prune_keyfile {
            Some(keys) => S3Spec {
                keyfile: Some(keys.clone()),
                profile: None,
                role: None,
                ..self.clone()
            },
            None => self.clone(),
        }
    }
}

/// Where log lines go besides the default stderr.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogSpec {
    /// A log4rs YAML file; replaces everything else here.
    pub config_file: Option<PathBuf>,
    pub file: Option<PathBuf>,
    pub level: Option<log::LevelFilter>,
    pub syslog: Option<SyslogSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogSpec {
    /// Facility number (RFC 3164: daemon is 3, local0 is 16).
    pub facility: u8,
    pub tag: String,
    /// The local syslog socket.
    pub socket: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub file: PathBuf,
    pub store: StoreSpec,
    pub s3: S3Spec,
    pub diff_dir: PathBuf,
    pub recipients: Vec<String>,
    pub keyring: Option<PathBuf>,
    pub chunk_size: u64,
    pub host: String,
    pub parallel_uploads: usize,
    /// Bytes the parts being filled, queued and stored may hold at once.
    pub memory_limit: u64,
    pub retries: u32,
    /// `PruneAfterRun` (default yes): whether a run deletes anything at all — retention, the
    /// clean-up of interrupted runs and of its own failed upload's objects. With `no` those
    /// are left to `s3nap prune`, and a run needs no permission to delete.
    pub prune_after_run: bool,
    pub log: LogSpec,
    /// Prometheus textfile written after each run.
    pub metrics_file: Option<PathBuf>,
    /// Program and arguments run after each run with the summary on stdin.
    pub notify: Vec<String>,
    /// How archived objects are retrieved for reading (`RetrievalTier`, `RetrievalDays`).
    pub retrieval: Retrieval,
    /// `MaxUploadRate`, `Nice`, `IoNice`.
    pub operations: Operations,
    /// `QuiltKeyFile`: the quilt secret, read when a quilted set runs (never at load).
    pub quilt_key_file: Option<PathBuf>,
    pub sets: Vec<SetSpec>,
}

impl Config {
    /// The sets a command names (by set name or path); all of them when it names none.
    pub fn selected_sets<'a>(&'a self, only: &'a [String]) -> impl Iterator<Item = &'a SetSpec> {
        self.sets
            .iter()
            .filter(move |set| only.is_empty() || only.iter().any(|o| set.answers_to(o)))
    }

    /// The first set called `name` or configured for the path `name`. A set configured in
    /// several cycles has one name: its runs share the set's place in the store.
    pub fn find_set(&self, name: &str) -> Option<&SetSpec> {
        self.sets.iter().find(|s| s.answers_to(name))
    }
}

impl SetSpec {
    /// Does the user mean this set by `given` (its name, or its configured path)?
    pub fn answers_to(&self, given: &str) -> bool {
        let trimmed = given.trim_end_matches('/');
        self.name == trimmed
            || match &self.source {
                SourceSpec::Directory { path, .. } => {
                    path == Path::new(given) || path == Path::new(trimmed)
                }
                _ => false,
            }
    }

    /// The cycle's name, `-` outside any `<Cycle>`: what tells this set's runs from the same
    /// set's runs in another cycle.
    pub fn cycle_label(&self) -> &str {
        self.cycle.name.as_deref().unwrap_or("-")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_names() {
        let dir = |p: &str| {
            SourceSpec::Directory {
                path: p.into(),
                excludes: vec![],
                one_file_system: false,
            }
            .set_name()
        };
        assert_eq!(dir("/etc"), "dir/etc");
        assert_eq!(dir("/home/foobar/"), "dir/home/foobar");
        assert_eq!(dir("/"), "dir");
        let all = SourceSpec::MySql {
            database: "all".into(),
            options: vec![],
        };
        assert_eq!(all.set_name(), "mysql/all");
        let repo = SourceSpec::Subversion {
            repository: "/srv/svn/repos/myproject".into(),
            full_only: false,
        };
        assert_eq!(repo.set_name(), "svn/srv/svn/repos/myproject");
    }
}
