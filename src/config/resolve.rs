//! Syntax tree → typed configuration.
//!
//! Global directives live at the top level. Cycle settings, `Compression` and `Exclude` may be
//! given at any level and are inherited inward (a `<Cycle>` sees the top level, a `<Directory>`
//! block sees its `<Cycle>`; the innermost value wins, excludes accumulate). Unlike s3napback,
//! nothing is silently ignored: an unknown or misplaced directive, a missing or malformed value,
//! a repeated single-valued directive or a set configured twice is an error at its position.
//!
//! Each level is read in two passes: first its settings (checked against the directive table
//! and applied), then its sets and blocks, which see all of the level's settings wherever in
//! the level they were written.

use std::collections::HashMap;
use std::path::Path;

use super::directives::{self, Apply, Spec};
use super::settings::{Globals, Scope};
use super::syntax::{Block, ConfigError, Item, Pos, Word};
use super::values::err;
use super::{Config, SetSpec};
use crate::store::StorageClass;

impl Config {
    /// Reads, parses and resolves a configuration file (with its `Include`s).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let items = super::syntax::load(path)?;
        resolve(path, &items)
    }
}

/// Builds the typed configuration of the file at `file` from its syntax tree.
pub fn resolve(file: &Path, items: &[Item]) -> Result<Config, ConfigError> {
    let mut globals = Globals::new(file);
    let mut root = Scope::default();
    apply_settings(items, None, &mut root, Some(&mut globals))?;
    let encryption_at = globals.access.encryption_at.clone();
    let mut config = globals.finish(file)?;
    let mut sets = Sets {
        local_store: matches!(config.store, super::StoreSpec::Local(_)),
        // Quilted content is shared and must reveal nothing, and its keys need the secret.
        quilt_problem: if config.recipients.is_empty() {
            Some("quilted content must be encrypted: configure GpgRecipient")
        } else if config.quilt_key_file.is_none() {
            Some("Quilt needs QuiltKeyFile (the quilt secret; s3nap quilt init makes one)")
        } else {
            None
        },
        ..Sets::default()
    };
    sets.walk(items, &root, None)?;
    config.sets = sets.list;
    // Refused rather than ignored, as StorageClass is: a directory has no server-side
    // encryption. With a bucket set it still covers the copies into its replica.
    let bucket_set = config
        .sets
        .iter()
        .any(|s| matches!(s.source, super::SourceSpec::Bucket(_)));
    if let (super::StoreSpec::Local(dir), Some(_), Some(at), false) = (
        &config.store,
        &config.s3.encryption,
        &encryption_at,
        bucket_set,
    ) {
        return Err(ConfigError::new(
            at,
            format!(
                "ServerSideEncryption needs an S3 store: Bucket {} is a local directory, and \
                 no bucket set copies into an S3 replica",
                dir.display()
            ),
        ));
    }
    // A directory cannot lock anything, and a backup that silently is not locked is worse
    // than none asked for.
    if let (super::StoreSpec::Local(dir), Some(set)) = (
        &config.store,
        config.sets.iter().find(|s| s.object_lock.is_some()),
    ) {
        return Err(ConfigError::new(
            &set.pos,
            format!(
                "set {} has ObjectLock, but Bucket {} is a local directory: Object Lock needs an \
                 S3 bucket created with Object Lock enabled",
                set.name,
                dir.display()
            ),
        ));
    }
    Ok(config)
}

/// Applies the directive lines of one level (inside `parent`, `None` for the top level) to the
/// settings under construction: `globals` only at the top level, `scope` at every level.
fn apply_settings(
    items: &[Item],
    parent: Option<&Spec>,
    scope: &mut Scope,
    mut globals: Option<&mut Globals>,
) -> Result<(), ConfigError> {
    let mut seen: HashMap<&'static str, Pos> = HashMap::new();
    for item in items {
        let Item::Directive(d) = item else { continue };
        let spec = directives::check_line(d, parent, &mut seen)?;
        match (spec.apply, globals.as_deref_mut()) {
            (Apply::Scope(apply), _) => apply(scope, d)?,
            (Apply::Run(apply), Some(g)) => apply(g, d)?,
            (Apply::RunAndScope(run, inherited), g) => {
                if let Some(g) = g {
                    run(g, d)?;
                }
                inherited(scope, d)?;
            }
            // Sets are built once the level's settings are known.
            (Apply::Set(_), _) => {}
            (Apply::Include, _) => {
                return Err(err(
                    &d.name.pos,
                    "Include is only read when the configuration is loaded from a file",
                ))
            }
            // check_line lets run settings through at the top level only, Cycle never.
            (Apply::Run(_) | Apply::Cycle, _) => unreachable!("{} passed check_line", spec.name),
        }
    }
    Ok(())
}

/// The sets found so far.
#[derive(Default)]
struct Sets {
    list: Vec<SetSpec>,
    /// (set name, cycle) → where it was configured.
    names: HashMap<(String, Option<String>), Pos>,
    /// The store is a local directory, which has no storage classes.
    local_store: bool,
    /// Why no set can be quilted in this configuration, if it cannot.
    quilt_problem: Option<&'static str>,
}

impl Sets {
    /// The sets of one level (inside `parent`), whose settings `scope` holds.
    fn walk(
        &mut self,
        items: &[Item],
        scope: &Scope,
        parent: Option<&Spec>,
    ) -> Result<(), ConfigError> {
        for item in items {
            match item {
                Item::Directive(d) => {
                    let Some(Apply::Set(build)) = directives::line(&d.name.text).map(|s| s.apply)
                    else {
                        continue;
                    };
                    if d.values.is_empty() {
                        return Err(err(&d.name.pos, format!("{} needs a value", d.name.text)));
                    }
                    for w in &d.values {
                        self.add(build(scope, w)?, scope, w)?;
                    }
                }
                Item::Block(b) => self.block(b, scope, parent)?,
            }
        }
        Ok(())
    }

    /// A `<Cycle>` or a set's block: its own settings over `scope`, then what it holds.
    fn block(
        &mut self,
        b: &Block,
        scope: &Scope,
        parent: Option<&Spec>,
    ) -> Result<(), ConfigError> {
        let spec = directives::check_block(b, parent)?;
        let [arg] = b.args.as_slice() else {
            let message = match spec.apply {
                Apply::Cycle => "<Cycle> needs exactly one name".to_string(),
                _ => format!("<{}> needs exactly one value", b.name.text),
            };
            return Err(err(&b.name.pos, message));
        };
        let mut inner = scope.clone();
        if let Apply::Cycle = spec.apply {
            inner.cycle.name = Some(arg.text.clone());
        }
        apply_settings(&b.items, Some(spec), &mut inner, None)?;
        self.walk(&b.items, &inner, Some(spec))?;
        if let Apply::Set(build) = spec.apply {
            self.add(build(&inner, arg)?, &inner, arg)?;
        }
        Ok(())
    }

    /// One set of `source`, configured by `w` with the settings `scope`.
    fn add(
        &mut self,
        source: super::SourceSpec,
        scope: &Scope,
        w: &Word,
    ) -> Result<(), ConfigError> {
        let name = source.set_name();
        let id = (name.clone(), scope.cycle.name.clone());
        if let Some(first) = self.names.get(&id) {
            let cycle = match &scope.cycle.name {
                Some(c) => format!(" in cycle '{c}'"),
                None => String::new(),
            };
            return Err(err(
                &w.pos,
                format!("set '{name}' is already configured{cycle} at {first}"),
            ));
        }
        self.names.insert(id, w.pos.clone());
        // Refused rather than ignored: the user asked for a cheaper, archived copy and would
        // silently get none.
        if let (class, Some(pos)) = &scope.storage_class {
            if self.local_store && *class != StorageClass::Standard {
                return Err(err(
                    pos,
                    format!(
                        "StorageClass {class} (for set '{name}') needs an S3 store: a local \
                         directory has no storage classes"
                    ),
                ));
            }
        }
        // Refused rather than ignored, as StorageClass is: a quilt that silently stores
        // nothing (or stores plaintext) is worse than an error.
        if let (true, Some(pos)) = &scope.quilt {
            let tree = matches!(
                source,
                super::SourceSpec::Directory { .. } | super::SourceSpec::Picker { .. }
            );
            let problem = if tree {
                self.quilt_problem
            } else {
                Some("only directory and picker sets can be quilted")
            };
            if let Some(problem) = problem {
                return Err(err(pos, format!("Quilt yes (for set '{name}'): {problem}")));
            }
        }
        self.list.push(SetSpec {
            name,
            source,
            compression: scope.compression,
            storage_class: scope.storage_class.0,
            cycle: scope.cycle.clone(),
            object_lock: scope.object_lock.map(|mode| super::ObjectLockSpec {
                mode,
                margin: scope.lock_margin,
                max_days: scope.lock_max_days,
            }),
            restore: scope.restore.clone(),
            hooks: scope.hooks.clone(),
            quilt: scope.quilt.0.then_some(scope.quilt_min_size),
            pos: w.pos.clone(),
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::config::syntax::parse_str;
    use crate::config::{BucketMode, CycleType, SourceSpec, StoreSpec};
    use crate::pipeline::compress::Compression;

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
                "Directory is only allowed at the top level or inside a <Cycle NAME> block",
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
            // The parts in flight at the smallest part size must fit in the memory limit.
            (
                "ChunkSize 100MiB\nParallelUploads 3\n",
                5,
                1,
                "ChunkSize (104857600 bytes) × ParallelUploads (3) exceeds MemoryLimit",
            ),
            ("MemoryLimit 64MiB\nChunkSize 32MiB\n", 5, 1, "exceeds MemoryLimit"),
            ("MemoryLimit 8MiB\n", 4, 13, "at least 10 MiB"),
            ("MaxUploadRate 10\n", 4, 15, "at least 64K"),
            ("MaxUploadRate 63999\n", 4, 15, "at least 64K"),
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
        assert_eq!(c.memory_limit, 256 << 20, "the default MemoryLimit");
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
            (
                "Master s3://m\n",
                4,
                "Master belongs inside a <Bucket NAME> block",
            ),
        ];
        for (text, line, needle) in cases {
            let e = load(&format!("{BASE}{text}")).unwrap_err();
            assert_eq!(e.pos.line, *line, "{text:?}: {e}");
            assert!(e.message.contains(needle), "{text:?}: {e}");
        }
    }

    #[test]
    fn endpoint_settings_and_bucket_regions() {
        use crate::store::endpoint::Addressing;
        let c = load(&format!(
            "{BASE}Region eu-west-1\nAddressingStyle virtual\nCaFile ca.pem\n\
             <Bucket www>\n  Master s3://www-site\n  Replica s3://www-backup\n  \
             MasterRegion eu-central-1\n  ReplicaRegion us-west-2\n</Bucket>\n\
             <Bucket logs>\n  Master s3://logs\n  Replica s3://logs-r\n  Region ap-south-1\n  \
             ReplicaRegion sa-east-1\n  AddressingStyle path\n</Bucket>\n"
        ))
        .unwrap();
        assert_eq!(c.s3.addressing, Addressing::Virtual);
        assert_eq!(
            c.s3.ca_file,
            Some(PathBuf::from("/etc/s3nap/ca.pem")),
            "beside the file"
        );
        let SourceSpec::Bucket(www) = &c.sets[0].source else {
            panic!("{:?}", c.sets[0]);
        };
        assert_eq!(www.master_region().as_deref(), Some("eu-central-1"));
        assert_eq!(www.replica_region().as_deref(), Some("us-west-2"));
        assert_eq!(www.addressing, Addressing::Virtual, "inherited");
        let SourceSpec::Bucket(logs) = &c.sets[1].source else {
            panic!("{:?}", c.sets[1]);
        };
        assert_eq!(
            logs.master_region().as_deref(),
            Some("ap-south-1"),
            "the block's"
        );
        assert_eq!(logs.replica_region().as_deref(), Some("sa-east-1"));
        assert_eq!(logs.addressing, Addressing::Path);
        let defaults = load(BASE).unwrap();
        assert_eq!(defaults.s3.addressing, Addressing::Auto);
        assert_eq!(defaults.s3.ca_file, None);

        let cases: &[(&str, usize, &str)] = &[
            (
                "AddressingStyle dns\n",
                4,
                "auto, path or virtual, not 'dns'",
            ),
            ("MasterRegion eu-west-1\n", 4, "MasterRegion belongs inside"),
            (
                "<Directory /etc>\n  ReplicaRegion eu-west-1\n</Directory>\n",
                5,
                "ReplicaRegion belongs inside",
            ),
            ("<Bucket b>\n  CaFile /x.pem\n</Bucket>\n", 5, "CaFile"),
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

    #[test]
    fn object_lock_is_inherited_with_its_terms_and_bad_values_name_their_line() {
        use crate::store::LockMode;
        let c = load(
            "Bucket s3://b\nDiffDir /s\nHost h\nObjectLock compliance\nObjectLockMargin 36h\n\
             Directory /etc\n<Cycle weekly>\n  ObjectLock governance\n  ObjectLockMargin 30s\n\
             \x20 ObjectLockMaxDays 400\n  Directory /srv\n</Cycle>\n<Cycle off>\n  ObjectLock no\n\
             \x20 Directory /opt\n</Cycle>\n",
        )
        .unwrap();
        let lock = |i: usize| {
            c.sets[i]
                .object_lock
                .map(|l| (l.mode, l.margin.num_seconds(), l.max_days))
        };
        assert_eq!(lock(0), Some((LockMode::Compliance, 36 * 3600, 3650)));
        assert_eq!(lock(1), Some((LockMode::Governance, 30, 400)));
        assert_eq!(lock(2), None);
        // The default margin is 7 days.
        let c = load("Bucket s3://b\nDiffDir /s\nHost h\nObjectLock governance\nDirectory /etc\n")
            .unwrap();
        assert_eq!(
            c.sets[0].object_lock.unwrap().margin,
            chrono::Duration::days(7)
        );
        for (text, line, message) in [
            ("ObjectLock legal\n", 4, "ObjectLock must be governance, compliance or no, not 'legal'"),
            ("ObjectLockMargin 7\n", 4, "ObjectLockMargin must be a number with a unit, s, m, h or d (like 30s or 7d), not '7'"),
            ("ObjectLockMargin 2w\n", 4, "not '2w'"),
            ("ObjectLockMaxDays 0\n", 4, "ObjectLockMaxDays must be at least 1"),
        ] {
            let e = load(&format!("Bucket s3://b\nDiffDir /s\nHost h\n{text}Directory /etc\n"))
                .unwrap_err();
            assert_eq!(e.pos.line, line, "{text}: {e}");
            assert!(e.message.contains(message), "{text}: {e}");
        }
        // A directory cannot lock: an error at the set, naming both.
        let e = load("Bucket /store\nDiffDir /s\nHost h\nObjectLock governance\nDirectory /etc\n")
            .unwrap_err();
        assert_eq!(e.pos.line, 5);
        assert!(
            e.message
                .contains("set dir/etc has ObjectLock, but Bucket /store is a local directory"),
            "{e}"
        );
    }

    #[test]
    fn server_side_encryption_with_a_local_store_is_refused_unless_a_bucket_set_copies() {
        let local = "Bucket /store\nDiffDir /var/lib/s3nap\nHost h\nDirectory /etc\n";
        let e = load(&format!("{local}ServerSideEncryption AES256\n")).unwrap_err();
        assert!(
            e.message.contains("ServerSideEncryption needs an S3 store"),
            "{e}"
        );
        assert!(e.to_string().starts_with("/etc/s3nap/test.conf:5:"), "{e}");
        assert!(load(&format!("{local}ServerSideEncryption none\n")).is_ok());
        let c = load(&format!(
            "{local}ServerSideEncryption aws:kms\n\
             <Bucket www>\n  Master s3://www\n  Replica s3://www-backup\n</Bucket>\n"
        ))
        .unwrap();
        assert!(c.s3.encryption.is_some());
    }

    #[test]
    fn quilt_is_per_set_or_cycle_and_refused_where_it_cannot_work() {
        let q = "Bucket s3://b\nDiffDir /s\nHost h\nGpgRecipient a@example.org\n\
                 QuiltKeyFile /etc/s3nap/quilt.key\n";
        let c = load(&format!(
            "{q}Directory /etc\n<Cycle w>\n  Quilt yes\n  QuiltMinSize 1MiB\n  Directory /srv\n\
             \x20 <Picker p>\n    Run /bin/pick\n  </Picker>\n</Cycle>\n"
        ))
        .unwrap();
        assert_eq!(c.sets[0].quilt, None);
        assert_eq!(c.sets[1].quilt, Some(1 << 20));
        assert_eq!(c.sets[2].quilt, Some(1 << 20));
        assert_eq!(
            c.quilt_key_file.as_deref(),
            Some(Path::new("/etc/s3nap/quilt.key"))
        );
        let default = load(&format!("{q}Quilt yes\nDirectory /etc\n")).unwrap();
        assert_eq!(
            default.sets[0].quilt,
            Some(crate::schema::quilt::DEFAULT_MIN_SIZE)
        );
        // Each refusal names the Quilt line.
        let cases = [
            (
                format!("{q}<Cycle w>\n  Quilt yes\n  MySQL shop\n</Cycle>\n"),
                7,
                "only directory and picker sets",
            ),
            (
                "Bucket s3://b\nDiffDir /s\nHost h\nQuiltKeyFile /k\nQuilt yes\nDirectory /etc\n"
                    .to_string(),
                5,
                "must be encrypted",
            ),
            (
                "Bucket s3://b\nDiffDir /s\nHost h\nGpgRecipient a\nQuilt yes\nDirectory /etc\n"
                    .to_string(),
                5,
                "needs QuiltKeyFile",
            ),
        ];
        for (text, line, want) in cases {
            let e = load(&text).unwrap_err();
            assert_eq!(e.pos.line, line, "{e}");
            assert!(e.message.contains(want), "{e}");
        }
    }
}
