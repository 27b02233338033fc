//! The directives s3nap knows, as one table: name, where each may stand, whether it may repeat,
//! what it means and how its value applies.
//!
//! Resolution checks every line and block against it (unknown names with a suggestion,
//! misplaced and repeated directives), `config check` lists the run's settings in its order and
//! `s3nap man` documents it; nothing else keeps a list of directive names.

use std::collections::HashMap;

use clap_mangen::roff::{bold, roman, Roff};

use super::sets::{self, Built};
use super::settings::{self, set, Applied, Globals, Scope};
use super::shown;
use super::syntax::{Block, ConfigError, Directive, Pos, Word};
use super::values::{
    boolean, bucket_url, command_words, duration, endpoint, err, file_path, number, positive,
    single, size, text,
};
use super::Config;

/// Where a directive or block stands: the top level, or inside a kind of block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Context {
    Top,
    Cycle,
    /// A set block other than the ones below.
    Source,
    /// `<Command>` and `<Picker>`: a program's set.
    Program,
    Bucket,
}

use Context::{Bucket, Cycle, Program, Source, Top};

const EVERYWHERE: &[Context] = &[Top, Cycle, Source, Program, Bucket];
const TOP: &[Context] = &[Top];
/// Where sets are configured: the top level and `<Cycle>`; sets do not nest.
const SETS: &[Context] = &[Top, Cycle];

/// How a directive is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Form {
    /// `Name value…`
    Line,
    /// `<Name arg>` … `</Name>`, whose inside is the context given.
    Block(Context),
    /// Either one: each value of the line, or the block's argument, is one set.
    LineOrBlock(Context),
}

/// How a directive changes the configuration under construction.
#[derive(Clone, Copy)]
pub(super) enum Apply {
    /// A setting of the whole run.
    Run(fn(&mut Globals, &Directive) -> Applied),
    /// A setting inherited inward, which inner blocks may override.
    Scope(fn(&mut Scope, &Directive) -> Applied),
    /// The store's setting at the top level, inherited by `<Bucket>` blocks for their bucket.
    RunAndScope(
        fn(&mut Globals, &Directive) -> Applied,
        fn(&mut Scope, &Directive) -> Applied,
    ),
    /// Each value (or the block's argument) is one set.
    Set(fn(&Scope, &Word) -> Built),
    /// A group of sets sharing settings.
    Cycle,
    /// Spliced in by `syntax::load` before resolution.
    Include,
}

/// What `config check` shows for a directive.
#[derive(Clone, Copy)]
pub(super) enum Show {
    Nothing,
    /// A line labelled with the directive's name; `None` leaves it out.
    Value(fn(&Config) -> Option<String>),
    /// A line under its own label, standing for this directive and the related ones after it.
    Group(&'static str, fn(&Config) -> Option<String>),
}

/// One directive (or block) of the table.
pub(super) struct Spec {
    /// As the documentation spells it; the configuration may use any case.
    pub(super) name: &'static str,
    pub(super) form: Form,
    /// Where the line (or the block) may stand.
    pub(super) places: &'static [Context],
    pub(super) repeatable: bool,
    /// A valid value (the block's argument for a block): the man page shows it, tests use it.
    pub(super) example: &'static str,
    pub(super) help: &'static str,
    pub(super) apply: Apply,
    pub(super) show: Show,
}

impl Spec {
    const fn new(
        name: &'static str,
        example: &'static str,
        apply: Apply,
        help: &'static str,
    ) -> Self {
        Spec {
            name,
            form: Form::Line,
            places: TOP,
            repeatable: false,
            example,
            help,
            apply,
            show: Show::Nothing,
        }
    }

    const fn places(mut self, places: &'static [Context]) -> Self {
        self.places = places;
        self
    }

    const fn repeatable(mut self) -> Self {
        self.repeatable = true;
        self
    }

    const fn shown(mut self, value: fn(&Config) -> Option<String>) -> Self {
        self.show = Show::Value(value);
        self
    }

    const fn block(mut self, inside: Context) -> Self {
        self.form = Form::Block(inside);
        self
    }

    fn is_line(&self) -> bool {
        matches!(self.form, Form::Line | Form::LineOrBlock(_))
    }

    /// The context inside the block this entry opens, if it is a block.
    pub(super) fn inside(&self) -> Option<Context> {
        match self.form {
            Form::Block(c) | Form::LineOrBlock(c) => Some(c),
            Form::Line => None,
        }
    }
}

/// A setting of the whole run, at the top level only.
const fn run(
    name: &'static str,
    example: &'static str,
    apply: fn(&mut Globals, &Directive) -> Applied,
    help: &'static str,
) -> Spec {
    Spec::new(name, example, Apply::Run(apply), help)
}

/// A setting inherited inward, given anywhere.
const fn scoped(
    name: &'static str,
    example: &'static str,
    apply: fn(&mut Scope, &Directive) -> Applied,
    help: &'static str,
) -> Spec {
    Spec::new(name, example, Apply::Scope(apply), help).places(EVERYWHERE)
}

/// A kind of set, configured by a line (one set a value) or a block of its own settings.
const fn source(
    name: &'static str,
    example: &'static str,
    build: fn(&Scope, &Word) -> Built,
    help: &'static str,
) -> Spec {
    let mut spec = Spec::new(name, example, Apply::Set(build), help).places(SETS);
    spec.form = Form::LineOrBlock(Source);
    spec.repeatable()
}

/// A kind of set given only as a block, whose inside is `inside`.
const fn set_block(
    name: &'static str,
    inside: Context,
    example: &'static str,
    build: fn(&Scope, &Word) -> Built,
    help: &'static str,
) -> Spec {
    Spec::new(name, example, Apply::Set(build), help)
        .places(SETS)
        .block(inside)
        .repeatable()
}

/// Every directive and block, in the order the man page and `config check` list them.
pub(super) static DIRECTIVES: &[Spec] = &[
    run(
        "Bucket",
        "s3://backups/s3nap",
        settings::store,
        "Where the archives go: s3://bucket/prefix, a plain bucket name, a local directory \
         (/path, ./path) or file:///path. Required.",
    )
    .shown(shown::store),
    Spec::new(
        "Endpoint",
        "https://s3.example.org",
        Apply::RunAndScope(
            |g, d| set(&mut g.s3.endpoint, endpoint(d).map(Some)),
            |s, d| set(&mut s.bucket.endpoint, endpoint(d).map(Some)),
        ),
        "URL of an S3-compatible server; inside <Bucket>, that bucket's.",
    )
    .places(&[Top, Bucket])
    .shown(|c| c.s3.endpoint.clone()),
    Spec::new(
        "AddressingStyle",
        "virtual",
        Apply::RunAndScope(
            |g, d| set(&mut g.s3.addressing, settings::addressing(d)),
            |s, d| set(&mut s.bucket.addressing, settings::addressing(d)),
        ),
        "Where requests name the bucket: path (https://host/bucket/key), virtual \
         (https://bucket.host/key) or auto (default: virtual on AWS, path with an Endpoint); \
         inside <Bucket>, that bucket's.",
    )
    .places(&[Top, Bucket])
    .shown(|c| Some(c.s3.addressing.name().to_string())),
    run(
        "CaFile",
        "/etc/s3nap/ca.pem",
        |g, d| set(&mut g.s3.ca_file, file_path(&g.base, d).map(Some)),
        "PEM bundle of CAs trusted for https:// endpoints besides the system's.",
    )
    .shown(|c| c.s3.ca_file.as_ref().map(|p| p.display().to_string())),
    Spec::new(
        "Region",
        "eu-west-1",
        Apply::RunAndScope(
            |g, d| set(&mut g.s3.region, text(d).map(Some)),
            |s, d| set(&mut s.bucket.region, text(d).map(Some)),
        ),
        "S3 region (default: the AWS chain's, else us-east-1); inside <Bucket>, that bucket's.",
    )
    .places(&[Top, Bucket])
    .shown(|c| c.s3.region.clone()),
    scoped(
        "MasterRegion",
        "eu-west-1",
        |s, d| set(&mut s.bucket.master_region, text(d).map(Some)),
        "The master bucket's region, before the block's Region.",
    )
    .places(&[Bucket]),
    scoped(
        "ReplicaRegion",
        "eu-central-1",
        |s, d| set(&mut s.bucket.replica_region, text(d).map(Some)),
        "The replica bucket's region, before the block's Region.",
    )
    .places(&[Bucket]),
    run(
        "S3Keyfile",
        "/etc/s3nap/s3.keys",
        |g, d| set(&mut g.s3.keyfile, file_path(&g.base, d).map(Some)),
        "File with key=ACCESS_KEY and secret=SECRET lines, and token=SESSION_TOKEN for \
         temporary credentials (AWS's aws_access_key_id… names under one [profile] header work \
         too; default: the AWS credential chain).",
    )
    .shown(shown::keyfile),
    run(
        "Profile",
        "backup",
        settings::profile,
        "Credentials from this profile of the shared AWS files (AWS_CONFIG_FILE, \
         AWS_SHARED_CREDENTIALS_FILE; default ~/.aws/config and ~/.aws/credentials), with its \
         role_arn + source_profile, credential_process, web identity…; not with S3Keyfile.",
    )
    .shown(|c| c.s3.profile.clone()),
    run(
        "RoleArn",
        "arn:aws:iam::123456789012:role/s3nap-backup",
        settings::role_arn,
        "Assume this IAM role (STS AssumeRole) with the credentials S3Keyfile, Profile or the \
         AWS chain give; PruneKeyfile's keys are used as they are.",
    )
    .shown(|c| c.s3.role.as_ref().map(|r| r.arn.clone())),
    run(
        "ExternalId",
        "s3nap-7f3a",
        settings::external_id,
        "The external ID RoleArn's trust policy demands (sts:ExternalId).",
    )
    .shown(|c| {
        c.s3.role
            .as_ref()
            .and_then(|r| r.external_id.as_ref())
            .map(|_| "set".into())
    }),
    run(
        "RoleSessionName",
        "s3nap-web1",
        settings::role_session_name,
        "The session name of the assumed role, as CloudTrail shows it (default: the SDK's).",
    )
    .shown(|c| c.s3.role.as_ref().and_then(|r| r.session_name.clone())),
    Spec {
        // The label stands for KmsKeyId too (and fits the column).
        show: Show::Group("S3 encryption", shown::encryption),
        ..run(
            "ServerSideEncryption",
            "aws:kms",
            settings::server_side_encryption,
            "Ask S3 to encrypt every object s3nap writes: AES256 (SSE-S3), aws:kms (SSE-KMS) or \
             none (default: the bucket's default encryption).",
        )
    },
    run(
        "KmsKeyId",
        "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        settings::kms_key_id,
        "The KMS key of ServerSideEncryption aws:kms (default: the account's aws/s3 key).",
    ),
    run(
        "PruneKeyfile",
        "/etc/s3nap/s3-prune.keys",
        |g, d| set(&mut g.s3.prune_keyfile, file_path(&g.base, d).map(Some)),
        "An S3Keyfile used for deletions only: by s3nap prune, and by a run's own clean-up and \
         retention when PruneAfterRun is yes (default: S3Keyfile's credentials).",
    )
    .shown(shown::prune_keyfile),
    run(
        "PruneAfterRun",
        "no",
        |g, d| set(&mut g.prune_after_run, boolean(d)),
        "yes (default): a run retires what retention no longer keeps and cleans up after \
         interrupted runs; no: a run deletes nothing (credentials without DeleteObject will \
         do), logs what s3nap prune will have to do, and leaves it to prune.",
    )
    .shown(|c| {
        Some(
            if c.prune_after_run {
                "yes"
            } else {
                "no: deletions are left to s3nap prune"
            }
            .into(),
        )
    }),
    run(
        "DiffDir",
        "/var/lib/s3nap",
        |g, d| set(&mut g.diff_dir, file_path(&g.base, d).map(Some)),
        "Local state and the run lock; created if missing. Required.",
    )
    .shown(|c| Some(c.diff_dir.display().to_string())),
    run(
        "Host",
        "backup1",
        settings::host,
        "Name of this machine in the store layout (default: the host name).",
    )
    .shown(|c| Some(c.host.clone())),
    run(
        "GpgRecipient",
        "backup@example.org",
        settings::gpg_recipient,
        "Fingerprint, key ID or e-mail of a recipient; none: archives are not encrypted.",
    )
    .repeatable()
    .shown(shown::recipients),
    run(
        "GpgKeyring",
        "/etc/s3nap/recipients.pgp",
        |g, d| set(&mut g.keyring, file_path(&g.base, d).map(Some)),
        "Keyring or certificate file for the recipients (default: gpg --export).",
    )
    .shown(shown::keyring),
    run(
        "ChunkSize",
        "16MiB",
        settings::chunk_size,
        "Smallest part size, bytes or 25M/16MiB (5 MiB to 5 GiB, S3's part limits; default \
         16 MiB); larger streams get larger parts.",
    )
    .shown(|c| Some(format!("{} bytes", c.chunk_size))),
    run(
        "ParallelUploads",
        "4",
        settings::parallel_uploads,
        "Parts in flight at most (default 4; fewer when MemoryLimit is reached).",
    )
    .shown(|c| Some(c.parallel_uploads.to_string())),
    run(
        "MemoryLimit",
        "256MiB",
        settings::memory_limit,
        "Memory for parts being filled and stored, bytes or 256MiB (default 256 MiB, at least \
         10 MiB, and at least ChunkSize × ParallelUploads).",
    )
    .shown(|c| Some(format!("{} bytes", c.memory_limit))),
    run(
        "Retries",
        "5",
        settings::retries,
        "Retries of a failed S3 request (default 5, at most 100).",
    )
    .shown(|c| Some(c.retries.saturating_sub(1).to_string())),
    run(
        "Timeout",
        "60",
        |g, d| {
            set(
                &mut g.s3.timeout,
                positive(d).map(std::time::Duration::from_secs),
            )
        },
        "Seconds to wait for an S3 response (default 60).",
    )
    .shown(|c| Some(format!("{}s", c.s3.timeout.as_secs()))),
    run(
        "RetrievalTier",
        "Bulk",
        settings::retrieval_tier,
        "How recover retrieves archived (GLACIER, DEEP_ARCHIVE) archives: Standard (default), \
         Bulk (slower, cheaper) or Expedited (GLACIER only; DEEP_ARCHIVE gets Standard).",
    )
    .shown(|c| Some(c.retrieval.tier.to_string())),
    run(
        "RetrievalDays",
        "7",
        settings::retrieval_days,
        "Days a retrieved copy of a GLACIER or DEEP_ARCHIVE archive stays readable (default 3).",
    )
    .shown(|c| Some(c.retrieval.days.to_string())),
    Spec {
        show: Show::Group("Logging", shown::logging),
        ..run(
            "LogConfig",
            "/etc/s3nap/log4rs.yaml",
            settings::log_config,
            "A log4rs YAML file instead of LogFile and LogLevel.",
        )
    },
    run(
        "LogFile",
        "/var/log/s3nap.log",
        |g, d| set(&mut g.log.file, file_path(&g.base, d).map(Some)),
        "Log to this file (stderr keeps warnings).",
    ),
    run(
        "LogLevel",
        "info",
        settings::log_level,
        "The log's level: error, warn, info (default), debug or trace.",
    ),
    run(
        "Syslog",
        "yes",
        |g, d| set(&mut g.syslog, boolean(d)),
        "Also log to syslog (default no).",
    ),
    run(
        "SyslogFacility",
        "daemon",
        settings::syslog_facility,
        "The syslog facility (default daemon).",
    ),
    run(
        "SyslogTag",
        "s3nap",
        |g, d| set(&mut g.syslog_spec.tag, text(d)),
        "The syslog tag (default s3nap).",
    ),
    run(
        "SyslogSocket",
        "/dev/log",
        |g, d| set(&mut g.syslog_spec.socket, file_path(&g.base, d)),
        "The local syslog socket (default /dev/log).",
    ),
    run(
        "MetricsFile",
        "/var/lib/node_exporter/s3nap.prom",
        |g, d| set(&mut g.metrics_file, file_path(&g.base, d).map(Some)),
        "Prometheus textfile written after each run.",
    )
    .shown(|c| c.metrics_file.as_ref().map(|m| m.display().to_string())),
    run(
        "NotifyCommand",
        "/usr/local/bin/notify-admin",
        |g, d| set(&mut g.notify, command_words(d)),
        "Program run after each run with the summary on stdin (config check shows the \
         program, not its arguments).",
    )
    .shown(shown::notify),
    run(
        "TempDir",
        "/var/tmp",
        |_, d| single(d).map(drop),
        "Accepted from s3napback; s3nap never uses temporary files.",
    ),
    scoped(
        "Compression",
        "zstd:3",
        settings::compression,
        "zstd[:1-22] (default zstd:3), xz[:0-9] or none.",
    ),
    scoped(
        "StorageClass",
        "GLACIER",
        settings::storage_class,
        "The S3 storage class of the archives: STANDARD (default), STANDARD_IA, ONEZONE_IA, \
         INTELLIGENT_TIERING, GLACIER_IR, GLACIER or DEEP_ARCHIVE; manifests stay in STANDARD. \
         GLACIER and DEEP_ARCHIVE archives must be retrieved before recover can read them. \
         Not with a local store.",
    ),
    scoped(
        "Exclude",
        "/home/cache",
        settings::exclude,
        "Absolute paths left out of the directory sets they lie in; excludes accumulate \
         inward.",
    )
    .repeatable(),
    scoped(
        "OneFileSystem",
        "yes",
        |s, d| set(&mut s.one_file_system, boolean(d)),
        "Do not descend into other file systems (default no).",
    ),
    scoped(
        "MySQLOptions",
        "--defaults-extra-file=/etc/s3nap/my.cnf",
        settings::mysql_options,
        "Extra mysqldump/mariadb arguments, first on its command line (option files; a \
         password option is refused).",
    ),
    scoped(
        "Format",
        "custom",
        settings::format,
        "PostgreSQL dump format: plain (default) or custom.",
    ),
    scoped(
        "Restore",
        "mysql",
        |s, d| set(&mut s.restore, command_words(d)),
        "The command recover --restore pipes a dump into.",
    ),
    scoped(
        "CycleType",
        "HanoiCycle",
        settings::cycle_type,
        "SimpleCycle (default) or HanoiCycle.",
    ),
    scoped(
        "Frequency",
        "7",
        |s, d| set(&mut s.cycle.frequency, positive(d)),
        "Days between runs (default 1).",
    ),
    scoped(
        "Phase",
        "3",
        |s, d| set(&mut s.cycle.phase, number(d)),
        "SimpleCycle: days added to the day before Frequency applies (default 0).",
    ),
    scoped(
        "Diffs",
        "6",
        |s, d| set(&mut s.cycle.diffs, number(d)),
        "SimpleCycle: DIFF runs after each FULL (default 6).",
    ),
    scoped(
        "Fulls",
        "4",
        |s, d| set(&mut s.cycle.fulls, positive(d)),
        "SimpleCycle: FULL runs kept, each with its DIFFs (default 4).",
    ),
    scoped(
        "Discs",
        "5",
        |s, d| set(&mut s.cycle.discs, positive(d)),
        "HanoiCycle: number of discs (default 5).",
    ),
    scoped(
        "ArchiveOldestDisc",
        "yes",
        |s, d| set(&mut s.cycle.archive_oldest_disc, boolean(d)),
        "HanoiCycle: keep every backup of the largest disc for good (default no).",
    ),
    scoped(
        "RetentionPolicy",
        "30",
        |s, d| set(&mut s.cycle.retention_days, positive(d).map(Some)),
        "Days after which runs are retired even while they hold their slot.",
    ),
    scoped(
        "MinimumRedundancy",
        "1",
        |s, d| set(&mut s.cycle.minimum_redundancy, number(d)),
        "With RetentionPolicy, the newest N+1 restore points always stay (default 1).",
    ),
    scoped(
        "ObjectLock",
        "governance",
        settings::object_lock,
        "governance, compliance or no (default): lock every object of a run with S3 Object \
         Lock until retention could retire the run, plus ObjectLockMargin (the bucket must \
         have Object Lock enabled).",
    ),
    scoped(
        "Quilt",
        // (`yes` needs GpgRecipient and QuiltKeyFile besides.)
        "no",
        settings::quilt,
        "yes: files of at least QuiltMinSize are stored once, encrypted, under the store's \
         quilt/ and shared by every run and Host with the same QuiltKeyFile and recipients; \
         the archive keeps a reference (directory and picker sets with GpgRecipient only; \
         default no).",
    ),
    scoped(
        "QuiltMinSize",
        "64KiB",
        |s, d| set(&mut s.quilt_min_size, size(d)),
        "Smallest file that Quilt stores in the quilt, bytes or 64KiB (default 64 KiB).",
    ),
    run(
        "QuiltKeyFile",
        "/etc/s3nap/quilt.key",
        |g, d| set(&mut g.quilt_key_file, file_path(&g.base, d).map(Some)),
        "The quilt secret (s3nap quilt init writes it; owner-only, the same file on every \
         Host sharing the quilt), read when a quilted set runs.",
    )
    .shown(|c| {
        c.quilt_key_file
            .as_ref()
            .map(|p| format!("{} (read when a quilted set runs)", p.display()))
    }),
    scoped(
        "ObjectLockMargin",
        "7d",
        |s, d| set(&mut s.lock_margin, duration(d)),
        "How long locks last beyond the earliest retirement: 30s, 15m, 36h or 7d (default \
         7d).",
    ),
    scoped(
        "ObjectLockMaxDays",
        "3650",
        |s, d| set(&mut s.lock_max_days, positive(d)),
        "The longest lock, in days: permanent archives and runs outside rotation get it \
         (default 3650).",
    ),
    scoped(
        "UseTempFile",
        "no",
        |s, d| set(&mut s.cycle.use_temp_file, boolean(d)),
        "Accepted from s3napback; s3nap always streams.",
    ),
    scoped(
        "Run",
        "/usr/local/bin/dump-db",
        |s, d| set(&mut s.run, command_words(d).map(Some)),
        "The program of a <Command> (its stdout is the data) or <Picker> (it prints the paths \
         to archive).",
    )
    // Inherited, one Run would become the program of every <Command>.
    .places(&[Program]),
    scoped(
        "Master",
        "s3://www-site/public",
        |s, d| set(&mut s.bucket.master, bucket_url(d).map(Some)),
        "The bucket (and prefix) a bucket set protects.",
    )
    .places(&[Bucket]),
    scoped(
        "Replica",
        "s3://www-site-backup",
        settings::replica,
        "The versioned bucket whose versions the snapshots reference (may be the Master's).",
    )
    .places(&[Bucket]),
    scoped(
        "Mode",
        "copy",
        settings::mode,
        "replicated (default): S3 replication fills the replica; copy: each run copies new \
         and changed objects first.",
    )
    .places(&[Bucket]),
    scoped(
        "Workers",
        "8",
        |s, d| set(&mut s.bucket.workers, positive(d).map(|n| n as usize)),
        "Requests in flight for listing, copying and deleting (default 8).",
    )
    .places(&[Bucket]),
    // Operations (issue 17): a set's Before/After commands, and how the process treats the
    // machine. README, "Running several configurations" and "Before and After commands".
    scoped(
        "Before",
        "/usr/local/sbin/snapshot-create",
        |s, d| set(&mut s.hooks.before, command_words(d)),
        "A program run before the set's run (no shell); if it fails, the set fails with its \
         error output and is not backed up. Inherited by the sets inside.",
    ),
    scoped(
        "After",
        "/usr/local/sbin/snapshot-remove",
        |s, d| set(&mut s.hooks.after, command_words(d)),
        "A program run after the set's run whenever it was attempted (committed, failed, or \
         its Before failed), with S3NAP_STATUS in its environment.",
    ),
    scoped(
        "HookTimeout",
        "10m",
        settings::hook_timeout,
        "How long Before or After may run before it is stopped (SIGTERM, then SIGKILL) and \
         counts as failed: 30s, 15m, 2h (default 1h; 0: no limit).",
    ),
    run(
        "MaxUploadRate",
        "10M",
        settings::max_upload_rate,
        "Bytes per second at most for the archive parts of all uploads of the process \
         together, e.g. 10M or 2MiB (default: no limit).",
    )
    .shown(|c| c.operations.max_upload_rate.map(|r| format!("{r} bytes/s"))),
    run(
        "Nice",
        "10",
        settings::nice,
        "CPU niceness of run, prune and verify and of the programs they start: -20 to 19 \
         (default: unchanged).",
    )
    .shown(|c| c.operations.nice.map(|n| n.to_string())),
    run(
        "IoNice",
        "idle",
        settings::io_nice,
        "I/O scheduling class of run, prune and verify and of the programs they start: idle, \
         best-effort[:0-7] or realtime[:0-7] (default: unchanged).",
    )
    .shown(|c| c.operations.io_nice.map(|p| p.to_string())),
    Spec::new(
        "Cycle",
        "daily",
        Apply::Cycle,
        "A group of sets sharing settings; a set may be in several cycles.",
    )
    .block(Cycle)
    .repeatable(),
    source(
        "Directory",
        "/etc",
        sets::directory,
        "A directory set (dir/PATH).",
    ),
    source(
        "MySQL",
        "shop",
        sets::mysql,
        "A MySQL/MariaDB dump set (mysql/DB; all: every database).",
    ),
    source(
        "PostgreSQL",
        "app",
        sets::postgresql,
        "A PostgreSQL dump set of [USER@]DB (pgsql/DB; all: pg_dumpall).",
    ),
    source(
        "Subversion",
        "/srv/svn/repos/p",
        sets::subversion,
        "A Subversion repository (svn/REPO), incremental dumps.",
    ),
    source(
        "SubversionDir",
        "/srv/svn/repos",
        sets::subversion_dir,
        "Every repository in a directory, each its own set.",
    ),
    source(
        "SnapshotsDir",
        "/etc/s3nap/snapshots",
        sets::snapshots_dir,
        "Every executable in a directory as an s3-sysbackup snapshotter (cmd/FILE).",
    ),
    set_block(
        "Command",
        Program,
        "db",
        sets::command,
        "A program whose stdout is the data (cmd/NAME), given by its Run line.",
    ),
    set_block(
        "Picker",
        Program,
        "home",
        sets::picker,
        "A tar of exactly the paths a program prints (picker/NAME), given by its Run line.",
    ),
    set_block(
        "Bucket",
        Bucket,
        "www",
        sets::bucket,
        "A versioned S3 bucket whose version index is the set's archive (bucket/NAME).",
    ),
    Spec::new(
        "Include",
        "conf.d",
        Apply::Include,
        "Reads a file, or every file of a directory in name order, in place of the line \
         (relative to the including file).",
    )
    .places(EVERYWHERE)
    .repeatable(),
];

/// The entry of a directive line called `name`, in any case.
pub(super) fn line(name: &str) -> Option<&'static Spec> {
    DIRECTIVES
        .iter()
        .find(|s| s.is_line() && s.name.eq_ignore_ascii_case(name))
}

/// The entry of a block called `name`, in any case.
fn block(name: &str) -> Option<&'static Spec> {
    DIRECTIVES
        .iter()
        .find(|s| s.inside().is_some() && s.name.eq_ignore_ascii_case(name))
}

/// Where the items inside `parent` (`None`: the top level) stand.
fn context(parent: Option<&Spec>) -> Context {
    parent.and_then(Spec::inside).unwrap_or(Top)
}

/// The blocks whose inside is `context`.
fn blocks_of(context: Context) -> impl Iterator<Item = &'static Spec> {
    DIRECTIVES
        .iter()
        .filter(move |s| s.form == Form::Block(context) || s.form == Form::LineOrBlock(context))
}

/// The entry of a directive line inside `parent` (`None`: the top level), or why the line is
/// wrong there; `seen` keeps where this level's single-valued directives were given.
pub(super) fn check_line(
    d: &Directive,
    parent: Option<&Spec>,
    seen: &mut HashMap<&'static str, Pos>,
) -> Result<&'static Spec, ConfigError> {
    let name = &d.name.text;
    let Some(spec) = line(name) else {
        let message = match block(name) {
            Some(b) => block_as_line(name, b),
            None => format!(
                "unknown directive '{name}'{}{}",
                parent
                    .map(|p| format!(" inside <{}>", p.name.to_ascii_lowercase()))
                    .unwrap_or_default(),
                suggestion(name, DIRECTIVES.iter())
            ),
        };
        return Err(err(&d.name.pos, message));
    };
    if !spec.places.contains(&context(parent)) {
        return Err(err(&d.name.pos, misplaced(name, spec.places)));
    }
    // A second value in the same block would silently replace the first: which one the author
    // meant is unknowable, so it is an error (inner blocks may still override).
    if !spec.repeatable {
        if let Some(first) = seen.insert(spec.name, d.name.pos.clone()) {
            return Err(err(
                &d.name.pos,
                format!("{name} is already set at {first}"),
            ));
        }
    }
    Ok(spec)
}

/// The entry of a block inside `parent` (`None`: the top level), or why it is wrong there.
pub(super) fn check_block(b: &Block, parent: Option<&Spec>) -> Result<&'static Spec, ConfigError> {
    let name = &b.name.text;
    let Some(spec) = block(name) else {
        let blocks = DIRECTIVES.iter().filter(|s| s.inside().is_some());
        return Err(err(
            &b.name.pos,
            format!("unknown block <{name}>{}", suggestion(name, blocks)),
        ));
    };
    if !spec.places.contains(&context(parent)) {
        let outer = parent.map_or("the top level".into(), |p| {
            format!("<{}>", p.name.to_ascii_lowercase())
        });
        return Err(err(
            &b.name.pos,
            format!("<{name}> cannot be nested inside {outer}"),
        ));
    }
    Ok(spec)
}

/// A block's name written as a line.
fn block_as_line(name: &str, block: &Spec) -> String {
    let needs = if block.inside() == Some(Program) {
        " with a Run line"
    } else {
        ""
    };
    format!("{name} is a block: <{name} NAME>{needs}")
}

/// Why a known directive may not stand where it was given: where it may.
fn misplaced(name: &str, places: &[Context]) -> String {
    let blocks: Vec<String> = places
        .iter()
        .flat_map(|c| blocks_of(*c))
        .map(|b| format!("<{} NAME>", b.name))
        .collect();
    let blocks = blocks.join(" or ");
    match (places.contains(&Top), blocks.is_empty()) {
        (true, true) => format!("{name} is only allowed at the top level"),
        (true, false) => {
            format!("{name} is only allowed at the top level or inside a {blocks} block")
        }
        (false, _) => format!("{name} belongs inside a {blocks} block"),
    }
}

/// ` (did you mean X?)` for the entry whose name is closest to a misspelt `given`, if one is
/// close enough to be what was meant.
fn suggestion<'a>(given: &str, candidates: impl Iterator<Item = &'a Spec>) -> String {
    let given = given.to_ascii_lowercase();
    candidates
        .map(|s| (edit_distance(&given, &s.name.to_ascii_lowercase()), s.name))
        .filter(|(distance, name)| *distance <= (name.len() / 3).max(1))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, name)| format!(" (did you mean {name}?)"))
        .unwrap_or_default()
}

/// The fewest single-character insertions, deletions, substitutions and swaps of neighbours
/// turning `a` into `b` (optimal string alignment distance: swapped letters are a common typo).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    // d[i][j]: the distance between the first i characters of a and the first j of b.
    let mut d: Vec<Vec<usize>> = (0..=a.len())
        .map(|i| (0..=b.len()).map(|j| if i == 0 { j } else { i }).collect())
        .collect();
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let substitution = d[i - 1][j - 1] + usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = substitution.min(d[i - 1][j] + 1).min(d[i][j - 1] + 1);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

/// Where an entry may stand, as the man page says it.
fn places_text(places: &[Context]) -> String {
    if places == EVERYWHERE {
        return "anywhere".into();
    }
    let mut names: Vec<String> = Vec::new();
    for place in places {
        match place {
            Top => names.push("the top level".into()),
            inside => names.extend(blocks_of(*inside).map(|b| format!("<{}>", b.name))),
        }
    }
    names.join(", ")
}

/// The man page's CONFIGURATION section: every directive and block of the table.
pub fn man_section() -> Roff {
    let mut roff = Roff::new();
    roff.control("SH", ["CONFIGURATION"]);
    // Hyphenated, a directive name in running text would read as two words.
    roff.control("nh", []);
    roff.text([roman(
        "The configuration file (-c, default /etc/s3nap/s3nap.conf) holds directives, one a \
         line (Name value...), and blocks (<Name arg> ... </Name>) whose settings apply to the \
         sets inside them. Names are case-insensitive; an unknown, misplaced or repeated \
         single-valued directive is an error.",
    )]);
    for spec in DIRECTIVES {
        let (written, example) = match spec.form {
            Form::Line => (
                spec.name.to_string(),
                format!("{} {}", spec.name, spec.example),
            ),
            Form::Block(_) => (
                format!("<{}>", spec.name),
                format!("<{0} {1}> ... </{0}>", spec.name, spec.example),
            ),
            Form::LineOrBlock(_) => (
                format!("{0}, <{0}>", spec.name),
                format!("{} {}", spec.name, spec.example),
            ),
        };
        roff.control("TP", []);
        roff.text([bold(written)]);
        roff.text([roman(format!(
            "{} Where: {}{}. Example: {example}",
            spec.help,
            places_text(spec.places),
            if spec.repeatable { "; may repeat" } else { "" },
        ))]);
    }
    roff
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::resolve::resolve;
    use crate::config::syntax::parse_str;

    fn load(text: &str) -> Result<Config, ConfigError> {
        let path = Path::new("/etc/s3nap/test.conf");
        resolve(path, &parse_str(path, text)?)
    }

    const CONTEXTS: [Context; 5] = [Top, Cycle, Source, Program, Bucket];

    /// `lines`, one a line, without those of the directive `tested`: it gives the value itself.
    fn lines_but(lines: &[&str], tested: Option<&str>) -> String {
        lines
            .iter()
            .filter(|l| !tested.is_some_and(|t| l.starts_with(&format!("{t} "))))
            .map(|l| format!("{l}\n"))
            .collect()
    }

    /// A configuration complete but for `inner`, which stands at `context`.
    fn surround(context: Context, tested: Option<&str>, inner: &str) -> String {
        // With what ExternalId, RoleSessionName and KmsKeyId need beside them.
        let base = [
            "Bucket s3://b/p",
            "DiffDir /d",
            "Host h",
            "RoleArn arn:aws:iam::123456789012:role/r",
            "ServerSideEncryption aws:kms",
        ];
        let (open, lines, close): (&str, &[&str], &str) = match context {
            Top => return format!("{}{inner}", lines_but(&base, tested)),
            Cycle => ("<Cycle c>", &[], "</Cycle>"),
            Source => ("<Directory /srv>", &[], "</Directory>"),
            Program => ("<Command c>", &["Run /bin/true"], "</Command>"),
            Bucket => (
                "<Bucket b>",
                &["Master s3://m", "Replica s3://r"],
                "</Bucket>",
            ),
        };
        format!(
            "{}{open}\n{}{inner}{close}\n",
            lines_but(&base, None),
            lines_but(lines, tested)
        )
    }

    /// The entry written where the configuration would have it: a line, or a block with
    /// what its kind of block needs.
    fn written(spec: &Spec) -> String {
        match spec.form {
            Form::Line | Form::LineOrBlock(_) => format!("{} {}\n", spec.name, spec.example),
            Form::Block(inside) => {
                let body = match inside {
                    Program => "Run /bin/true\n",
                    Bucket => "Master s3://m\nReplica s3://r\n",
                    _ => "",
                };
                format!("<{0} {1}>\n{body}</{0}>\n", spec.name, spec.example)
            }
        }
    }

    #[test]
    fn every_entry_is_accepted_where_the_table_allows_it_and_refused_elsewhere() {
        for spec in DIRECTIVES {
            // Include is spliced in by syntax::load, before anything here sees it.
            if let Apply::Include = spec.apply {
                continue;
            }
            let tested = spec.is_line().then_some(spec.name);
            for context in CONTEXTS {
                let text = surround(context, tested, &written(spec));
                let result = load(&text);
                if spec.places.contains(&context) {
                    assert!(result.is_ok(), "{text}: {}", result.unwrap_err());
                    continue;
                }
                let e = result.expect_err(&text);
                assert!(
                    ["only allowed", "belongs inside", "cannot be nested"]
                        .iter()
                        .any(|m| e.message.contains(m))
                        && e.message.contains(spec.name),
                    "{text}: {e}"
                );
            }
        }
    }

    #[test]
    fn a_block_written_as_a_line_is_told_so() {
        for spec in DIRECTIVES.iter().filter(|s| s.form == Form::Block(Program)) {
            let e = load(&surround(Top, None, &format!("{} x\n", spec.name))).unwrap_err();
            let expected = format!("{0} is a block: <{0} NAME> with a Run line", spec.name);
            assert_eq!(e.message, expected);
        }
    }

    #[test]
    fn repeating_a_single_valued_entry_is_an_error_and_a_repeatable_one_is_not() {
        let lines = DIRECTIVES
            .iter()
            .filter(|s| s.form == Form::Line && !matches!(s.apply, Apply::Include));
        for spec in lines {
            let Some(&context) = spec.places.first() else {
                panic!("{} may stand nowhere", spec.name)
            };
            let line = written(spec);
            let text = surround(context, Some(spec.name), &format!("{line}{line}"));
            match (spec.repeatable, load(&text)) {
                (true, Ok(_)) => {}
                (false, Err(e)) if e.message.contains("is already set at") => {}
                (_, other) => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn misspelt_names_are_answered_with_the_table_entry() {
        for spec in DIRECTIVES {
            let mut typo: Vec<char> = spec.name.chars().collect();
            typo.insert(1, typo[1]);
            let typo: String = typo.into_iter().collect();
            let expected = format!(" (did you mean {}?)", spec.name);
            assert_eq!(suggestion(&typo, DIRECTIVES.iter()), expected, "{typo}");
        }
        let e = load(&surround(Top, None, "Frequncy 2\n")).unwrap_err();
        assert_eq!(
            e.message,
            "unknown directive 'Frequncy' (did you mean Frequency?)"
        );
        let e = load(&surround(Cycle, None, "gpgrecipeint x\n")).unwrap_err();
        assert_eq!(
            e.message,
            "unknown directive 'gpgrecipeint' inside <cycle> (did you mean GpgRecipient?)"
        );
        let e = load(&surround(Top, None, "<Cylce x>\n</Cylce>\n")).unwrap_err();
        assert_eq!(e.message, "unknown block <Cylce> (did you mean Cycle?)");
        // Nothing is suggested when nothing is close.
        let e = load(&surround(Top, None, "Frobnicate 3\n")).unwrap_err();
        assert_eq!(e.message, "unknown directive 'Frobnicate'");
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("cylce", "cycle"), 1);
    }

    #[test]
    fn names_are_unique_and_the_man_page_lists_every_one() {
        let page = man_section().to_roff();
        for (i, spec) in DIRECTIVES.iter().enumerate() {
            let twin = DIRECTIVES[..i].iter().find(|s| {
                s.name.eq_ignore_ascii_case(spec.name)
                    && (s.is_line() && spec.is_line()
                        || s.inside().is_some() && spec.inside().is_some())
            });
            assert!(twin.is_none(), "{} twice", spec.name);
            assert!(
                page.contains(spec.name),
                "{} not in the man page",
                spec.name
            );
        }
    }
}
