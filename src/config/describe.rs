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
    let mut out = format!(
        "    {} [cycle {}] at {}: {cycle}{retention}{lock}; {}{class}\n",
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
    out
}
