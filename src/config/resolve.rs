//! Syntax tree → typed configuration.
//!
//! Global directives live at the top level. Cycle settings, `Compression` and `Exclude` may be
//! given at any level and are inherited inward (a `<Cycle>` sees the top level, a `<Directory>`
//! block sees its `<Cycle>`; the innermost value wins, excludes accumulate). Unlike s3napback,
//! nothing is silently ignored: an unknown or misplaced directive, a missing or malformed value,
//! a repeated single-valued directive or a set configured twice is an error at its position.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use super::syntax::{Block, ConfigError, Directive, Item, Pos, Word};
use super::{
    BucketMode, BucketSpec, BucketUrl, Config, CycleSettings, CycleType, S3Spec, SetSpec,
    SourceSpec, StoreSpec,
};
use crate::pipeline::compress::Compression;
use crate::pipeline::parts::{MAX_PART, MIN_PART};

/// With the backoff capped at 30 s, more retries than this only hide a dead endpoint.
const MAX_RETRIES: u64 = 100;

const GLOBALS: &[&str] = &[
    "diffdir",
    "tempdir",
    "bucket",
    "endpoint",
    "region",
    "s3keyfile",
    "gpgrecipient",
    "gpgkeyring",
    "chunksize",
    "host",
    "paralleluploads",
    "retries",
    "timeout",
    "logconfig",
    "logfile",
    "loglevel",
    "syslog",
    "syslogfacility",
    "syslogtag",
    "syslogsocket",
    "metricsfile",
    "notifycommand",
];

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

const SCOPED: &[&str] = &[
    "cycletype",
    "frequency",
    "phase",
    "diffs",
    "fulls",
    "discs",
    "archiveoldestdisc",
    "usetempfile",
    "exclude",
    "compression",
    "retentionpolicy",
    "minimumredundancy",
    "onefilesystem",
    "mysqloptions",
    "format",
    "restore",
    "run",
];

/// Directives of a `<Bucket NAME>` block only (`Region` and `Endpoint` may also be given there,
/// overriding the top level's for that bucket).
const BUCKET_SETTINGS: &[&str] = &["master", "replica", "mode", "workers"];

/// Directives (and blocks) that configure a set; each value is one set.
const SOURCES: &[&str] = &[
    "directory",
    "mysql",
    "postgresql",
    "subversion",
    "subversiondir",
    "command",
    "picker",
    "snapshotsdir",
];

/// A command line: several words, or one quoted string split by the configuration's quoting.
fn command_words(d: &Directive) -> Result<Vec<String>, ConfigError> {
    match d.values.as_slice() {
        [] => Err(err(&d.name.pos, format!("{} needs a program", d.name.text))),
        [one] if one.text.contains(char::is_whitespace) => {
            super::syntax::split_words(&one.text).map_err(|m| err(&one.pos, m))
        }
        many => Ok(many.iter().map(|w| w.text.clone()).collect()),
    }
}

fn err(pos: &Pos, message: impl Into<String>) -> ConfigError {
    ConfigError::new(pos, message)
}

fn single(d: &Directive) -> Result<&Word, ConfigError> {
    match d.values.as_slice() {
        [one] => Ok(one),
        [] => Err(err(&d.name.pos, format!("{} needs a value", d.name.text))),
        [_, extra, ..] => Err(err(
            &extra.pos,
            format!("{} takes one value, found more", d.name.text),
        )),
    }
}

fn number(d: &Directive) -> Result<u64, ConfigError> {
    let w = single(d)?;
    w.text.parse().map_err(|_| {
        err(
            &w.pos,
            format!("{} must be a whole number, not '{}'", d.name.text, w.text),
        )
    })
}

fn positive(d: &Directive) -> Result<u64, ConfigError> {
    let n = number(d)?;
    if n == 0 {
        return Err(err(
            &single(d)?.pos,
            format!("{} must be at least 1", d.name.text),
        ));
    }
    Ok(n)
}

/// A value with no word means yes, as in Config::ApacheFormat.
fn boolean(d: &Directive) -> Result<bool, ConfigError> {
    if d.values.is_empty() {
        return Ok(true);
    }
    let w = single(d)?;
    match w.text.to_ascii_lowercase().as_str() {
        "1" | "yes" | "on" | "true" => Ok(true),
        "0" | "no" | "off" | "false" => Ok(false),
        _ => Err(err(
            &w.pos,
            format!(
                "{} must be yes/no/on/off/true/false/1/0, not '{}'",
                d.name.text, w.text
            ),
        )),
    }
}

/// Bytes, with an optional K/M/G (powers of 1000) or KiB/MiB/GiB (powers of 1024) suffix.
fn size(d: &Directive) -> Result<u64, ConfigError> {
    let w = single(d)?;
    let text = w.text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        _ => u64::MAX,
    };
    match digits.parse::<u64>() {
        Ok(n) if mult != u64::MAX && n > 0 => n
            .checked_mul(mult)
            .ok_or_else(|| err(&w.pos, format!("{} is too large", d.name.text))),
        _ => Err(err(
            &w.pos,
            format!(
                "{} must be a size like 25000000, 25M or 16MiB, not '{}'",
                d.name.text, w.text
            ),
        )),
    }
}

fn absolute_path(d_name: &str, w: &Word) -> Result<PathBuf, ConfigError> {
    let path = Path::new(&w.text);
    if !path.is_absolute() {
        return Err(err(
            &w.pos,
            format!("{d_name} needs an absolute path, not '{}'", w.text),
        ));
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(err(
            &w.pos,
            format!("{d_name} path '{}' must not contain '..'", w.text),
        ));
    }
    Ok(path.components().collect())
}

fn endpoint(d: &Directive) -> Result<String, ConfigError> {
    let w = single(d)?;
    if !(w.text.starts_with("http://") || w.text.starts_with("https://")) {
        return Err(err(
            &w.pos,
            format!(
                "Endpoint must be an http:// or https:// URL, not '{}'",
                w.text
            ),
        ));
    }
    Ok(w.text.clone())
}

fn bucket_url(d: &Directive) -> Result<BucketUrl, ConfigError> {
    let w = single(d)?;
    BucketUrl::parse(&w.text).map_err(|m| err(&w.pos, format!("{}: {m}", d.name.text)))
}

fn file_path(base: &Path, w: &Word) -> PathBuf {
    let p = Path::new(&w.text);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

#[derive(Debug, Clone)]
struct Scope {
    cycle: CycleSettings,
    compression: Compression,
    excludes: Vec<PathBuf>,
    one_file_system: bool,
    mysql_options: Vec<String>,
    pg_custom_format: bool,
    restore: Vec<String>,
    /// `Run` of a `<Command>` or `<Picker>` block, with where it was written.
    run: Option<(Vec<String>, Pos)>,
    bucket: BucketScope,
}

/// Settings of a `<Bucket>` block; `Region` and `Endpoint` are inherited from the top level.
#[derive(Debug, Clone)]
struct BucketScope {
    master: Option<BucketUrl>,
    replica: Option<(BucketUrl, Pos)>,
    region: Option<String>,
    endpoint: Option<String>,
    mode: BucketMode,
    workers: usize,
}

impl Scope {
    /// This level's own settings over the inherited ones.
    fn enter(&self, items: &[Item], name: Option<String>) -> Result<Scope, ConfigError> {
        let mut scope = self.clone();
        if name.is_some() {
            scope.cycle.name = name;
        }
        // A second value in the same block would silently replace the first: which one the
        // author meant is unknowable, so it is an error (inner blocks may still override).
        let mut seen: HashMap<String, Pos> = HashMap::new();
        for item in items {
            let Item::Directive(d) = item else { continue };
            let lower = d.name.text.to_ascii_lowercase();
            let single_valued = lower != "exclude"
                && (SCOPED.contains(&lower.as_str())
                    || BUCKET_SETTINGS.contains(&lower.as_str())
                    || lower == "region"
                    || lower == "endpoint");
            if single_valued {
                if let Some(first) = seen.get(&lower) {
                    return Err(err(
                        &d.name.pos,
                        format!("{} is already set at {first}", d.name.text),
                    ));
                }
                seen.insert(lower.clone(), d.name.pos.clone());
            }
            let c = &mut scope.cycle;
            match lower.as_str() {
                "cycletype" => {
                    let w = single(d)?;
                    c.cycle_type = match w.text.to_ascii_lowercase().as_str() {
                        "simplecycle" | "simple" => CycleType::Simple,
                        "hanoicycle" | "hanoi" => CycleType::Hanoi,
                        _ => {
                            return Err(err(
                                &w.pos,
                                format!(
                                    "CycleType must be SimpleCycle or HanoiCycle, not '{}'",
                                    w.text
                                ),
                            ))
                        }
                    }
                }
                "frequency" => c.frequency = positive(d)?,
                "phase" => c.phase = number(d)?,
                "diffs" => c.diffs = number(d)?,
                "fulls" => c.fulls = positive(d)?,
                "discs" => c.discs = positive(d)?,
                "archiveoldestdisc" => c.archive_oldest_disc = boolean(d)?,
                "usetempfile" => c.use_temp_file = boolean(d)?,
                "retentionpolicy" => c.retention_days = Some(positive(d)?),
                "onefilesystem" => scope.one_file_system = boolean(d)?,
                "mysqloptions" => {
                    if let Some(w) = d.values.iter().find(|w| mysql_password_option(&w.text)) {
                        return Err(err(
                            &w.pos,
                            format!(
                                "MySQLOptions must not carry a password ('{}'): the dump's \
                                 command line shows in the process list and is recorded in \
                                 the run's manifest; put it in an option file \
                                 (MySQLOptions --defaults-extra-file=/etc/s3nap/my.cnf, with \
                                 password=… under [client])",
                                password_option_name(&w.text)
                            ),
                        ));
                    }
                    scope.mysql_options = d.values.iter().map(|w| w.text.clone()).collect()
                }
                "format" => {
                    let w = single(d)?;
                    scope.pg_custom_format = match w.text.to_ascii_lowercase().as_str() {
                        "plain" => false,
                        "custom" => true,
                        _ => {
                            return Err(err(
                                &w.pos,
                                format!("Format must be plain or custom, not '{}'", w.text),
                            ))
                        }
                    };
                }
                "restore" => scope.restore = command_words(d)?,
                "run" => scope.run = Some((command_words(d)?, d.name.pos.clone())),
                "minimumredundancy" => c.minimum_redundancy = number(d)?,
                "master" => scope.bucket.master = Some(bucket_url(d)?),
                "replica" => scope.bucket.replica = Some((bucket_url(d)?, d.name.pos.clone())),
                "region" => scope.bucket.region = Some(single(d)?.text.clone()),
                "endpoint" => scope.bucket.endpoint = Some(endpoint(d)?),
                "workers" => scope.bucket.workers = positive(d)? as usize,
                "mode" => {
                    let w = single(d)?;
                    scope.bucket.mode = match w.text.to_ascii_lowercase().as_str() {
                        "replicated" => BucketMode::Replicated,
                        "copy" => BucketMode::Copy,
                        _ => {
                            return Err(err(
                                &w.pos,
                                format!("Mode must be replicated or copy, not '{}'", w.text),
                            ))
                        }
                    };
                }
                "compression" => {
                    let w = single(d)?;
                    scope.compression = Compression::parse(&w.text).map_err(|m| err(&w.pos, m))?;
                }
                "exclude" => {
                    if d.values.is_empty() {
                        return Err(err(&d.name.pos, "Exclude needs a path"));
                    }
                    for w in &d.values {
                        scope.excludes.push(absolute_path("Exclude", w)?);
                    }
                }
                _ => {}
            }
        }
        Ok(scope)
    }
}

struct Resolver {
    sets: Vec<SetSpec>,
    /// (set name, cycle) → where it was configured.
    names: HashMap<(String, Option<String>), Pos>,
}

/// The `<Bucket NAME>` set `w` names, from its block's settings.
fn bucket_spec(b: &BucketScope, w: &Word) -> Result<BucketSpec, ConfigError> {
    if w.text.is_empty() || w.text.contains('/') {
        return Err(err(
            &w.pos,
            format!("<Bucket> needs a name without '/', not '{}'", w.text),
        ));
    }
    let Some(master) = b.master.clone() else {
        return Err(err(
            &w.pos,
            format!("<Bucket {}> needs a Master s3://bucket[/prefix]", w.text),
        ));
    };
    let Some((replica, replica_pos)) = b.replica.clone() else {
        return Err(err(
            &w.pos,
            format!(
                "<Bucket {}> needs a Replica s3://bucket (the versioned bucket; it may be the master's own)",
                w.text
            ),
        ));
    };
    if !replica.prefix.is_empty() {
        return Err(err(
            &replica_pos,
            "Replica names a whole bucket: it holds the master's keys as they are",
        ));
    }
    if b.mode == BucketMode::Copy && replica.bucket == master.bucket {
        return Err(err(
            &replica_pos,
            "Mode copy needs a Replica other than the Master bucket",
        ));
    }
    Ok(BucketSpec {
        name: w.text.clone(),
        master,
        replica: replica.bucket,
        region: b.region.clone(),
        endpoint: b.endpoint.clone(),
        mode: b.mode,
        workers: b.workers,
    })
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

fn database(directive: &str, w: &Word) -> Result<String, ConfigError> {
    let bad = w.text.is_empty() || w.text.contains('/') || w.text.starts_with('-');
    if bad {
        return Err(err(
            &w.pos,
            format!(
                "{directive} needs a database name (or 'all'), not '{}'",
                w.text
            ),
        ));
    }
    Ok(w.text.clone())
}

impl Resolver {
    /// One set of kind `source` (a lower-case directive name) for the value `w`.
    fn add_set(&mut self, source: &str, scope: &Scope, w: &Word) -> Result<(), ConfigError> {
        let spec = match source {
            "directory" => {
                let path = absolute_path("Directory", w)?;
                let excludes = scope
                    .excludes
                    .iter()
                    .filter(|x| x.starts_with(&path) && **x != path)
                    .cloned()
                    .collect();
                SourceSpec::Directory {
                    path,
                    excludes,
                    one_file_system: scope.one_file_system,
                }
            }
            "mysql" => SourceSpec::MySql {
                database: database("MySQL", w)?,
                options: scope.mysql_options.clone(),
            },
            "postgresql" => {
                let (user, db) = match w.text.split_once('@') {
                    Some((u, d)) if !u.is_empty() => (Some(u.to_string()), d),
                    _ => (None, w.text.as_str()),
                };
                // `user:password@db` or a libpq connection string (`dbname=… password=…`)
                // would put a password on pg_dump's command line and into the manifest.
                if user.as_deref().is_some_and(|u| u.contains(':')) || db.contains('=') {
                    return Err(err(
                        &w.pos,
                        "PostgreSQL takes [USER@]DB, not a password or connection string: \
                         give passwords to libpq in ~/.pgpass or the file PGPASSFILE names",
                    ));
                }
                let db_word = Word {
                    text: db.to_string(),
                    pos: w.pos.clone(),
                };
                SourceSpec::PostgreSql {
                    database: database("PostgreSQL", &db_word)?,
                    user,
                    custom_format: scope.pg_custom_format,
                }
            }
            "subversion" => SourceSpec::Subversion {
                repository: absolute_path("Subversion", w)?,
                full_only: false,
            },
            "subversiondir" => SourceSpec::SubversionDir {
                directory: absolute_path("SubversionDir", w)?,
            },
            "snapshotsdir" => SourceSpec::SnapshotsDir {
                directory: absolute_path("SnapshotsDir", w)?,
            },
            "command" | "picker" => {
                if w.text.is_empty() || w.text.contains('/') {
                    return Err(err(
                        &w.pos,
                        format!("<{source}> needs a name without '/', not '{}'", w.text),
                    ));
                }
                let Some((run, _)) = scope.run.clone() else {
                    return Err(err(
                        &w.pos,
                        format!("<{source} {}> needs a Run line", w.text),
                    ));
                };
                if source == "command" {
                    SourceSpec::Command {
                        name: w.text.clone(),
                        run,
                        fd: false,
                    }
                } else {
                    SourceSpec::Picker {
                        name: w.text.clone(),
                        run,
                    }
                }
            }
            "bucket" => SourceSpec::Bucket(bucket_spec(&scope.bucket, w)?),
            other => unreachable!("{other} is not a source"),
        };
        let name = spec.set_name();
        let id = (name.clone(), scope.cycle.name.clone());
        if let Some(first) = self.names.get(&id) {
            return Err(err(
                &w.pos,
                format!(
                    "set '{name}' is already configured{} at {first}",
                    match &scope.cycle.name {
                        Some(c) => format!(" in cycle '{c}'"),
                        None => String::new(),
                    }
                ),
            ));
        }
        self.names.insert(id, w.pos.clone());
        self.sets.push(SetSpec {
            name,
            source: spec,
            compression: scope.compression,
            cycle: scope.cycle.clone(),
            restore: scope.restore.clone(),
            pos: w.pos.clone(),
        });
        Ok(())
    }

    /// Walks one level; `block` is the enclosing block's lower-case name.
    fn walk(
        &mut self,
        items: &[Item],
        scope: &Scope,
        block: Option<&str>,
    ) -> Result<(), ConfigError> {
        let in_source_block = block.is_some_and(|b| SOURCES.contains(&b) || b == "bucket");
        for item in items {
            match item {
                Item::Directive(d) => {
                    let name = d.name.text.to_ascii_lowercase();
                    if (name == "command" || name == "picker") && !in_source_block {
                        return Err(err(
                            &d.name.pos,
                            format!(
                                "{} is a block: <{} NAME> with a Run line",
                                d.name.text, d.name.text
                            ),
                        ));
                    } else if name == "run" && !matches!(block, Some("command" | "picker")) {
                        // Inherited, one Run would become the program of every <Command>.
                        return Err(err(
                            &d.name.pos,
                            format!(
                                "{} belongs inside a <Command NAME> or <Picker NAME> block",
                                d.name.text
                            ),
                        ));
                    } else if SOURCES.contains(&name.as_str()) && !in_source_block {
                        if d.values.is_empty() {
                            return Err(err(&d.name.pos, format!("{} needs a value", d.name.text)));
                        }
                        for w in &d.values {
                            self.add_set(&name, scope, w)?;
                        }
                    } else if SCOPED.contains(&name.as_str())
                        || (block == Some("bucket")
                            && (BUCKET_SETTINGS.contains(&name.as_str())
                                || name == "region"
                                || name == "endpoint"))
                    {
                        // Applied by Scope::enter.
                    } else if GLOBALS.contains(&name.as_str()) {
                        if block.is_some() {
                            return Err(err(
                                &d.name.pos,
                                format!("{} is only allowed at the top level", d.name.text),
                            ));
                        }
                    } else {
                        return Err(err(
                            &d.name.pos,
                            format!(
                                "unknown directive '{}'{}",
                                d.name.text,
                                match block {
                                    Some(b) => format!(" inside <{b}>"),
                                    None => String::new(),
                                }
                            ),
                        ));
                    }
                }
                Item::Block(b) => self.block(b, scope, block)?,
            }
        }
        Ok(())
    }

    fn block(&mut self, b: &Block, scope: &Scope, parent: Option<&str>) -> Result<(), ConfigError> {
        let name = b.name.text.to_ascii_lowercase();
        // `Bucket` is the store as a directive and a bucket set as a block.
        let is_source = SOURCES.contains(&name.as_str()) || name == "bucket";
        match (name.as_str(), parent) {
            ("cycle", None) => {
                let [label] = b.args.as_slice() else {
                    return Err(err(&b.name.pos, "<Cycle> needs exactly one name"));
                };
                let inner = scope.enter(&b.items, Some(label.text.clone()))?;
                self.walk(&b.items, &inner, Some("cycle"))
            }
            (_, None | Some("cycle")) if is_source => {
                let [arg] = b.args.as_slice() else {
                    return Err(err(
                        &b.name.pos,
                        format!("<{}> needs exactly one value", b.name.text),
                    ));
                };
                let inner = scope.enter(&b.items, None)?;
                // Only settings inside: walk rejects anything else.
                self.walk(&b.items, &inner, Some(&name))?;
                self.add_set(&name, &inner, arg)
            }
            ("cycle", Some(p)) => Err(err(
                &b.name.pos,
                format!("<{}> cannot be nested inside <{p}>", b.name.text),
            )),
            (_, Some(p)) if is_source => Err(err(
                &b.name.pos,
                format!("<{}> cannot be nested inside <{p}>", b.name.text),
            )),
            _ => Err(err(&b.name.pos, format!("unknown block <{}>", b.name.text))),
        }
    }
}

/// Builds the typed configuration of the file at `file` from its syntax tree.
pub fn resolve(file: &Path, items: &[Item]) -> Result<Config, ConfigError> {
    let base = file.parent().unwrap_or(Path::new("."));
    let mut seen: HashMap<String, Pos> = HashMap::new();
    let mut store = None;
    let mut diff_dir = None;
    let mut s3 = S3Spec {
        endpoint: None,
        region: None,
        keyfile: None,
        timeout: Duration::from_secs(60),
    };
    let mut recipients = Vec::new();
    let mut keyring = None;
    let mut chunk_size = 16 << 20;
    let mut host = None;
    let mut parallel_uploads = 4usize;
    let mut retries = 6u32;
    let mut log = super::LogSpec::default();
    let mut syslog = false;
    let mut facility = 3u8;
    let mut tag = "s3nap".to_string();
    let mut syslog_socket = PathBuf::from("/dev/log");
    let mut metrics_file = None;
    let mut notify = Vec::new();

    for item in items {
        let Item::Directive(d) = item else { continue };
        let name = d.name.text.to_ascii_lowercase();
        if !GLOBALS.contains(&name.as_str()) {
            continue;
        }
        if name != "gpgrecipient" && name != "notifycommand" {
            if let Some(first) = seen.get(&name) {
                return Err(err(
                    &d.name.pos,
                    format!("{} is already set at {first}", d.name.text),
                ));
            }
            seen.insert(name.clone(), d.name.pos.clone());
        }
        match name.as_str() {
            "bucket" => {
                let w = single(d)?;
                let mut spec = StoreSpec::parse(&w.text).map_err(|m| err(&w.pos, m))?;
                if let StoreSpec::Local(p) = &mut spec {
                    if p.is_relative() {
                        *p = base.join(&*p);
                    }
                }
                store = Some(spec);
            }
            "diffdir" => diff_dir = Some(file_path(base, single(d)?)),
            "tempdir" => {
                // s3napback's UseTempFile staging: s3nap always streams, so it is never used.
                single(d)?;
            }
            "endpoint" => s3.endpoint = Some(endpoint(d)?),
            "region" => s3.region = Some(single(d)?.text.clone()),
            "s3keyfile" => s3.keyfile = Some(file_path(base, single(d)?)),
            "gpgrecipient" => {
                if d.values.is_empty() {
                    return Err(err(
                        &d.name.pos,
                        "GpgRecipient needs a key id, fingerprint or e-mail",
                    ));
                }
                recipients.extend(d.values.iter().map(|w| w.text.clone()));
            }
            "gpgkeyring" => keyring = Some(file_path(base, single(d)?)),
            "chunksize" => {
                chunk_size = size(d)?;
                // Parts outside S3's limits would be refused by S3 (or adjusted behind the
                // configuration's back): say so here instead.
                if !(MIN_PART..=MAX_PART).contains(&chunk_size) {
                    return Err(err(
                        &single(d)?.pos,
                        format!(
                            "ChunkSize must be at least 5 MiB ({MIN_PART} bytes) and at most 5 GiB, \
                             S3's part size limits, not '{}'",
                            single(d)?.text
                        ),
                    ));
                }
            }
            "host" => {
                let w = single(d)?;
                if w.text.is_empty() || w.text.contains('/') {
                    return Err(err(&w.pos, "Host must be a non-empty name without '/'"));
                }
                host = Some(w.text.clone());
            }
            "paralleluploads" => parallel_uploads = positive(d)? as usize,
            "retries" => {
                let n = number(d)?;
                if n > MAX_RETRIES {
                    return Err(err(
                        &single(d)?.pos,
                        format!("Retries must be at most {MAX_RETRIES}, not {n}"),
                    ));
                }
                // Attempts in all: the first one and its retries.
                retries = n as u32 + 1;
            }
            "timeout" => s3.timeout = Duration::from_secs(positive(d)?),
            "logconfig" => log.config_file = Some(file_path(base, single(d)?)),
            "logfile" => log.file = Some(file_path(base, single(d)?)),
            "loglevel" => {
                let w = single(d)?;
                log.level = Some(w.text.parse().map_err(|_| {
                    err(
                        &w.pos,
                        format!(
                            "LogLevel must be error, warn, info, debug or trace, not '{}'",
                            w.text
                        ),
                    )
                })?);
            }
            "syslog" => syslog = boolean(d)?,
            "syslogfacility" => {
                let w = single(d)?;
                facility = FACILITIES
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(&w.text))
                    .map(|(_, f)| *f)
                    .ok_or_else(|| {
                        err(
                            &w.pos,
                            format!(
                                "unknown syslog facility '{}' (daemon, user, local0…local7, …)",
                                w.text
                            ),
                        )
                    })?;
            }
            "syslogtag" => tag = single(d)?.text.clone(),
            "syslogsocket" => syslog_socket = file_path(base, single(d)?),
            "metricsfile" => metrics_file = Some(file_path(base, single(d)?)),
            "notifycommand" => {
                if !notify.is_empty() {
                    return Err(err(&d.name.pos, "NotifyCommand is already set"));
                }
                notify = command_words(d)?;
            }
            _ => unreachable!("every global is handled"),
        }
    }

    let top = Pos {
        file: std::sync::Arc::from(file),
        line: 1,
        column: 1,
    };
    let store = store.ok_or_else(|| err(&top, "missing required directive Bucket"))?;
    let diff_dir = diff_dir.ok_or_else(|| err(&top, "missing required directive DiffDir"))?;
    let host = match host {
        Some(h) => h,
        None => nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .map_err(|e| err(&top, format!("cannot read the host name ({e}); set Host")))?,
    };

    if syslog {
        log.syslog = Some(super::SyslogSpec {
            facility,
            tag,
            socket: syslog_socket,
        });
    }
    if log.config_file.is_some() && (log.file.is_some() || log.level.is_some()) {
        let pos = seen.get("logconfig").expect("set above");
        return Err(err(
            pos,
            "LogConfig replaces LogFile and LogLevel: use one or the other",
        ));
    }

    let root = Scope {
        cycle: CycleSettings::default(),
        compression: Compression::default(),
        excludes: Vec::new(),
        one_file_system: false,
        mysql_options: Vec::new(),
        pg_custom_format: false,
        restore: Vec::new(),
        run: None,
        bucket: BucketScope {
            master: None,
            replica: None,
            region: s3.region.clone(),
            endpoint: s3.endpoint.clone(),
            mode: BucketMode::Replicated,
            workers: 8,
        },
    }
    .enter(items, None)?;
    let mut resolver = Resolver {
        sets: Vec::new(),
        names: HashMap::new(),
    };
    resolver.walk(items, &root, None)?;

    Ok(Config {
        file: file.to_path_buf(),
        store,
        s3,
        diff_dir,
        recipients,
        keyring,
        chunk_size,
        host,
        parallel_uploads,
        retries,
        log,
        metrics_file,
        notify,
        sets: resolver.sets,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::syntax::parse_str;

    fn load(text: &str) -> Result<Config, ConfigError> {
        let path = Path::new("/etc/s3nap/test.conf");
        resolve(path, &parse_str(path, text)?)
    }

    const BASE: &str = "Bucket s3://b/p\nDiffDir /var/lib/s3nap\nHost h\n";

    fn dir_excludes(set: &SetSpec) -> &Vec<PathBuf> {
        match &set.source {
            SourceSpec::Directory { excludes, .. } => excludes,
            other => panic!("not a directory set: {other:?}"),
        }
    }

    #[test]
    fn every_source_kind_and_the_same_set_in_two_cycles() {
        let c = load(&format!(
            "{BASE}<Cycle daily>\n  Directory /etc\n  MySQL all shop\n</Cycle>\n\
             <Cycle decaying>\n  CycleType HanoiCycle\n  Discs 6\n  Directory /etc\n</Cycle>\n\
             <PostgreSQL app>\n  Fulls 14\n  RetentionPolicy 30\n  MinimumRedundancy 3\n</PostgreSQL>\n\
             <SubversionDir /srv/svn>\n  Fulls 10\n</SubversionDir>\n\
             <Subversion /srv/svn/repos/p>\n  Diffs 3\n</Subversion>\n"
        ))
        .unwrap();
        let names: Vec<(&str, &str)> = c
            .sets
            .iter()
            .map(|s| (s.name.as_str(), s.cycle_label()))
            .collect();
        assert_eq!(
            names,
            vec![
                ("dir/etc", "daily"),
                ("mysql/all", "daily"),
                ("mysql/shop", "daily"),
                ("dir/etc", "decaying"),
                ("pgsql/app", "-"),
                ("svndir/srv/svn", "-"),
                ("svn/srv/svn/repos/p", "-"),
            ]
        );
        assert_eq!(c.sets[3].cycle.cycle_type, CycleType::Hanoi);
        assert_eq!(c.sets[3].cycle.discs, 6);
        assert_eq!(c.sets[4].cycle.retention_days, Some(30));
        assert_eq!(c.sets[4].cycle.minimum_redundancy, 3);
        assert_eq!(c.sets[4].cycle.fulls, 14);
        assert_eq!(c.sets[6].cycle.diffs, 3);
        let e = load(&format!(
            "{BASE}<Cycle a>\nDirectory /etc\nDirectory /etc\n</Cycle>\n"
        ))
        .unwrap_err();
        assert!(e.message.contains("already configured in cycle 'a'"), "{e}");
    }

    #[test]
    fn globals_sets_and_inheritance() {
        let c = load(&format!(
            "{BASE}GpgRecipient a@example.org\nGpgRecipient b@example.org\nChunkSize 25000000\n\
             Compression xz:2\nExclude /etc/skip\n\
             Directory /etc\n\
             <Cycle weekly>\n  Frequency 7\n  Directory /opt /srv/\n  Exclude /opt/useless\n\
               <Directory /home/foo>\n    Compression zstd:9\n    Exclude /home/foo/wumpus\n  </Directory>\n</Cycle>\n"
        ))
        .unwrap();
        assert_eq!(
            c.store,
            StoreSpec::S3 {
                bucket: "b".into(),
                prefix: "p".into()
            }
        );
        assert_eq!(c.recipients, vec!["a@example.org", "b@example.org"]);
        assert_eq!(c.chunk_size, 25_000_000);
        let names: Vec<&str> = c.sets.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, vec!["dir/etc", "dir/opt", "dir/srv", "dir/home/foo"]);
        let excludes = dir_excludes(&c.sets[0]);
        assert_eq!(excludes, &vec![PathBuf::from("/etc/skip")]);
        let excludes = dir_excludes(&c.sets[1]);
        assert_eq!(excludes, &vec![PathBuf::from("/opt/useless")]);
        assert_eq!(c.sets[1].cycle.frequency, 7);
        assert_eq!(c.sets[1].cycle.name.as_deref(), Some("weekly"));
        assert_eq!(c.sets[0].compression, Compression::Xz { level: 2 });
        assert_eq!(c.sets[3].compression, Compression::Zstd { level: 9 });
        let excludes = dir_excludes(&c.sets[3]);
        assert_eq!(excludes, &vec![PathBuf::from("/home/foo/wumpus")]);
    }

    #[test]
    fn mistakes_name_their_position() {
        let cases: &[(&str, usize, usize, &str)] = &[
            ("Bucket s3://b\n", 1, 1, "DiffDir"),
            ("DiffDir /d\n", 1, 1, "Bucket"),
            ("Bucket b1\nDiffDir /d\nBucket b2\n", 3, 1, "already set"),
            (
                "Bucket b1\nDiffDir /d\nFrobnicate 3\n",
                3,
                1,
                "unknown directive",
            ),
            ("Bucket b1\nDiffDir /d\nChunkSize lots\n", 3, 11, "size"),
            (
                "Bucket b1\nDiffDir /d\nCompression gzip\n",
                3,
                13,
                "unknown compression",
            ),
            ("Bucket b1\nDiffDir /d\nDirectory etc\n", 3, 11, "absolute"),
            (
                "Bucket b1\nDiffDir /d\nDirectory /etc\nDirectory /etc/\n",
                4,
                11,
                "already configured",
            ),
            (
                "Bucket b1\nDiffDir /d\n<Cycle x>\n  Bucket b2\n</Cycle>\n",
                4,
                3,
                "top level",
            ),
            (
                "Bucket b1\nDiffDir /d\n<Cycle x>\nFrequency often\n</Cycle>\n",
                4,
                11,
                "whole number",
            ),
            (
                "Bucket b1\nDiffDir /d\n<Directory /a>\nDirectory /b\n</Directory>\n",
                4,
                1,
                "unknown directive",
            ),
            (
                "Bucket b1\nDiffDir /d\n<Frob x>\n</Frob>\n",
                3,
                2,
                "unknown block",
            ),
            (
                "Bucket b1\nDiffDir /d\nArchiveOldestDisc maybe\n",
                3,
                19,
                "yes/no",
            ),
            ("Bucket B_ad!\nDiffDir /d\n", 1, 8, "neither"),
            (
                "Bucket b1\nDiffDir /d\nEndpoint localhost:9000\n",
                3,
                10,
                "http",
            ),
        ];
        for (text, line, column, needle) in cases {
            let e = load(text).unwrap_err();
            assert_eq!(
                (e.pos.line, e.pos.column),
                (*line, *column),
                "{text:?}: {e}"
            );
            assert!(e.message.contains(needle), "{text:?}: {e}");
            assert!(e.to_string().starts_with("/etc/s3nap/test.conf:"), "{e}");
        }
    }

    /// Input that used to be accepted and then silently overridden, inherited or adjusted.
    #[test]
    fn repeated_misplaced_and_out_of_range_values_are_errors() {
        let cases: &[(&str, usize, usize, &str)] = &[
            ("Fulls 3\nFulls 5\nDirectory /etc\n", 5, 1, "Fulls is already set at"),
            (
                "<Cycle c>\n  Compression zstd:3\n  compression xz\n  Directory /etc\n</Cycle>\n",
                6,
                3,
                "compression is already set at /etc/s3nap/test.conf:5:3",
            ),
            (
                "<Directory /etc>\n  Diffs 1\n  Diffs 2\n</Directory>\n",
                6,
                3,
                "already set",
            ),
            (
                "<Bucket b>\n  Master s3://m\n  Master s3://n\n  Replica s3://r\n</Bucket>\n",
                6,
                3,
                "Master is already set",
            ),
            (
                "<Bucket b>\n  Master s3://m\n  Replica s3://r\n  Region a\n  Region b\n</Bucket>\n",
                8,
                3,
                "Region is already set",
            ),
            (
                "<Command a>\n  Run /bin/a\n  Run /bin/b\n</Command>\n",
                6,
                3,
                "Run is already set",
            ),
            (
                "Run /bin/true\n<Command a>\n</Command>\n",
                4,
                1,
                "belongs inside a <Command NAME> or <Picker NAME>",
            ),
            (
                "<Cycle c>\n  Run /bin/true\n  <Command a>\n  </Command>\n</Cycle>\n",
                5,
                3,
                "belongs inside",
            ),
            ("<Directory /etc>\n  Run /bin/true\n</Directory>\n", 5, 3, "belongs inside"),
            (
                "MySQLOptions --defaults-extra-file=/x --password=hunter2\nMySQL all\n",
                4,
                39,
                "--defaults-extra-file",
            ),
            ("<MySQL all>\n  MySQLOptions -phunter2\n</MySQL>\n", 5, 16, "option file"),
            ("MySQLOptions --pass=x\nMySQL all\n", 4, 14, "password"),
            ("MySQLOptions --loose_Password=x\nMySQL all\n", 4, 14, "password"),
            ("MySQLOptions --password\nMySQL all\n", 4, 14, "password"),
            ("PostgreSQL alice:hunter2@app\n", 4, 12, ".pgpass"),
            ("PostgreSQL 'dbname=app password=x'\n", 4, 12, "PGPASSFILE"),
            ("Retries 4294967295\n", 4, 9, "at most 100"),
            ("Retries 18446744073709551615\n", 4, 9, "at most 100"),
            ("Retries 101\n", 4, 9, "at most 100"),
            ("ChunkSize 1M\n", 4, 11, "at least 5 MiB"),
            ("ChunkSize 5242879\n", 4, 11, "at least 5 MiB"),
            ("ChunkSize 6GiB\n", 4, 11, "5 GiB"),
        ];
        for (text, line, column, needle) in cases {
            let e = load(&format!("{BASE}{text}")).unwrap_err();
            assert_eq!(
                (e.pos.line, e.pos.column),
                (*line, *column),
                "{text:?}: {e}"
            );
            assert!(e.message.contains(needle), "{text:?}: {e}");
            assert!(!e.message.contains("hunter2"), "{e}");
        }
        // The limits themselves, an inner block overriding its cycle, and repeatable Exclude.
        let c = load(&format!(
            "{BASE}Retries 100\nChunkSize 5MiB\nFulls 3\nExclude /a/x\nExclude /a/y\n\
             <Cycle c>\n  Fulls 5\n  <Command a>\n    Run /bin/a\n    Fulls 7\n  </Command>\n\
             <Command b>\n    Run /bin/b\n  </Command>\n</Cycle>\nDirectory /a\n"
        ))
        .unwrap();
        assert_eq!(c.retries, 101);
        assert_eq!(c.chunk_size, 5 << 20);
        let fulls: Vec<u64> = c.sets.iter().map(|s| s.cycle.fulls).collect();
        assert_eq!(fulls, vec![7, 5, 3]);
        assert_eq!(dir_excludes(&c.sets[2]).len(), 2);
        // Options that merely look alike stay allowed.
        let c = load(&format!(
            "{BASE}MySQLOptions --defaults-extra-file=/etc/s3nap/my.cnf --port=3307 -P3307 \
             --pipe --plugin-dir=/x\nMySQL all\nPostgreSQL alice@app\n"
        ))
        .unwrap();
        assert!(
            matches!(&c.sets[0].source, SourceSpec::MySql { options, .. } if options.len() == 5)
        );
    }

    #[test]
    fn bucket_sets_and_their_mistakes() {
        let c = load(&format!(
            "{BASE}Region eu-west-1\n<Bucket www>\n  Master s3://www-site/public/\n  \
             Replica s3://www-backup\n  Mode copy\n  Workers 16\n  RetentionPolicy 30\n\
             </Bucket>\n<Bucket logs>\n  Master s3://logs\n  Replica s3://logs\n  \
             Endpoint http://127.0.0.1:9000\n  Region us-east-1\n</Bucket>\n"
        ))
        .unwrap();
        let SourceSpec::Bucket(www) = &c.sets[0].source else {
            panic!("{:?}", c.sets[0]);
        };
        assert_eq!(c.sets[0].name, "bucket/www");
        assert_eq!(www.master.bucket, "www-site");
        assert_eq!(www.master.key_prefix(), "public/");
        assert_eq!(www.replica, "www-backup");
        assert_eq!(www.mode, BucketMode::Copy);
        assert_eq!(www.workers, 16);
        assert_eq!(www.region.as_deref(), Some("eu-west-1"), "inherited");
        assert_eq!(c.sets[0].cycle.retention_days, Some(30));
        let SourceSpec::Bucket(logs) = &c.sets[1].source else {
            panic!("{:?}", c.sets[1]);
        };
        assert_eq!(logs.mode, BucketMode::Replicated);
        assert_eq!(logs.master.key_prefix(), "");
        assert_eq!(logs.region.as_deref(), Some("us-east-1"));
        assert_eq!(logs.endpoint.as_deref(), Some("http://127.0.0.1:9000"));

        let cases: &[(&str, usize, &str)] = &[
            (
                "<Bucket b>\nReplica s3://r\n</Bucket>\n",
                4,
                "needs a Master",
            ),
            (
                "<Bucket b>\nMaster s3://m\n</Bucket>\n",
                4,
                "needs a Replica",
            ),
            (
                "<Bucket b>\nMaster s3://m\nReplica s3://r/x\n</Bucket>\n",
                6,
                "whole bucket",
            ),
            (
                "<Bucket b>\nMaster s3://m\nReplica s3://m\nMode copy\n</Bucket>\n",
                6,
                "other than the Master",
            ),
            (
                "<Bucket b>\nMaster s3://m\nReplica s3://r\nMode mirror\n</Bucket>\n",
                7,
                "replicated or copy",
            ),
            ("<Bucket b>\nMaster m\n</Bucket>\n", 5, "s3://bucket"),
            ("Master s3://m\n", 4, "unknown directive"),
        ];
        for (text, line, needle) in cases {
            let e = load(&format!("{BASE}{text}")).unwrap_err();
            assert_eq!(e.pos.line, *line, "{text:?}: {e}");
            assert!(e.message.contains(needle), "{text:?}: {e}");
        }
    }

    #[test]
    fn store_specs() {
        assert_eq!(
            StoreSpec::parse("file:///srv/backup").unwrap(),
            StoreSpec::Local("/srv/backup".into())
        );
        assert_eq!(
            StoreSpec::parse("dev.example.com.backup1").unwrap(),
            StoreSpec::S3 {
                bucket: "dev.example.com.backup1".into(),
                prefix: String::new()
            }
        );
        let c = load("Bucket ./store\nDiffDir state\nHost h\n").unwrap();
        assert_eq!(c.store, StoreSpec::Local("/etc/s3nap/./store".into()));
        assert_eq!(c.diff_dir, PathBuf::from("/etc/s3nap/state"));
    }
}
