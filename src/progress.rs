//! Progress on a terminal: bytes read, rate, the current set and the parts in flight, drawn on
//! stderr. Hidden (and free) when stderr is not a terminal, so cron logs stay clean, unless
//! `--progress` asks for it; `--no-progress` hides it everywhere.

use std::io::{self, IsTerminal, Write};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle, TermLike};

#[derive(Clone)]
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// `forced`: `Some(true)` for --progress, `Some(false)` for --no-progress.
    pub fn new(forced: Option<bool>) -> Progress {
        let show = forced.unwrap_or_else(|| std::io::stderr().is_terminal());
        if !show {
            return Progress {
                bar: ProgressBar::hidden(),
            };
        }
        // indicatif draws nothing on a non-terminal; --progress means draw anyway.
        let target = if std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::term_like(Box::new(PlainStderr))
        };
        let bar = ProgressBar::with_draw_target(None, target);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} {msg}: {bytes} read, {binary_bytes_per_sec}, {prefix} parts in flight",
            )
            .expect("static template"),
        );
        bar.set_prefix("0");
        bar.enable_steady_tick(Duration::from_millis(200));
        Progress { bar }
    }

    pub fn start_set(&self, name: &str) {
        self.bar.reset();
        self.bar.set_message(name.to_string());
    }

    pub fn read(&self, bytes: u64) {
        self.bar.inc(bytes);
    }

    pub fn in_flight(&self, parts: usize) {
        self.bar.set_prefix(parts.to_string());
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// stderr as a dumb 80-column terminal: one progress line, redrawn after a carriage return.
#[derive(Debug)]
struct PlainStderr;

impl TermLike for PlainStderr {
    fn width(&self) -> u16 {
        80
    }

    fn move_cursor_up(&self, _: usize) -> io::Result<()> {
        Ok(())
    }

    fn move_cursor_down(&self, _: usize) -> io::Result<()> {
        Ok(())
    }

    fn move_cursor_right(&self, _: usize) -> io::Result<()> {
        Ok(())
    }

    fn move_cursor_left(&self, _: usize) -> io::Result<()> {
        Ok(())
    }

    fn write_line(&self, s: &str) -> io::Result<()> {
        writeln!(io::stderr(), "{s}")
    }

    fn write_str(&self, s: &str) -> io::Result<()> {
        write!(io::stderr(), "{s}")
    }

    fn clear_line(&self) -> io::Result<()> {
        write!(io::stderr(), "\r")
    }

    fn flush(&self) -> io::Result<()> {
        io::stderr().flush()
    }
}
