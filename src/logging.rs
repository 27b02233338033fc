//! Log output: one timestamped line per event on stderr (stdout carries recovered data).

use log::LevelFilter;
use log4rs::append::console::{ConsoleAppender, Target};
use log4rs::config::{Appender, Config, Logger, Root};
use log4rs::encode::pattern::PatternEncoder;

pub fn init(debug: bool) {
    let stderr = ConsoleAppender::builder()
        .target(Target::Stderr)
        .encoder(Box::new(PatternEncoder::new(
            "{d(%Y-%m-%dT%H:%M:%SZ)(utc)} s3nap {l}: {m}{n}",
        )))
        .build();
    let (ours, others) = if debug {
        (LevelFilter::Debug, LevelFilter::Info)
    } else {
        // The SDK's and other libraries' chatter only when it is a warning.
        (LevelFilter::Info, LevelFilter::Warn)
    };
    let config = Config::builder()
        .appender(Appender::builder().build("stderr", Box::new(stderr)))
        .logger(Logger::builder().build("s3nap", ours))
        .build(Root::builder().appender("stderr").build(others))
        .expect("static logging configuration");
    let _ = log4rs::init_config(config);
}
