//! What s3nap prints: run summaries, the catalog listing and the `-t` plan.

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::backup::extension;
use crate::config::{Config, SetSpec};
use crate::layout::{self, Kind, RunId};
use crate::manifest::Manifest;

/// `1.5 MiB`-style sizes.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

pub fn summary_line(m: &Manifest, seconds: f64) -> String {
    let read = m.archive.plaintext_size;
    let stored = m.archive.stored_size;
    format!(
        "{}: {} run {} committed: read {}, stored {} (ratio {:.2}) in {:.1}s ({}/s), {} file(s), {} warning(s)",
        m.set,
        m.kind,
        m.run,
        human_bytes(read),
        human_bytes(stored),
        if read > 0 { stored as f64 / read as f64 } else { 0.0 },
        seconds,
        human_bytes((read as f64 / seconds.max(1e-3)) as u64),
        m.counts.files,
        m.warnings.len()
    )
}

pub fn list_table(runs: &[Manifest]) -> String {
    let mut out = format!(
        "{:<30} {:<17} {:<5} {:<20} {:>12} {:>12}\n",
        "SET", "RUN", "KIND", "STARTED", "STORED", "PLAINTEXT"
    );
    for m in runs {
        out.push_str(&format!(
            "{:<30} {:<17} {:<5} {:<20} {:>12} {:>12}\n",
            m.set,
            m.run.to_string(),
            m.kind.to_string(),
            m.started.format("%Y-%m-%d %H:%M:%S").to_string(),
            human_bytes(m.archive.stored_size),
            human_bytes(m.archive.plaintext_size)
        ));
    }
    out
}

/// Stable field names, documented in README.md.
pub fn list_json(runs: &[Manifest]) -> serde_json::Value {
    serde_json::Value::Array(
        runs.iter()
            .map(|m| {
                json!({
                    "set": m.set,
                    "run": m.run.to_string(),
                    "kind": m.kind,
                    "started": m.started.to_rfc3339(),
                    "finished": m.finished.to_rfc3339(),
                    "stored_size": m.archive.stored_size,
                    "plaintext_size": m.archive.plaintext_size,
                    "archive": m.archive.key,
                    "warnings": m.warnings.len(),
                })
            })
            .collect(),
    )
}

fn planned_key(config: &Config, set: &SetSpec, run: RunId) -> String {
    let ext = extension("tar", set.compression, !config.recipients.is_empty());
    layout::archive_key(&config.host, &set.name, run, Kind::Full, &ext)
}

/// What a run at `now` would do, for `-t`.
pub fn plan_text(config: &Config, now: DateTime<Utc>, only: &[String]) -> String {
    let run = RunId::at(now);
    let mut out = format!(
        "plan for {} at {} (test mode: nothing is changed)\n",
        config.file.display(),
        now.format("%Y-%m-%dT%H:%M:%SZ")
    );
    for set in config.selected_sets(only) {
        out.push_str(&format!(
            "{}: FULL ({}{}) -> {}\n",
            set.name,
            set.compression,
            if config.recipients.is_empty() {
                ", unencrypted"
            } else {
                ", encrypted"
            },
            planned_key(config, set, run)
        ));
        if set.cycle.use_temp_file {
            out.push_str("  UseTempFile is set: s3nap streams without temporary files anyway\n");
        }
    }
    out
}
