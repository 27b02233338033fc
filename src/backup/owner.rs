//! Which configuration backs up a set under its Host: the identity of a configuration (kept in
//! its DiffDir) in, whether this one may back up a set out.
//!
//! Several configurations may share a Bucket and a Host (each with its own DiffDir) when their
//! sets are disjoint: each one's prune retires only its own sets' runs, and leaves the other's
//! uploads in flight alone (they are not in its DiffDir, and foreign debris waits 7 days). Two
//! configurations backing up the *same* set under one Host would mix two sources under one
//! name and retire each other's runs by their own rules. So every run records the
//! configuration that made it (`Manifest::owner`: a random id kept in `DiffDir/s3nap.id`, with
//! the DiffDir and the machine for messages), and a run of a set whose latest run another
//! configuration made fails that set, naming it — unless `--take-over` says this configuration
//! replaces that one (a new machine, a moved DiffDir). A DiffDir lost and made anew at the same
//! place on the same machine is the same configuration — but only in the run that makes the
//! identity anew: a clone of the machine (same host name, same DiffDir path, an identity of
//! its own) is another configuration from its second run on. Runs made before s3nap recorded
//! owners belong to nobody. (Two such configurations running at the same moment are told
//! apart by their uploads in flight: `commit::check_no_foreign_upload`.)
//!
//! `prune` skips a set another configuration took over ([`may_prune`]), but only when this
//! configuration has made runs under the Host itself: a copy of the configuration with a
//! DiffDir of its own, on another machine, that only prunes, is a supported way to prune
//! (README, "Least privilege").

use std::io;
use std::path::Path;

use anyhow::bail;

use crate::config::SetSpec;
use crate::schema::manifest::{Manifest, Owner};

/// The file in DiffDir holding the configuration's identity.
const ID_FILE: &str = "s3nap.id";

/// This configuration as its runs name it. The identity is read from DiffDir, and made there
/// (random, 128 bits) when `create` and it is missing; without it (`-t` before the first run)
/// it is empty, which no run's owner has (the DiffDir and the machine still count). The flag
/// says whether the identity is new: made here, or (empty) to be made by the next run.
pub fn identify(diff_dir: &Path, create: bool) -> io::Result<(Owner, bool)> {
    let path = diff_dir.join(ID_FILE);
    let (id, new) = match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => (text.trim().to_string(), false),
        Ok(_) | Err(_) if !create => (String::new(), true),
        Ok(_) => (new_id(&path)?, true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => (new_id(&path)?, true),
        Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
    };
    let machine = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "?".into());
    let diff_dir = std::fs::canonicalize(diff_dir).unwrap_or_else(|_| diff_dir.to_path_buf());
    let owner = Owner {
        id,
        diff_dir: diff_dir.display().to_string(),
        machine,
    };
    Ok((owner, new))
}

fn new_id(path: &Path) -> io::Result<String> {
    let mut bytes = [0u8; 16];
    getrandom(&mut bytes)?;
    let id = hex::encode(bytes);
    crate::atomic::replace_file(path, format!("{id}\n").as_bytes())
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    Ok(id)
}

fn getrandom(buf: &mut [u8]) -> io::Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(buf)
}

/// Whether this configuration (`mine`; `None`: it has no identity yet) may back up `set`,
/// whose committed runs (any cycle) are `all`: yes when its latest run is this
/// configuration's, or recorded no owner, or with `take_over`. `new`: `mine` was made (or is
/// to be made) by this run (see [`identify`]).
pub fn check(
    set: &SetSpec,
    host: &str,
    (mine, new): (Option<&Owner>, bool),
    all: &[Manifest],
    take_over: bool,
) -> anyhow::Result<()> {
    let latest = all
        .iter()
        .filter(|m| m.set == set.name)
        .max_by_key(|m| m.run);
    let Some((latest, theirs)) = latest.and_then(|m| Some((m, m.owner.as_ref()?))) else {
        return Ok(());
    };
    if mine.is_some_and(|m| !m.id.is_empty() && m.id == theirs.id) {
        return Ok(());
    }
    // The same DiffDir on the same machine with an identity made in this very run: this
    // configuration's DiffDir was lost and made anew (no two configurations can hold one
    // DiffDir: its lock). An identity made before is another configuration's (a clone of the
    // machine): that one is not let through again.
    if let Some(m) = mine
        .filter(|_| new)
        .filter(|m| m.diff_dir == theirs.diff_dir && m.machine == theirs.machine)
    {
        log::info!(
            "{}: DiffDir {} on {} was made anew since run {}: still this configuration's set",
            set.name,
            m.diff_dir,
            m.machine,
            latest.run
        );
        return Ok(());
    }
    let this = match mine {
        Some(m) => format!("DiffDir {} on {}", m.diff_dir, m.machine),
        None => "a DiffDir without runs yet".to_string(),
    };
    if take_over {
        log::warn!(
            "{}: --take-over: this configuration ({this}) takes the set over from the one \
             that made run {} (DiffDir {} on {})",
            set.name,
            latest.run,
            theirs.diff_dir,
            theirs.machine
        );
        return Ok(());
    }
    bail!(
        "{} under Host {host} is backed up by another configuration: its latest run {} was \
         made with DiffDir {} on {} (this one: {this}). Two configurations must not back up \
         the same set under one Host: give one of them a Host of its own, or drop the set from \
         one. If this configuration replaces that one (a new machine, a lost or moved \
         DiffDir), run it once with --take-over",
        set.name,
        latest.run,
        theirs.diff_dir,
        theirs.machine
    )
}

/// Why this configuration's prune must leave `set` alone (`None`: it may prune it): its latest
/// run (of `all`, any cycle) was made by another configuration, which took the set over.
/// Only for a configuration that has made runs under the Host itself (the caller asks
/// [`identity_if_it_ran`], once this says `Some`): one that never did (it only prunes)
/// prunes every set; so does one without an identity (`None`, or an empty id).
pub fn may_prune(set: &SetSpec, mine: Option<&Owner>, all: &[Manifest]) -> Option<String> {
    let mine = mine.filter(|m| !m.id.is_empty())?;
    let latest = all
        .iter()
        .filter(|m| m.set == set.name)
        .max_by_key(|m| m.run)?;
    let theirs = latest.owner.as_ref().filter(|o| !o.id.is_empty())?;
    (theirs.id != mine.id).then(|| {
        format!(
            "{}: not pruned: its latest run {} was made by another configuration (DiffDir {} \
             on {}), which prunes it now",
            set.name, latest.run, theirs.diff_dir, theirs.machine
        )
    })
}

/// `mine` when some run of `all` (every run under the Host) was made by it: what
/// [`may_prune`] checks against.
pub fn identity_if_it_ran<'a>(
    mine: Owner,
    all: impl IntoIterator<Item = &'a Manifest>,
) -> Option<Owner> {
    let ran = !mine.id.is_empty()
        && all
            .into_iter()
            .any(|m| m.owner.as_ref().is_some_and(|o| o.id == mine.id));
    ran.then_some(mine)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::layout::Kind;
    use crate::schema::manifest;

    fn owner(id: &str) -> Owner {
        Owner {
            id: id.into(),
            diff_dir: format!("/var/lib/{id}"),
            machine: "m".into(),
        }
    }

    #[test]
    fn the_configuration_of_the_latest_run_owns_the_set() {
        let set = SetSpec {
            name: "dir/etc".into(),
            source: crate::config::SourceSpec::Directory {
                path: "/etc".into(),
                excludes: vec![],
                one_file_system: false,
            },
            compression: crate::pipeline::compress::Compression::None,
            storage_class: crate::store::StorageClass::Standard,
            cycle: Default::default(),
            object_lock: None,
            restore: vec![],
            hooks: Default::default(),
            quilt: None,
            pos: crate::config::Pos {
                file: std::sync::Arc::from(std::path::Path::new("t.conf")),
                line: 1,
                column: 1,
            },
        };
        let run = |day: u32, who: Option<&str>| {
            let mut m = manifest::sample(
                "dir/etc",
                format!("202611{day:02}T030000Z").parse().unwrap(),
                Kind::Full,
                None,
            );
            m.owner = who.map(owner);
            m
        };
        let (a, b) = (owner("a"), owner("b"));
        // Nobody's runs, and no runs at all, belong to anybody.
        let old = |o| (Some(o), false);
        check(&set, "h", old(&a), &[run(1, None)], false).unwrap();
        check(&set, "h", old(&a), &[], false).unwrap();
        let runs = [run(1, Some("a")), run(2, Some("b"))];
        check(&set, "h", old(&b), &runs, false).unwrap();
        let err = check(&set, "h", old(&a), &runs, false)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("latest run 20261102T030000Z was made with DiffDir /var/lib/b on m"),
            "{err}"
        );
        assert!(err.contains("--take-over"), "{err}");
        check(&set, "h", old(&a), &runs, true).unwrap();
        assert!(check(&set, "h", (None, false), &runs, false).is_err());
        // B's DiffDir lost and made anew where it was, by this run: still B.
        let b_again = Owner {
            id: "b2".into(),
            ..owner("b")
        };
        check(&set, "h", (Some(&b_again), true), &runs, false).unwrap();
        // A clone of B's machine (same host name, same DiffDir path) whose identity was made
        // by an earlier run: another configuration, refused.
        let err = check(&set, "h", old(&b_again), &runs, false).unwrap_err();
        assert!(err.to_string().contains("--take-over"), "{err}");
        let elsewhere = Owner {
            machine: "other".into(),
            ..b_again
        };
        assert!(check(&set, "h", (Some(&elsewhere), true), &runs, false).is_err());
        // -t in a DiffDir made anew has no identity yet: its place still counts.
        let planning = Owner {
            id: String::new(),
            ..owner("b")
        };
        check(&set, "h", (Some(&planning), true), &runs, false).unwrap();

        // prune: A, which made runs under the Host, leaves B's set alone; a configuration
        // that never ran (prune only) prunes it; B prunes it.
        let msg = may_prune(&set, Some(&a), &runs).unwrap();
        assert!(msg.contains("DiffDir /var/lib/b on m"), "{msg}");
        assert!(may_prune(&set, None, &runs).is_none());
        assert!(may_prune(&set, Some(&b), &runs).is_none());
        assert!(may_prune(&set, Some(&a), &[run(1, None)]).is_none());
        assert_eq!(identity_if_it_ran(a.clone(), &runs), Some(a.clone()));
        assert_eq!(identity_if_it_ran(owner("c"), &runs), None);
    }
}
