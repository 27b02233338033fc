//! A resolved [`Config`] → the text `s3nap config check` prints.
//!
//! The run's settings come in the directive table's order, each under its directive's name;
//! then every set with its cycle, compression and storage class. Secrets are never shown: the S3 secret key
//! appears as `****`, the access key id shortened, NotifyCommand's arguments counted.

use super::directives::{Show, DIRECTIVES};
use super::{Config, SetSpec, SourceSpec};

/// The resolved configuration for `config check`.
pub fn config_text(config: &Config) -> String {
    let mut out = format!("configuration {} is valid\n", config.file.display());
    for spec in DIRECTIVES {
        let (label, value) = match spec.show {
            Show::Nothing => continue,
            Show::Value(value) => (spec.name, value),
            Show::Group(label, value) => (label, value),
        };
        if let Some(v) = value(config) {
            out.push_str(&format!("  {label:<16} {v}\n"));
        }
    }
    out.push_str(&format!("  {} set(s):\n", config.sets.len()));
    for set in &config.sets {
        out.push_str(&set_text(set));
    }
    out
}

/// One set's line, with its excludes below it.
fn set_text(set: &SetSpec) -> String {
    let c = &set.cycle;
    let cycle = c.describe(" ");
    let retention = c
        .retention_days
        .map(|d| {
            format!(
                ", RetentionPolicy {d} days, MinimumRedundancy {}",
                c.minimum_redundancy
            )
        })
        .unwrap_or_default();
    let lock = set
        .object_lock
        .map(|l| {
            format!(
                ", ObjectLock {} (margin {}s, at most {} days)",
                l.mode,
                l.margin.num_seconds(),
                l.max_days
            )
        })
        .unwrap_or_default();
    let class = match set.storage_class {
        crate::store::StorageClass::Standard => String::new(),
        class => format!("; StorageClass {class}"),
    };
    let quilt = set
        .quilt
        .map(|min| format!("; Quilt (files of {min} bytes or more)"))
        .unwrap_or_default();
    let mut out = format!(
        "    {} [cycle {}] at {}: {cycle}{retention}{lock}; {}{class}{quilt}\n",
        set.name,
        set.cycle_label(),
        set.pos,
        set.compression
    );
    // The program only, as for NotifyCommand: the arguments may hold a token.
    for (hook, argv) in [("Before", &set.hooks.before), ("After", &set.hooks.after)] {
        if let Some((program, args)) = argv.split_first() {
            out.push_str(&format!(
                "      {hook} {program} ({} argument(s)){}\n",
                args.len(),
                match set.hooks.timeout {
                    Some(t) => format!(", HookTimeout {}s", t.as_secs()),
                    None => ", no HookTimeout".into(),
                }
            ));
        }
    }
    if let SourceSpec::Directory { excludes, .. } = &set.source {
        for x in excludes {
            out.push_str(&format!("      Exclude {}\n", x.display()));
        }
    }
    // Where each bucket's requests go and which region signs them (none: the SDK's default).
    if let SourceSpec::Bucket(b) = &set.source {
        let region = |r: Option<String>| r.unwrap_or_else(|| "default".into());
        out.push_str(&format!(
            "      Master {} (region {}), Replica s3://{} (region {}), AddressingStyle {}{}\n",
            b.master,
            region(b.master_region()),
            b.replica,
            region(b.replica_region()),
            b.addressing.name(),
            b.endpoint
                .as_deref()
                .map(|e| format!(", Endpoint {e}"))
                .unwrap_or_default()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::config_text;
    use crate::config::resolve::resolve;
    use crate::config::syntax::parse_str;

    #[test]
    fn a_bucket_sets_regions_and_addressing_are_shown() {
        let path = Path::new("/etc/s3nap/test.conf");
        let text = "Bucket s3://b/p\nDiffDir /var/lib/s3nap\nHost h\nRegion ca-central-1\n\
                    <Bucket www>\n  Master s3://www-site/public/\n  Replica s3://www-backup\n  \
                    MasterRegion eu-west-1\n  AddressingStyle path\n</Bucket>\n";
        let config = resolve(path, &parse_str(path, text).unwrap()).unwrap();
        let shown = config_text(&config);
        assert!(
            shown.contains(
                "Master s3://www-site/public (region eu-west-1), Replica s3://www-backup \
                 (region ca-central-1), AddressingStyle path"
            ),
            "{shown}"
        );
    }

    #[test]
    fn a_quilted_set_and_the_key_file_are_shown_never_the_secret() {
        let path = Path::new("/etc/s3nap/test.conf");
        let text = "Bucket s3://b/p\nDiffDir /var/lib/s3nap\nHost h\nGpgRecipient a@example.org\n\
                    QuiltKeyFile /etc/s3nap/quilt.key\nDirectory /etc\n\
                    <Directory /srv>\n  Quilt yes\n</Directory>\n";
        let config = resolve(path, &parse_str(path, text).unwrap()).unwrap();
        let shown = config_text(&config);
        assert!(
            shown.contains("QuiltKeyFile     /etc/s3nap/quilt.key (read when a quilted set runs)"),
            "{shown}"
        );
        let srv = shown.lines().find(|l| l.contains("dir/srv")).unwrap();
        assert!(
            srv.ends_with("; Quilt (files of 65536 bytes or more)"),
            "{srv}"
        );
        let etc = shown.lines().find(|l| l.contains("dir/etc")).unwrap();
        assert!(!etc.contains("Quilt"), "{etc}");
    }
}
