//! Monitoring: a run's outcomes in, a Prometheus textfile out (node_exporter's textfile
//! collector format), replaced atomically so the collector never reads half a file.
//!
//! A set that did not commit this time keeps its last success time and sizes from the previous
//! file, so an alert on "no success for 2 days" works across failing runs. `s3nap verify` adds
//! the time it last found a set's runs whole, kept the same way.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::Path;

use chrono::{DateTime, Utc};

use crate::backup::{Outcome, SetOutcome};

const METRICS: &[(&str, &str)] = &[
    ("s3nap_last_success_timestamp_seconds", "Unix time the set last committed a run."),
    ("s3nap_last_run_timestamp_seconds", "Unix time of the set's last run attempt (skips included)."),
    (
        "s3nap_last_run_outcome",
        "Outcome of the set's last run: 0 committed, 1 committed with warnings, 2 failed, 3 skipped.",
    ),
    ("s3nap_last_run_bytes_read", "Bytes read from the source by the last committed run."),
    ("s3nap_last_run_bytes_stored", "Bytes stored by the last committed run."),
    ("s3nap_last_run_duration_seconds", "Duration of the set's last run."),
    (
        "s3nap_last_verify_success_timestamp_seconds",
        "Unix time `s3nap verify` last found every checked run of the set whole (check: objects, read or deep).",
    ),
];

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// (metric, labels) → value, from an earlier file; unreadable lines are ignored.
fn parse(text: &str) -> BTreeMap<(String, String), String> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        out.insert((name.to_string(), labels.to_string()), value.to_string());
    }
    out
}

/// The textfile after a run at `now`, carrying over what `previous` knew.
pub fn render(outcomes: &[SetOutcome], previous: &str, now: DateTime<Utc>) -> String {
    let mut values = parse(previous);
    for o in outcomes {
        let labels = format!("set=\"{}\",cycle=\"{}\"", escape(&o.set), escape(&o.cycle));
        let mut set = |metric: &str, value: String| {
            values.insert((metric.to_string(), labels.clone()), value);
        };
        set(
            "s3nap_last_run_timestamp_seconds",
            now.timestamp().to_string(),
        );
        set(
            "s3nap_last_run_duration_seconds",
            format!("{:.3}", o.seconds),
        );
        let outcome = match &o.outcome {
            Outcome::Committed { manifest, .. } => {
                set(
                    "s3nap_last_success_timestamp_seconds",
                    now.timestamp().to_string(),
                );
                set(
                    "s3nap_last_run_bytes_read",
                    manifest.archive.plaintext_size.to_string(),
                );
                set(
                    "s3nap_last_run_bytes_stored",
                    manifest.archive.stored_size.to_string(),
                );
                // Warnings in the manifest, or problems after the commit (the state for
                // the next DIFF not saved): both are exit status 1.
                u8::from(o.outcome.warned())
            }
            Outcome::Failed(_) => 2,
            Outcome::Skipped(_) => 3,
        };
        set("s3nap_last_run_outcome", outcome.to_string());
    }
    write(&values)
}

/// The textfile holding `values`, metric by metric.
fn write(values: &BTreeMap<(String, String), String>) -> String {
    let mut out = String::new();
    for (metric, help) in METRICS {
        out.push_str(&format!("# HELP {metric} {help}\n# TYPE {metric} gauge\n"));
        for ((name, labels), value) in values {
            if name == metric {
                out.push_str(&format!("{name}{{{labels}}} {value}\n"));
            }
        }
    }
    out
}

/// The textfile after a verify at `now` that found every checked run of `sets` whole, reading
/// as far as `check` (`objects`, `read`, `deep`), carrying over what `previous` knew.
pub fn render_verified(sets: &[String], check: &str, previous: &str, now: DateTime<Utc>) -> String {
    let mut values = parse(previous);
    for set in sets {
        let labels = format!("set=\"{}\",check=\"{}\"", escape(set), escape(check));
        values.insert(
            (
                "s3nap_last_verify_success_timestamp_seconds".to_string(),
                labels,
            ),
            now.timestamp().to_string(),
        );
    }
    write(&values)
}

/// Updates the metrics file at `path` after a verify (see [`render_verified`]).
pub fn update_verified(
    path: &Path,
    sets: &[String],
    check: &str,
    now: DateTime<Utc>,
) -> io::Result<()> {
    let previous = fs::read_to_string(path).unwrap_or_default();
    // Readable by node_exporter, as after a run.
    crate::atomic::replace_readable_file(
        path,
        render_verified(sets, check, &previous, now).as_bytes(),
    )
}

/// Updates the metrics file at `path` with this run's outcomes.
pub fn update(path: &Path, outcomes: &[SetOutcome], now: DateTime<Utc>) -> io::Result<()> {
    let previous = fs::read_to_string(path).unwrap_or_default();
    crate::atomic::replace_readable_file(path, render(outcomes, &previous, now).as_bytes())
}
