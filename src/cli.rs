//! Command-line interface definitions (clap). Parsing only: `main.rs` dispatches.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub const EXIT_STATUS_HELP: &str = "\
Exit status:
  0  every set succeeded (or was not due)
  1  completed, with warnings (files that could not be read or changed while read, or the
     state for the next DIFF could not be saved)
  2  at least one set (or the recovery) failed, or verify found damage
  3  configuration or usage error
  4  another run holds the lock
  5  recover (verify --include-archived, bucket restore, bucket diff): archives in GLACIER or
     DEEP_ARCHIVE must be retrieved first; their retrieval was requested and nothing was
     written: run it again after the time it names, or use recover --wait-retrieval";

#[derive(Debug, Parser)]
#[command(
    name = "s3nap",
    version,
    about = "Streaming, encrypted backups of directory trees into S3 (tar | zstd | gpg | split)",
    after_help = EXIT_STATUS_HELP
)]
pub struct Cli {
    /// Configuration file
    #[arg(short, long, global = true, default_value = "/etc/s3nap/s3nap.conf")]
    pub config: PathBuf,

    /// Run even when a set is not due or its backup of the day is done
    #[arg(short, long, global = true)]
    pub force: bool,

    /// Show what a run would do; change nothing, locally or remotely
    #[arg(short = 't', long = "test", global = true)]
    pub test: bool,

    /// Debug output
    #[arg(short, long, global = true)]
    pub debug: bool,

    /// Back up sets whose latest run another configuration made (this one replaces it: a new
    /// machine, a lost or moved DiffDir)
    #[arg(long, global = true)]
    pub take_over: bool,

    /// Wait for another run's lock instead of exiting with status 4
    #[arg(long, global = true)]
    pub wait: bool,

    /// Act as if it were TIME (rehearse a schedule): run id, RFC 3339 or YYYY-MM-DD[ HH:MM]
    #[arg(long, global = true, value_name = "TIME")]
    pub now: Option<String>,

    /// JSON on stdout: one object per set for a run, one array for list, one document for verify
    #[arg(long, global = true)]
    pub json: bool,

    /// Show progress even when stderr is not a terminal
    #[arg(long, global = true, conflicts_with = "no_progress")]
    pub progress: bool,

    /// Never show progress
    #[arg(long, global = true)]
    pub no_progress: bool,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Back up the configured sets (the default command)
    Run {
        /// Only these sets (names as `list` shows them, or configured paths)
        sets: Vec<String>,
    },
    /// Retire the runs retention no longer keeps, and the debris of interrupted runs (with -t:
    /// only show it)
    Prune {
        /// Only these sets
        sets: Vec<String>,
    },
    /// List the committed runs in the store
    List {
        /// Only this set
        set: Option<String>,
        #[command(flatten)]
        host: HostArg,
        /// Every host in the store (found by its prefix) with its runs
        #[arg(long, conflicts_with = "host")]
        all_hosts: bool,
    },
    /// Write a set's backup to stdout as one tar stream: `s3nap recover dir/etc | tar -x -C /`
    Recover {
        /// Set name (`dir/etc`) or configured path (`/etc`)
        set: String,
        /// The state as of TIME (run id, RFC 3339, or `YYYY-MM-DD[ HH:MM]` UTC); default: latest
        #[arg(long, value_name = "TIME")]
        at: Option<String>,
        #[command(flatten)]
        decrypt: DecryptArgs,
        /// List the members (type code and name, run by run) instead of writing a tar stream
        #[arg(long, conflicts_with = "restore")]
        list: bool,
        /// Pipe the recovered dump into its restore command (the set's Restore, the one its
        /// program named, or the dump tool's client) instead of stdout
        #[arg(long)]
        restore: bool,
        /// Archives in GLACIER or DEEP_ARCHIVE: after requesting their retrieval, wait
        /// for it (checking every few minutes) and recover, instead of exiting with status 5
        #[arg(long)]
        wait_retrieval: bool,
        #[command(flatten)]
        host: HostArg,
        /// Only these members (as `tar t` names them; a leading `/` is ignored)
        paths: Vec<PathBuf>,
    },
    /// Check that the stored runs are whole, changing nothing: by default HEAD requests only
    /// (manifests parse, objects exist with their recorded sizes, chains are complete); exit
    /// status 2 on any damage
    #[command(group(clap::ArgGroup::new("reading").args(["read", "deep"]).multiple(true)))]
    Verify {
        /// Only these sets (default: every set of this Host in the store)
        sets: Vec<String>,
        /// Only the chain current at TIME, for every check (run id, RFC 3339, or
        /// `YYYY-MM-DD[ HH:MM]` UTC)
        #[arg(long, value_name = "TIME", conflicts_with = "all")]
        at: Option<String>,
        /// Read every committed run, not only the chains a recovery of the latest state needs
        #[arg(long, requires = "reading")]
        all: bool,
        /// Also read the archives (parallel ranged GETs) and check every range's SHA-256 against
        /// the manifest; no key needed
        #[arg(long)]
        read: bool,
        /// Read only a random PCT % of the runs that would be read (at least one when PCT > 0)
        #[arg(long, value_name = "PCT", value_parser = percent, requires = "reading")]
        sample: Option<f64>,
        /// Also decrypt, decompress and parse every tar to its end (a dump: check its length), as
        /// a recovery would, writing nothing
        #[arg(long)]
        deep: bool,
        /// Also read objects in an archive storage class: requests their retrieval (paid) and
        /// exits 5 until they can be read
        #[arg(long)]
        include_archived: bool,
        #[command(flatten)]
        decrypt: DecryptArgs,
        #[command(flatten)]
        host: HostArg,
    },
    /// Bucket sets: bring a bucket back to a snapshot, or compare two snapshots
    Bucket {
        #[command(subcommand)]
        action: BucketAction,
    },
    /// The quilt: content shared by runs and hosts (see "Quilting" in README)
    Quilt {
        #[command(subcommand)]
        action: QuiltAction,
    },
    /// Check the configuration and print it resolved, secrets masked
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Print a shell completion script: s3nap completions bash > /etc/bash_completion.d/s3nap
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff): s3nap man > /usr/local/share/man/man1/s3nap.1
    Man,
}

/// A percentage, 0 to 100.
fn percent(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) => Ok(p),
        _ => Err(format!("'{text}' is not a percentage from 0 to 100")),
    }
}

/// Whose backups `list`, `recover`, `verify` and `bucket restore|diff` read.
#[derive(Debug, Args)]
pub struct HostArg {
    /// Read the backups another machine stored under its Host name in the same Bucket (a new
    /// machine recovering an old one's); they are only read, never changed
    #[arg(long, value_name = "NAME", value_parser = host_name)]
    pub host: Option<String>,
}

/// A host name as the store layout takes it (the `Host` directive's rule).
fn host_name(text: &str) -> Result<String, String> {
    crate::schema::layout::check_host(text).map(|()| text.to_string())
}

/// How to decrypt archives.
#[derive(Debug, Args)]
pub struct DecryptArgs {
    /// Secret key file to decrypt with (passphrase: S3NAP_PASSPHRASE_FILE or a prompt)
    #[arg(long, value_name = "FILE", conflicts_with = "gpg")]
    pub identity: Option<PathBuf>,
    /// Decrypt through `gpg --decrypt` (gpg-agent, smartcards); the default without --identity
    #[arg(long)]
    pub gpg: bool,
}

#[derive(Debug, Subcommand)]
pub enum BucketAction {
    /// Make a bucket equal a snapshot: server-side copies of exactly the recorded versions
    /// (unless the target holds identical content); with -t, print them instead
    Restore {
        /// The bucket set (`bucket/NAME` or NAME)
        set: String,
        /// The snapshot current at TIME (run id, RFC 3339, or `YYYY-MM-DD[ HH:MM]` UTC);
        /// default: the latest
        #[arg(long, value_name = "TIME")]
        at: Option<String>,
        /// Restore into this bucket and prefix instead of the master
        #[arg(long, value_name = "s3://BUCKET[/PREFIX]")]
        to: Option<String>,
        /// Only keys starting with P (as the snapshot records them)
        #[arg(long, value_name = "P", default_value = "")]
        prefix: String,
        /// Also delete keys the target holds that did not exist at that point in time
        #[arg(long)]
        delete: bool,
        #[command(flatten)]
        decrypt: DecryptArgs,
        #[command(flatten)]
        host: HostArg,
    },
    /// Keys added, removed and changed between two snapshots
    Diff {
        set: String,
        /// The earlier snapshot (run id or time)
        run1: String,
        /// The later snapshot (run id or time)
        run2: String,
        #[command(flatten)]
        decrypt: DecryptArgs,
        #[command(flatten)]
        host: HostArg,
    },
}

#[derive(Debug, Subcommand)]
pub enum QuiltAction {
    /// Create a new quilt secret (64 hex digits, mode 0600) and print its fingerprint; never
    /// replaces an existing file. Install the same file on every host that shares the quilt
    Init {
        /// Where to write it (default: the configuration's QuiltKeyFile; given, no
        /// configuration is read)
        #[arg(long, value_name = "PATH")]
        key_file: Option<PathBuf>,
    },
    /// Delete the content objects that no manifest of any host references and that are older
    /// than the grace period (with -t: only show them); an unreadable manifest stops it before
    /// any deletion
    Gc {
        /// Keep unreferenced content younger than this (a run still uploading has no manifest
        /// yet): 30s, 15m, 36h, 7d
        #[arg(long, value_name = "DURATION", default_value = "7d", value_parser = crate::config::values::span)]
        grace: chrono::Duration,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Parse, resolve and print the configuration
    Check,
}
