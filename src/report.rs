//! What s3nap prints: run summaries, the catalog listing and the `-t` plan.

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::backup::extension;
use crate::config::{Config, CycleType, SetSpec};
use crate::layout::{self, Kind, RunId};
use crate::manifest::Manifest;
use crate::plan::{Action, SetPlan};

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

fn planned_key(config: &Config, set: &SetSpec, run: RunId, kind: Kind) -> String {
    let ext = extension("tar", set.compression, !config.recipients.is_empty());
    layout::archive_key(&config.host, &set.name, run, kind, &ext)
}

fn age(now: DateTime<Utc>, run: RunId) -> String {
    let hours = now.signed_duration_since(run.0).num_hours();
    if hours < 48 {
        format!("{hours}h old")
    } else {
        format!("{} days old", hours / 24)
    }
}

/// What a run at `now` would do, for `-t`: per set, due or not and why, slot, kind, key, what
/// prune would retire and why, and the restore points that would remain.
pub fn plan_text(
    config: &Config,
    now: DateTime<Utc>,
    plans: &[(SetSpec, anyhow::Result<SetPlan>)],
) -> String {
    let mut out = format!(
        "plan for {} at {} (test mode: nothing is changed)\n",
        config.file.display(),
        now.format("%Y-%m-%dT%H:%M:%SZ")
    );
    for (set, plan) in plans {
        out.push_str(&format!(
            "\n{} [cycle {}] ({})\n",
            set.name,
            set.cycle_label(),
            match set.cycle.cycle_type {
                CycleType::Simple => format!(
                    "SimpleCycle: every {} day(s), phase {}, {} diffs, {} fulls",
                    set.cycle.frequency, set.cycle.phase, set.cycle.diffs, set.cycle.fulls
                ),
                CycleType::Hanoi => format!(
                    "HanoiCycle: every {} day(s), {} discs{}",
                    set.cycle.frequency,
                    set.cycle.discs,
                    if set.cycle.archive_oldest_disc {
                        ", oldest disc archived"
                    } else {
                        ""
                    }
                ),
            }
        ));
        if set.cycle.use_temp_file {
            out.push_str(
                "  UseTempFile is set: ignored, s3nap always streams without temporary files\n",
            );
        }
        let plan = match plan {
            Ok(p) => p,
            Err(e) => {
                out.push_str(&format!("  cannot plan: {e:#}\n"));
                continue;
            }
        };
        match &plan.action {
            Action::Skip { reason } => out.push_str(&format!("  skip: {reason}\n")),
            Action::Run {
                position,
                kind,
                run,
                base,
                forced,
                note,
            } => {
                out.push_str(&format!(
                    "  {}: {} in slot {} (backup #{}){}\n    -> {}\n",
                    if *forced { "run (forced)" } else { "due" },
                    kind.to_string().to_uppercase(),
                    position.slot,
                    position.period,
                    match base {
                        Some(b) => format!(", changes since run {}", b.run),
                        None => String::new(),
                    },
                    planned_key(config, set, *run, *kind)
                ));
                if let Some(note) = note {
                    out.push_str(&format!("    ({note})\n"));
                }
            }
        }
        let retired: Vec<_> = plan.verdicts.iter().filter(|v| !v.keep).collect();
        if retired.is_empty() {
            out.push_str("  prune: nothing to retire\n");
        }
        for v in retired {
            let kind = plan
                .runs
                .iter()
                .find(|m| m.run == v.run)
                .map(|m| m.kind.to_string())
                .unwrap_or_default();
            out.push_str(&format!(
                "  prune: retire {kind} run {} ({})\n",
                v.run, v.reason
            ));
        }
        let kept: Vec<_> = plan.verdicts.iter().filter(|v| v.keep).collect();
        out.push_str(&format!(
            "  restore points after this run: {}\n",
            kept.len()
        ));
        for v in kept {
            let kind = plan
                .runs
                .iter()
                .find(|m| m.run == v.run)
                .map(|m| m.kind.to_string())
                .unwrap_or_else(|| "new".to_string());
            out.push_str(&format!(
                "    {} {kind:<4} {:<12} {}\n",
                v.run,
                age(now, v.run),
                v.reason
            ));
        }
    }
    out
}
