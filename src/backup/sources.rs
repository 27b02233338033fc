//! What a set reads and how its archive is named: the source a set's configuration stands
//! for (a tree, a dump program, a command), the plaintext format it produces, and the archive
//! key that format, the compression and encryption give. `-t` prints the same keys a run
//! writes, so both come from here.

use anyhow::{bail, Context};

use crate::config::{Config, SetSpec, SourceSpec};
use crate::pipeline::compress::Compression;
use crate::plan::BaseData;
use crate::schema::layout::{self, Kind, RunId};
use crate::schema::manifest::SourceInfo;
use crate::source::program;
use crate::source::quilt::Quilter;
use crate::source::state::Identity;
use crate::source::tree::{Base, PickedPaths, TreeSource};
use crate::source::Source;

/// The file name layers of an archive: `tar.zst.gpg`, `tar.xz`, `tar`.
pub fn extension(format: &str, compression: Compression, encrypted: bool) -> String {
    let mut ext = format.to_string();
    if let Some(c) = compression.extension() {
        ext.push('.');
        ext.push_str(c);
    }
    if encrypted {
        ext.push_str(".gpg");
    }
    ext
}

/// The restore command recorded for a dump when neither `Restore` nor the program names one.
fn default_restore(source: &SourceSpec) -> Option<Vec<String>> {
    let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    match source {
        SourceSpec::MySql { options, .. } => {
            let client = program::find_program(&["mariadb", "mysql"])
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "mysql".into());
            // The dump creates its database(s) itself (--databases / --all-databases).
            let mut cmd = vec![client];
            cmd.extend(options.iter().cloned());
            Some(cmd)
        }
        SourceSpec::PostgreSql {
            database,
            user,
            custom_format,
        } => {
            // Dumps create their database (--create); pg_dumpall's roles usually exist already,
            // so its restore goes on past errors as psql does by default.
            let mut cmd = if *custom_format {
                owned(&["pg_restore", "--create", "--dbname", "postgres"])
            } else if database == "all" {
                owned(&["psql", "--quiet", "--dbname", "postgres"])
            } else {
                owned(&[
                    "psql",
                    "--quiet",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "--dbname",
                    "postgres",
                ])
            };
            if let Some(u) = user {
                cmd.extend(["--username".to_string(), u.clone()]);
            }
            Some(cmd)
        }
        _ => None,
    }
}

/// The plaintext format of a set's archives (the first layer of its key's extension): what
/// `-t` prints and the run's source produces.
pub fn archive_format(source: &SourceSpec) -> &'static str {
    match source {
        SourceSpec::Directory { .. }
        | SourceSpec::Picker { .. }
        | SourceSpec::SubversionDir { .. }
        | SourceSpec::SnapshotsDir { .. } => "tar",
        SourceSpec::MySql { .. } => "sql",
        SourceSpec::PostgreSql {
            database,
            custom_format,
            ..
        } => {
            if *custom_format && database != "all" {
                "pgdump"
            } else {
                "sql"
            }
        }
        SourceSpec::Subversion { .. } => "svndump",
        SourceSpec::Command { .. } => "dump",
        SourceSpec::Bucket(_) => "jsonl",
    }
}

/// The key the archive of a run of `set` is stored under.
pub fn archive_key(config: &Config, set: &SetSpec, run: RunId, kind: Kind) -> String {
    let ext = extension(
        archive_format(&set.source),
        set.compression,
        !config.recipients.is_empty(),
    );
    layout::archive_key(&config.host, &set.name, run, kind, &ext)
}

/// The source of `set`, and what the manifest says of it when that is known beforehand.
pub(super) fn source_for(
    set: &SetSpec,
    base: BaseData,
    quilter: Option<Box<dyn Quilter>>,
) -> anyhow::Result<(Box<dyn Source>, Option<SourceInfo>)> {
    let restore = if set.restore.is_empty() {
        default_restore(&set.source)
    } else {
        Some(set.restore.clone())
    };
    let program = |command: Vec<String>, descriptor_mode: bool| -> Box<dyn Source> {
        Box::new(program::ProgramSource {
            command,
            format: archive_format(&set.source),
            descriptor_mode,
            restore: restore.clone(),
        })
    };
    Ok(match &set.source {
        SourceSpec::Directory {
            path,
            excludes,
            one_file_system,
        } => {
            let tree = TreeSource {
                root: path.clone(),
                excludes: excludes.clone(),
                one_file_system: *one_file_system,
                base: match base {
                    BaseData::Tree(state) => Base::Loaded(state),
                    BaseData::TreeFile { path, run } => Base::File {
                        path,
                        id: Identity::of(set),
                        run,
                    },
                    _ => Base::Full,
                },
                quilter,
            };
            let info = SourceInfo::Directory {
                path: path.display().to_string(),
                excludes: excludes.iter().map(|p| p.display().to_string()).collect(),
            };
            (Box::new(tree), Some(info))
        }
        SourceSpec::MySql { database, options } => {
            (program(mysql_dump(database, options)?, false), None)
        }
        SourceSpec::PostgreSql {
            database,
            user,
            custom_format,
        } => (
            program(pg_dump(database, user.as_deref(), *custom_format), false),
            None,
        ),
        SourceSpec::Subversion { repository, .. } => (
            Box::new(program::SubversionSource {
                repository: repository.clone(),
                last: match base {
                    BaseData::Revision(r) => Some(r),
                    _ => None,
                },
            }),
            None,
        ),
        SourceSpec::Command { run, fd, .. } => (program(run.clone(), *fd), None),
        SourceSpec::Picker { run, .. } => (
            Box::new(PickedPaths {
                command: run.clone(),
                quilter,
            }),
            None,
        ),
        SourceSpec::SubversionDir { .. } | SourceSpec::SnapshotsDir { .. } => {
            bail!("{} is expanded into its sets when a run starts", set.name)
        }
        SourceSpec::Bucket(_) => bail!("{}: a bucket snapshot starts asynchronously", set.name),
    })
}

/// mysqldump's (or mariadb-dump's) command line for `database` (`all`: every database).
fn mysql_dump(database: &str, options: &[String]) -> anyhow::Result<Vec<String>> {
    let dump = program::find_program(&["mariadb-dump", "mysqldump"])
        .context("neither mariadb-dump nor mysqldump is installed")?;
    let mut cmd = vec![dump.display().to_string()];
    // Option files (--defaults-extra-file) must come first.
    cmd.extend(options.iter().cloned());
    cmd.extend(
        [
            "--single-transaction",
            "--routines",
            "--triggers",
            "--events",
        ]
        .map(String::from),
    );
    if database == "all" {
        cmd.push("--all-databases".into());
    } else {
        cmd.extend(["--databases".to_string(), database.to_string()]);
    }
    Ok(cmd)
}

/// pg_dump's command line for `database`, or pg_dumpall's for `all`.
fn pg_dump(database: &str, user: Option<&str>, custom_format: bool) -> Vec<String> {
    let program = if database == "all" {
        "pg_dumpall"
    } else {
        "pg_dump"
    };
    let mut cmd = vec![program.to_string()];
    if let Some(u) = user {
        cmd.extend(["--username".to_string(), u.to_string()]);
    }
    if database != "all" {
        cmd.push(
            if custom_format {
                "--format=custom"
            } else {
                "--create"
            }
            .into(),
        );
        cmd.push(database.to_string());
    }
    cmd
}

/// The `kind` a program source's manifest records.
pub(super) fn program_kind(source: &SourceSpec) -> &'static str {
    match source {
        SourceSpec::MySql { .. } => "mysql",
        SourceSpec::PostgreSql { .. } => "pgsql",
        SourceSpec::Subversion { .. } | SourceSpec::SubversionDir { .. } => "svn",
        SourceSpec::Picker { .. } => "picker",
        _ => "command",
    }
}
