//! What s3nap prints: run outcomes, the catalog's manifests and the `-t` plans in; run
//! summaries, the catalog listing and the plan out, as text lines or JSON.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::backup::{archive_key, Outcome, SetOutcome, UnreadableDirectory};
use crate::config::{Config, SetSpec};
use crate::plan::{Action, SetPlan};
use crate::schema::layout::RunId;
use crate::schema::manifest::Manifest;

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

fn ratio(read: u64, stored: u64) -> f64 {
    if read > 0 {
        stored as f64 / read as f64
    } else {
        0.0
    }
}

/// The one summary line a run logs per set: set, kind, slot, bytes read and stored, ratio,
/// duration, throughput, warnings, outcome.
pub fn outcome_line(o: &SetOutcome) -> String {
    let head = format!("{} [{}]", o.set, o.cycle);
    match &o.outcome {
        Outcome::Committed {
            manifest: m,
            retired,
            kept_locked,
            problems,
        } => {
            let read = m.archive.plaintext_size;
            let stored = m.archive.stored_size;
            format!(
                "{head}: {} slot {}: read {}, stored {} (ratio {:.2}) in {:.1}s ({}/s), {} warning(s): committed run {}{}{}{}",
                m.kind,
                m.slot.map_or("-".to_string(), |s| s.to_string()),
                human_bytes(read),
                human_bytes(stored),
                ratio(read, stored),
                o.seconds,
                human_bytes((read as f64 / o.seconds.max(1e-3)) as u64),
                m.warnings.len(),
                m.run,
                if retired.is_empty() {
                    String::new()
                } else {
                    format!("; retired {}", retired.join(", "))
                },
                kept_locked
                    .iter()
                    .map(|(run, until)| format!(
                        "; {run} kept: locked until {}",
                        until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    ))
                    .collect::<String>(),
                problems
                    .iter()
                    .map(|p| format!("; but {p}"))
                    .collect::<String>()
            )
        }
        Outcome::Skipped(reason) => format!("{head}: skipped: {reason}"),
        Outcome::Failed(e) => format!("{head}: FAILED after {:.1}s: {e:#}", o.seconds),
    }
}

/// One JSON object per set for `run --json`; field names are documented in README.md.
pub fn outcome_json(o: &SetOutcome) -> serde_json::Value {
    let mut v = json!({
        "set": o.set,
        "cycle": o.cycle,
        "duration_seconds": (o.seconds * 1000.0).round() / 1000.0,
    });
    let fields = match &o.outcome {
        Outcome::Committed {
            manifest: m,
            retired,
            kept_locked,
            problems,
        } => json!({
            "outcome": if o.outcome.warned() { "warnings" } else { "committed" },
            "run": m.run.to_string(),
            "kind": m.kind,
            "slot": m.slot,
            "bytes_read": m.archive.plaintext_size,
            "bytes_stored": m.archive.stored_size,
            "ratio": (ratio(m.archive.plaintext_size, m.archive.stored_size) * 1000.0).round() / 1000.0,
            "warnings": m.warnings.len(),
            "archive": m.archive.key,
            "retired": retired,
            "kept_locked": kept_locked
                .iter()
                .map(|(run, until)| json!({
                    "run": run,
                    "until": until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                }))
                .collect::<Vec<_>>(),
            "problems": problems,
        }),
        Outcome::Skipped(reason) => json!({ "outcome": "skipped", "reason": reason }),
        Outcome::Failed(e) => json!({ "outcome": "failed", "error": format!("{e:#}") }),
    };
    if let (Some(obj), serde_json::Value::Object(extra)) = (v.as_object_mut(), fields) {
        obj.extend(extra);
    }
    v
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

/// `list --all-hosts`: per host, a line with its count of runs and sets, then its runs as
/// [`list_table`] prints them; hosts in name order, a blank line between them.
pub fn hosts_table(hosts: &BTreeMap<String, Vec<Manifest>>) -> String {
    let mut out = String::new();
    for (i, (host, runs)) in hosts.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        if runs.is_empty() {
            out.push_str(&format!(
                "HOST {host}: no committed run (only objects of interrupted runs)\n"
            ));
            continue;
        }
        let sets: BTreeSet<&str> = runs.iter().map(|m| m.set.as_str()).collect();
        out.push_str(&format!(
            "HOST {host}: {} run(s) of {} set(s)\n{}",
            runs.len(),
            sets.len(),
            list_table(runs)
        ));
    }
    out
}

/// `list --all-hosts --json`: an array of `{host, runs}`, `runs` as [`list_json`] has them.
pub fn hosts_json(hosts: &BTreeMap<String, Vec<Manifest>>) -> serde_json::Value {
    serde_json::Value::Array(
        hosts
            .iter()
            .map(|(host, runs)| json!({ "host": host, "runs": list_json(runs) }))
            .collect(),
    )
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
        out.push_str(&set_heading(set));
        let plan = match plan {
            Ok(p) => p,
            Err(e) if e.is::<UnreadableDirectory>() => {
                out.push_str(&format!("  will fail: {e:#}\n"));
                continue;
            }
            Err(e) => {
                out.push_str(&format!("  cannot plan: {e:#}\n"));
                continue;
            }
        };
        out.push_str(&action_text(config, set, &plan.action));
        out.push_str(&retention_text(now, plan));
    }
    out
}

/// A set's name and cycle settings, and a note on a setting s3nap ignores.
fn set_heading(set: &SetSpec) -> String {
    let cycle = &set.cycle;
    let description = cycle.describe(": ");
    let mut out = format!(
        "\n{} [cycle {}] ({description})\n",
        set.name,
        set.cycle_label()
    );
    if cycle.use_temp_file {
        out.push_str(
            "  UseTempFile is set: ignored, s3nap always streams without temporary files\n",
        );
    }
    out
}

/// Whether the set is due and, if so, the run's kind, slot, base, key and any warning or note.
fn action_text(config: &Config, set: &SetSpec, action: &Action) -> String {
    match action {
        Action::Skip { reason } => format!("  skip: {reason}\n"),
        Action::Run {
            position,
            kind,
            run,
            base,
            forced,
            note,
            local,
        } => {
            let mut out = format!(
                "  {}: {} in slot {} (backup #{}){}\n    -> {}\n",
                if *forced { "run (forced)" } else { "due" },
                kind.to_string().to_uppercase(),
                position.slot,
                position.period,
                match base {
                    Some(b) => format!(", changes since run {}", b.run),
                    None => String::new(),
                },
                archive_key(config, set, *run, *kind)
            );
            match (&local.warning, note) {
                // The run records this warning in its manifest (and exits 1).
                (Some(w), _) => out.push_str(&format!("    warning: {}: {}\n", w.path, w.problem)),
                (None, Some(note)) => out.push_str(&format!("    ({note})\n")),
                (None, None) => {}
            }
            if let Some(min) = set.quilt {
                out.push_str(&format!(
                    "    quilted: files of {min} bytes or more go to quilt/content/ once \
                     (nothing is read or uploaded in test mode)\n"
                ));
            }
            out.push_str(&hooks_text(set));
            out
        }
    }
}

/// A set's Before and After commands, which `-t` names but does not run (the program only:
/// its arguments may hold a token, as `config check` shows NotifyCommand).
fn hooks_text(set: &SetSpec) -> String {
    let mut out = String::new();
    for (hook, argv) in [("Before", &set.hooks.before), ("After", &set.hooks.after)] {
        if let Some((program, args)) = argv.split_first() {
            out.push_str(&format!(
                "    {hook} (not run in test mode): {program} ({} argument(s))\n",
                args.len()
            ));
        }
    }
    out
}

/// What prune would retire and why, and the restore points that would remain.
fn retention_text(now: DateTime<Utc>, plan: &SetPlan) -> String {
    // The planned run has no manifest yet, so no kind: it shows as "new" among those kept.
    let kind_of = |run: RunId| {
        plan.runs
            .iter()
            .find(|m| m.run == run)
            .map(|m| m.kind.to_string())
    };
    let mut out = String::new();
    let (kept, retired): (Vec<_>, Vec<_>) = plan.verdicts.iter().partition(|v| v.keep);
    if retired.is_empty() {
        out.push_str("  prune: nothing to retire\n");
    }
    for v in retired {
        let kind = kind_of(v.run).unwrap_or_default();
        out.push_str(&format!(
            "  prune: retire {kind} run {} ({})\n",
            v.run, v.reason
        ));
    }
    out.push_str(&format!(
        "  restore points after this run: {}\n",
        kept.len()
    ));
    for v in kept {
        let kind = kind_of(v.run).unwrap_or_else(|| "new".to_string());
        out.push_str(&format!(
            "    {} {kind:<4} {:<12} {}\n",
            v.run,
            age(now, v.run),
            v.reason
        ));
    }
    out
}
