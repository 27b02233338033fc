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
//! place on the same machine is the same configuration: nothing else could have held it. Runs made before s3nap recorded
//! owners belong to nobody. (Two such configurations running at the same moment are told
//! apart by their uploads in flight: `commit::check_no_foreign_upload`.)
//!
//! `prune` does not check it: a copy of the configuration with a DiffDir of its own, on another
//! machine, is a supported way to prune (README, "Least privilege").

use std::io;
use std::path::Path;

use anyhow::bail;

use crate::config::SetSpec;
use crate::schema::manifest::{Manifest, Owner};

/// The file in DiffDir holding the configuration's identity.
const ID_FILE: &str = "s3nap.id";

/// This configuration as its runs name it. The identity is read from DiffDir, and made there
/// (random, 128 bits) when `create` and it is missing; without it (`-t` before the first run)
/// it is empty, which no run's owner has (the DiffDir and the machine still count).
pub fn identify(diff_dir: &Path, create: bool) -> io::Result<Owner> {
    let path = diff_dir.join(ID_FILE);
    let id = match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => text.trim().to_string(),
        Ok(_) | Err(_) if !create => String::new(),
        Ok(_) => new_id(&path)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => new_id(&path)?,
        Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
    };
    let machine = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "?".into());
    let diff_dir = std::fs::canonicalize(diff_dir).unwrap_or_else(|_| diff_dir.to_path_buf());
    Ok(Owner {
        id,
        diff_dir: diff_dir.display().to_string(),
        machine,
    })
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
/// configuration's, or recorded no owner, or with `take_over`.
pub fn check(
    set: &SetSpec,
    host: &str,
    mine: Option<&Owner>,
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
    // The same DiffDir on the same machine with a new identity: this configuration's DiffDir
    // was lost and made anew (no two configurations can hold one DiffDir: its lock).
    if let Some(m) = mine.filter(|m| m.diff_dir == theirs.diff_dir && m.machine == theirs.machine) {
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
        check(&set, "h", Some(&a), &[run(1, None)], false).unwrap();
        check(&set, "h", Some(&a), &[], false).unwrap();
        let runs = [run(1, Some("a")), run(2, Some("b"))];
        check(&set, "h", Some(&b), &runs, false).unwrap();
        let err = check(&set, "h", Some(&a), &runs, false)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("latest run 20261102T030000Z was made with DiffDir /var/lib/b on m"),
            "{err}"
        );
        assert!(err.contains("--take-over"), "{err}");
        check(&set, "h", Some(&a), &runs, true).unwrap();
        assert!(check(&set, "h", None, &runs, false).is_err());
        // B's DiffDir lost and made anew where it was: still B.
        let b_again = Owner {
            id: "b2".into(),
            ..owner("b")
        };
        check(&set, "h", Some(&b_again), &runs, false).unwrap();
        let elsewhere = Owner {
            machine: "other".into(),
            ..b_again
        };
        assert!(check(&set, "h", Some(&elsewhere), &runs, false).is_err());
        // -t in a DiffDir made anew has no identity yet: its place still counts.
        let planning = Owner {
            id: String::new(),
            ..owner("b")
        };
        check(&set, "h", Some(&planning), &runs, false).unwrap();
    }
}
