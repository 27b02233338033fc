//! Log output: records of s3nap (and warnings of its libraries) in, lines on stderr, in a log
//! file, in syslog, or wherever a log4rs YAML file sends them.
//!
//! Logging starts on stderr before the configuration is read (so configuration errors are
//! seen), then [`configure`] swaps in what the configuration asks for. stdout never carries log
//! lines: it is reserved for recovered data and listings.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::Mutex;

use log::{LevelFilter, Record};
use log4rs::append::console::{ConsoleAppender, Target};
use log4rs::append::file::FileAppender;
use log4rs::append::Append;
use log4rs::config::{Appender, Config, Deserializers, Logger, RawConfig, Root};
use log4rs::encode::pattern::PatternEncoder;
use log4rs::filter::threshold::ThresholdFilter;
use log4rs::Handle;

use crate::config::{LogSpec, SyslogSpec};

const PATTERN: &str = "{d(%Y-%m-%dT%H:%M:%SZ)(utc)} s3nap {l}: {m}{n}";

fn stderr_appender() -> Box<ConsoleAppender> {
    Box::new(
        ConsoleAppender::builder()
            .target(Target::Stderr)
            .encoder(Box::new(PatternEncoder::new(PATTERN)))
            .build(),
    )
}

/// Our own records at `ours`; the libraries' only when they warn (all of them with -d).
fn levels(debug: bool, ours: LevelFilter) -> (LevelFilter, LevelFilter) {
    if debug {
        (LevelFilter::Debug.max(ours), LevelFilter::Info)
    } else {
        (ours, LevelFilter::Warn)
    }
}

/// Logging to stderr, until the configuration is known.
pub fn init(debug: bool) -> Option<Handle> {
    let (ours, others) = levels(debug, LevelFilter::Info);
    let config = Config::builder()
        .appender(Appender::builder().build("stderr", stderr_appender()))
        .logger(Logger::builder().build("s3nap", ours))
        .build(Root::builder().appender("stderr").build(others))
        .expect("static logging configuration");
    log4rs::init_config(config).ok()
}

/// Applies the configuration's logging directives.
pub fn configure(handle: &Handle, spec: &LogSpec, debug: bool) -> anyhow::Result<()> {
    let config = match &spec.config_file {
        Some(path) => from_yaml(path, debug)?,
        None => from_directives(spec, debug)?,
    };
    handle.set_config(config);
    Ok(())
}

fn from_yaml(path: &Path, debug: bool) -> anyhow::Result<Config> {
    let fail = |e: &dyn std::fmt::Display| anyhow::anyhow!("LogConfig {}: {e}", path.display());
    let text = std::fs::read_to_string(path).map_err(|e| fail(&e))?;
    let raw: RawConfig = serde_yaml::from_str(&text).map_err(|e| fail(&e))?;
    let (appenders, errors) = raw.appenders_lossy(&Deserializers::default());
    if !errors.is_empty() {
        return Err(fail(&errors));
    }
    let root = raw.root();
    let level = if debug {
        LevelFilter::Debug
    } else {
        root.level()
    };
    Config::builder()
        .appenders(appenders)
        .loggers(raw.loggers())
        .build(
            Root::builder()
                .appenders(root.appenders().to_vec())
                .build(level),
        )
        .map_err(|e| fail(&e))
}

/// Creates the log file owner-only (0600; its directory 0700 if missing) before log4rs opens
/// it, which would create it under the umask (0644 usually): log lines name backed-up files.
/// An existing file keeps its mode.
fn create_log_file(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::atomic::create_dirs(dir)?;
    }
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(crate::atomic::FILE_MODE)
        .open(path)
        .map(drop)
}

fn from_directives(spec: &LogSpec, debug: bool) -> anyhow::Result<Config> {
    let (ours, others) = levels(debug, spec.level.unwrap_or(LevelFilter::Info));
    let mut builder = Config::builder();
    let mut names = Vec::new();
    // With a log file, stderr (what cron mails) keeps the warnings and errors.
    let stderr_level = if spec.file.is_some() && !debug {
        LevelFilter::Warn
    } else {
        LevelFilter::Trace
    };
    builder = builder.appender(
        Appender::builder()
            .filter(Box::new(ThresholdFilter::new(stderr_level)))
            .build("stderr", stderr_appender()),
    );
    names.push("stderr");
    if let Some(path) = &spec.file {
        create_log_file(path).map_err(|e| anyhow::anyhow!("LogFile {}: {e}", path.display()))?;
        let file = FileAppender::builder()
            .encoder(Box::new(PatternEncoder::new(PATTERN)))
            .build(path)
            .map_err(|e| anyhow::anyhow!("LogFile {}: {e}", path.display()))?;
        builder = builder.appender(Appender::builder().build("file", Box::new(file)));
        names.push("file");
    }
    if let Some(syslog) = &spec.syslog {
        let appender = SyslogAppender::connect(syslog)
            .map_err(|e| anyhow::anyhow!("Syslog {}: {e}", syslog.socket.display()))?;
        builder = builder.appender(Appender::builder().build("syslog", Box::new(appender)));
        names.push("syslog");
    }
    builder
        .logger(Logger::builder().build("s3nap", ours))
        .build(Root::builder().appenders(names).build(others))
        .map_err(anyhow::Error::from)
}

/// RFC 3164 messages to the local syslog socket (`/dev/log`), as glibc's `syslog(3)` sends them.
#[derive(Debug)]
pub struct SyslogAppender {
    socket: Mutex<UnixDatagram>,
    facility: u8,
    tag: String,
}

impl SyslogAppender {
    pub fn connect(spec: &SyslogSpec) -> io::Result<Self> {
        let socket = UnixDatagram::unbound()?;
        socket.connect(&spec.socket)?;
        Ok(SyslogAppender {
            socket: Mutex::new(socket),
            facility: spec.facility,
            tag: spec.tag.clone(),
        })
    }
}

impl Append for SyslogAppender {
    fn append(&self, record: &Record) -> anyhow::Result<()> {
        let severity = match record.level() {
            log::Level::Error => 3,
            log::Level::Warn => 4,
            log::Level::Info => 6,
            log::Level::Debug | log::Level::Trace => 7,
        };
        let message = format!(
            "<{}>{} {}[{}]: {}",
            u32::from(self.facility) * 8 + severity,
            chrono::Local::now().format("%b %e %H:%M:%S"),
            self.tag,
            std::process::id(),
            record.args()
        );
        self.socket
            .lock()
            .map_err(|_| anyhow::anyhow!("syslog socket poisoned"))?
            .send(message.as_bytes())?;
        Ok(())
    }

    fn flush(&self) {}
}
