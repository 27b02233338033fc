//! A set directive's value and the settings around it → the [`SourceSpec`] of one set.
//!
//! One builder per kind of set; the directive table ([`super::directives`]) names the builder
//! of each set directive and block.

use super::settings::{BucketScope, Scope};
use super::syntax::{ConfigError, Word};
use super::values::{absolute_path, database, err};
use super::{BucketMode, BucketSpec, SourceSpec};

/// What a set directive's value becomes.
pub(super) type Built = Result<SourceSpec, ConfigError>;

pub(super) fn directory(scope: &Scope, w: &Word) -> Built {
    let path = absolute_path("Directory", w)?;
    // An exclude applies to the sets it lies inside of.
    let excludes = scope
        .excludes
        .iter()
        .filter(|x| x.starts_with(&path) && **x != path)
        .cloned()
        .collect();
    Ok(SourceSpec::Directory {
        path,
        excludes,
        one_file_system: scope.one_file_system,
    })
}

pub(super) fn mysql(scope: &Scope, w: &Word) -> Built {
    Ok(SourceSpec::MySql {
        database: database("MySQL", w)?,
        options: scope.mysql_options.clone(),
    })
}

pub(super) fn postgresql(scope: &Scope, w: &Word) -> Built {
    let (user, db) = match w.text.split_once('@') {
        Some((u, d)) if !u.is_empty() => (Some(u.to_string()), d),
        _ => (None, w.text.as_str()),
    };
    // `user:password@db` or a libpq connection string (`dbname=… password=…`) would put a
    // password on pg_dump's command line and into the manifest.
    if user.as_deref().is_some_and(|u| u.contains(':')) || db.contains('=') {
        return Err(err(
            &w.pos,
            "PostgreSQL takes [USER@]DB, not a password or connection string: give passwords \
             to libpq in ~/.pgpass or the file PGPASSFILE names",
        ));
    }
    let db_word = Word {
        text: db.to_string(),
        pos: w.pos.clone(),
    };
    Ok(SourceSpec::PostgreSql {
        database: database("PostgreSQL", &db_word)?,
        user,
        custom_format: scope.pg_custom_format,
    })
}

pub(super) fn subversion(_: &Scope, w: &Word) -> Built {
    Ok(SourceSpec::Subversion {
        repository: absolute_path("Subversion", w)?,
        full_only: false,
    })
}

pub(super) fn subversion_dir(_: &Scope, w: &Word) -> Built {
    Ok(SourceSpec::SubversionDir {
        directory: absolute_path("SubversionDir", w)?,
    })
}

pub(super) fn snapshots_dir(_: &Scope, w: &Word) -> Built {
    Ok(SourceSpec::SnapshotsDir {
        directory: absolute_path("SnapshotsDir", w)?,
    })
}

pub(super) fn command(scope: &Scope, w: &Word) -> Built {
    let (name, run) = named_program("command", scope, w)?;
    Ok(SourceSpec::Command {
        name,
        run,
        fd: false,
    })
}

pub(super) fn picker(scope: &Scope, w: &Word) -> Built {
    let (name, run) = named_program("picker", scope, w)?;
    Ok(SourceSpec::Picker { name, run })
}

/// The name of a `<Command>` or `<Picker>` block (`kind`, as the errors spell it) and its Run.
fn named_program(
    kind: &str,
    scope: &Scope,
    w: &Word,
) -> Result<(String, Vec<String>), ConfigError> {
    if w.text.is_empty() || w.text.contains('/') {
        return Err(err(
            &w.pos,
            format!("<{kind}> needs a name without '/', not '{}'", w.text),
        ));
    }
    let Some(run) = scope.run.clone() else {
        return Err(err(&w.pos, format!("<{kind} {}> needs a Run line", w.text)));
    };
    Ok((w.text.clone(), run))
}

pub(super) fn bucket(scope: &Scope, w: &Word) -> Built {
    Ok(SourceSpec::Bucket(bucket_spec(&scope.bucket, w)?))
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
        master_region: b.master_region.clone(),
        replica_region: b.replica_region.clone(),
        endpoint: b.endpoint.clone(),
        addressing: b.addressing,
        mode: b.mode,
        workers: b.workers,
    })
}
