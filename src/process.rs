//! Child processes: bytes in on the child's stdin (none, or a `Read` a thread copies in), the
//! child's output out as a `Read` whose end is reported only once the exit status has been
//! checked, so a failing dump or gpg can never pass for a complete stream.
//!
//! The one way s3nap runs a program whose output it reads (dump programs, `svnlook`, `gpg
//! --export` and `gpg --decrypt`, the NotifyCommand), after ripgrep's `CommandReader`: stderr
//! is drained on a thread, so a chatty child never blocks on a full pipe, and its last lines
//! go into the error; a non-zero exit or a signal is an `io::Error` naming the program; a
//! reader dropped before the end kills and reaps its child. [`ChildWriter`] is the other
//! direction, a program s3nap writes into (`recover --restore`).
//!
//! Errors name a program only by the name its caller gives, never by its arguments: those may
//! hold passwords or tokens.
//!
//! [`run_to_end`] runs a program whose output is only logged (a set's `Before`/`After`), with a
//! deadline; [`set_priority`] sets this process's CPU and I/O priority (`Nice`, `IoNice`), which
//! every child started afterwards inherits; [`widen_pipe`] gives an output pipe (`recover |
//! tar -x`, a restore command's stdin) a larger buffer.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Lines of stderr kept for the error message (and the manifest of a dump).
pub const TAIL_LINES: usize = 20;
/// Bytes of stderr kept at the most, whatever the length of its lines.
const TAIL_BYTES: usize = 16 * 1024;

/// How long a child whose reader was dropped early gets to end on its own once its output is
/// closed, and then after SIGTERM, before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(30);
const TERM_GRACE: Duration = Duration::from_secs(5);

/// What a child reads on stdin.
pub enum Input {
    /// Nothing: stdin is `/dev/null`.
    Closed,
    /// Copied in by a thread, then closed. A child that stops reading early is no error here:
    /// its exit status tells whether that was a failure.
    Feed(Box<dyn Read + Send>),
}

/// How a child ended.
#[derive(Debug)]
pub struct Exit {
    pub status: ExitStatus,
    /// The last lines of its stderr (at most [`TAIL_LINES`], and a few KiB).
    pub stderr: Vec<String>,
    /// Its whole stdout, when the data came on another descriptor
    /// ([`ChildReader::spawn_descriptor`]); empty otherwise.
    pub stdout: Vec<u8>,
}

impl Exit {
    /// `Ok` for exit status 0; otherwise the error saying how `name` failed and what it said.
    pub fn check(&self, name: &str) -> io::Result<()> {
        if self.status.success() {
            return Ok(());
        }
        let how = match (self.status.code(), self.status.signal()) {
            (Some(code), _) => format!("exited with status {code}"),
            (None, Some(sig)) => format!("was killed by signal {sig}"),
            _ => "failed".to_string(),
        };
        Err(io::Error::other(format!(
            "{name} {how}; {}",
            self.stderr_text()
        )))
    }

    /// The stderr tail as one line, for messages.
    pub fn stderr_text(&self) -> String {
        if self.stderr.is_empty() {
            "no error output".to_string()
        } else {
            format!("its last error output: {}", self.stderr.join(" | "))
        }
    }
}

/// A running child's output as a `Read`. At the end of the output it waits for the child: the
/// end is `Ok(0)` only after exit status 0 (and after its input was fed without error).
pub struct ChildReader {
    name: String,
    child: Option<Child>,
    data: Box<dyn Read + Send>,
    stdout: Option<JoinHandle<Vec<u8>>>,
    stderr: Option<JoinHandle<Vec<String>>>,
    feeder: Option<JoinHandle<io::Result<()>>>,
    exit: Option<Exit>,
    /// Why the end was an error, repeated to any later read.
    failed: Option<(io::ErrorKind, String)>,
}

impl ChildReader {
    /// Runs `cmd` with `input` on stdin, reading its stdout. `name` is how errors call it.
    pub fn spawn(mut cmd: Command, name: impl Into<String>, input: Input) -> io::Result<Self> {
        let name = name.into();
        cmd.stdout(Stdio::piped());
        let mut child = start(&mut cmd, &name, &input)?;
        let data = Box::new(child.stdout.take().expect("piped"));
        Ok(Self::wrap(name, child, data, None, input))
    }

    /// s3-sysbackup's snapshotter protocol: the data comes on a pipe whose descriptor number
    /// is appended as the last argument; stdout, the run's description, is kept whole in
    /// [`Exit::stdout`].
    ///
    /// The pipe is the child's descriptor 3, whatever number it has here: a `sh` script can
    /// only name descriptors 0-9 (`printf … >&"$1"`), and this process may have many open.
    /// Both ends are close-on-exec here, so no other child started meanwhile holds the write
    /// end open (the data would never end).
    pub fn spawn_descriptor(
        mut cmd: Command,
        name: impl Into<String>,
        input: Input,
    ) -> io::Result<Self> {
        use std::os::unix::process::CommandExt;
        const CHILD_FD: i32 = 3;
        let name = name.into();
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let write_fd = write.as_raw_fd();
        cmd.arg(CHILD_FD.to_string()).stdout(Stdio::piped());
        // SAFETY: between fork and exec only dup2 and fcntl, both async-signal-safe, on
        // descriptors this process owns until the child has started.
        unsafe {
            cmd.pre_exec(move || {
                if write_fd == CHILD_FD {
                    // dup2 onto itself would keep close-on-exec.
                    let flags = libc::fcntl(CHILD_FD, libc::F_GETFD);
                    if flags < 0
                        || libc::fcntl(CHILD_FD, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0
                    {
                        return Err(io::Error::last_os_error());
                    }
                } else if libc::dup2(write_fd, CHILD_FD) < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = start(&mut cmd, &name, &input)?;
        // Only the child may hold the write end now, or the data never ends.
        drop(write);
        let mut stdout = child.stdout.take().expect("piped");
        let description = std::thread::spawn(move || {
            let mut all = Vec::new();
            let _ = stdout.read_to_end(&mut all);
            all
        });
        let data = Box::new(std::fs::File::from(read));
        Ok(Self::wrap(name, child, data, Some(description), input))
    }

    fn wrap(
        name: String,
        mut child: Child,
        data: Box<dyn Read + Send>,
        stdout: Option<JoinHandle<Vec<u8>>>,
        input: Input,
    ) -> Self {
        let stderr = child.stderr.take().expect("piped");
        let feeder = match input {
            Input::Closed => None,
            Input::Feed(source) => Some(feed(source, child.stdin.take().expect("piped"))),
        };
        ChildReader {
            name,
            child: Some(child),
            data,
            stdout,
            stderr: Some(std::thread::spawn(move || tail(stderr))),
            feeder,
            exit: None,
            failed: None,
        }
    }

    /// How the child ended, once the output has been read to its end.
    pub fn exit(&self) -> Option<&Exit> {
        self.exit.as_ref()
    }

    /// Waits for the child and gives the verdict: the feeding error first (a failing input
    /// explains a failing child), then the exit status.
    fn finish(&mut self) -> io::Result<()> {
        if let Some((kind, message)) = &self.failed {
            return Err(io::Error::new(*kind, message.clone()));
        }
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let status = child.wait()?;
        let stderr = joined(self.stderr.take());
        let stdout = joined(self.stdout.take());
        let exit = Exit {
            status,
            stderr,
            stdout,
        };
        let verdict = match self.feeder.take().map(|h| h.join()) {
            Some(Ok(Err(e))) => Err(e),
            Some(Err(_)) => Err(io::Error::other(format!(
                "{}: input thread panicked",
                self.name
            ))),
            _ => exit.check(&self.name),
        };
        self.exit = Some(exit);
        if let Err(e) = &verdict {
            self.failed = Some((e.kind(), e.to_string()));
        }
        verdict
    }
}

impl Read for ChildReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.data.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.finish()?;
        }
        Ok(n)
    }
}

impl Drop for ChildReader {
    fn drop(&mut self) {
        // Dropped before the end (the reader's consumer failed): no child left running, and
        // none left a zombie. Its output is closed first, so that a program still writing gets
        // EPIPE (or SIGPIPE) and ends as it would under a shell pipe, cleaning up after itself
        // (a snapshotter removes its snapshot); only one that does not end in time is stopped.
        if let Some(mut child) = self.child.take() {
            self.data = Box::new(io::empty());
            stop(&mut child);
        }
    }
}

/// Waits for `child` to end on its own, then sends SIGTERM, then kills it; reaps it.
fn stop(child: &mut Child) {
    if !exits_within(child, STOP_GRACE) {
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        if !exits_within(child, TERM_GRACE) {
            let _ = child.kill();
        }
    }
    let _ = child.wait();
}

fn exits_within(child: &mut Child, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return true,
            Err(_) => return false,
            Ok(None) if Instant::now() >= deadline => return false,
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// The whole stdout of `cmd`, once it exited 0.
pub fn output(cmd: Command, name: impl Into<String>, input: Input) -> io::Result<Vec<u8>> {
    let mut child = ChildReader::spawn(cmd, name, input)?;
    let mut out = Vec::new();
    child.read_to_end(&mut out)?;
    Ok(out)
}

/// A running child's stdin as a `Write`; its stdout and stderr stay the caller's (a restore
/// command talks to the operator). [`ChildWriter::finish`] closes stdin and waits.
pub struct ChildWriter {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl ChildWriter {
    pub fn spawn(mut cmd: Command, name: &str) -> io::Result<Self> {
        cmd.stdin(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot run {name}: {e}")))?;
        let stdin = child.stdin.take();
        // A restore command is fed as `recover`'s stdout is (see `widen_pipe`).
        if let Some(pipe) = &stdin {
            widen_pipe(pipe);
        }
        Ok(ChildWriter { child, stdin })
    }

    /// Closes the child's stdin, so it sees the end of its input, and waits for it.
    pub fn finish(mut self) -> io::Result<ExitStatus> {
        drop(self.stdin.take());
        self.child.wait()
    }
}

impl Write for ChildWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stdin.as_mut().expect("open until finish").write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stdin.as_mut().expect("open until finish").flush()
    }
}

impl Drop for ChildWriter {
    fn drop(&mut self) {
        // Not finished: an error path. Leave no child behind, running or unreaped.
        if self.stdin.take().is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Spawns `cmd` with stderr piped and stdin as `input` says.
fn start(cmd: &mut Command, name: &str, input: &Input) -> io::Result<Child> {
    cmd.stdin(match input {
        Input::Closed => Stdio::null(),
        Input::Feed(_) => Stdio::piped(),
    })
    .stderr(Stdio::piped());
    cmd.spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot run {name}: {e}")))
}

fn feed(mut source: Box<dyn Read + Send>, mut stdin: ChildStdin) -> JoinHandle<io::Result<()>> {
    std::thread::spawn(move || match io::copy(&mut source, &mut stdin) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(e),
    })
}

fn joined<T: Default>(handle: Option<JoinHandle<T>>) -> T {
    handle.and_then(|h| h.join().ok()).unwrap_or_default()
}

/// Reads `from` to its end, keeping the last [`TAIL_LINES`] lines of at most [`TAIL_BYTES`].
fn tail(mut from: impl Read) -> Vec<String> {
    let mut kept = Vec::new();
    let mut cut = false;
    let mut buf = [0u8; 8192];
    loop {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => kept.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
        // Trimmed in batches, not on every read.
        if kept.len() > 2 * TAIL_BYTES {
            kept.drain(..kept.len() - TAIL_BYTES);
            cut = true;
        }
    }
    if kept.len() > TAIL_BYTES {
        kept.drain(..kept.len() - TAIL_BYTES);
        cut = true;
    }
    if cut {
        // The first line kept is only the end of one: drop it, unless it is all there is.
        match kept.iter().position(|&b| b == b'\n') {
            Some(p) if p + 1 < kept.len() => drop(kept.drain(..=p)),
            _ => {}
        }
    }
    let mut all = lines(&kept);
    all.drain(..all.len().saturating_sub(TAIL_LINES));
    all
}

/// `bytes` split into lines at `\n` (no empty last line for a final `\n`), decoded leniently.
pub fn lines(bytes: &[u8]) -> Vec<String> {
    if bytes.is_empty() {
        return Vec::new();
    }
    bytes
        .strip_suffix(b"\n")
        .unwrap_or(bytes)
        .split(|&b| b == b'\n')
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect()
}

/// How long the output of a program that ended may stay open (held by a background process it
/// left behind) before it is no longer waited for.
const OUTPUT_GRACE: Duration = Duration::from_secs(5);

/// Runs `cmd` to its end with stdin closed, keeping the last lines of its stdout
/// ([`Exit::stdout`]) and stderr. Past `deadline` its whole process group (it gets one of its
/// own, so a shell's children go too) gets SIGTERM, then SIGKILL after a few seconds, and the
/// result is a `TimedOut` error. A non-zero exit is not an error here: [`Exit::check`] says so.
pub fn run_to_end(mut cmd: Command, name: &str, deadline: Option<Duration>) -> io::Result<Exit> {
    use std::os::unix::process::CommandExt;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot run {name}: {e}")))?;
    let (tx, rx) = std::sync::mpsc::channel();
    for (which, pipe) in [
        (
            0,
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ),
        (
            1,
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ),
    ] {
        let tx = tx.clone();
        let pipe = pipe.expect("piped");
        std::thread::spawn(move || {
            let _ = tx.send((which, tail(pipe)));
        });
    }
    drop(tx);
    let group = Pid::from_raw(-(child.id() as i32));
    let started = Instant::now();
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if deadline.is_some_and(|d| started.elapsed() >= d) {
            timed_out = true;
            let _ = kill(group, Signal::SIGTERM);
            if !exits_within(&mut child, TERM_GRACE) {
                let _ = kill(group, Signal::SIGKILL);
            }
            break child.wait()?;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut outputs = [Vec::new(), Vec::new()];
    let until = Instant::now() + OUTPUT_GRACE;
    for _ in 0..2 {
        let left = until.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((which, lines)) => outputs[which] = lines,
            Err(_) => break,
        }
    }
    let [stdout, stderr] = outputs;
    let exit = Exit {
        status,
        stderr,
        stdout: stdout.join("\n").into_bytes(),
    };
    if timed_out {
        let limit = deadline.expect("timed out against a deadline");
        return Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "{name} did not end within {limit:?} and was stopped; {}",
                exit.stderr_text()
            ),
        ));
    }
    Ok(exit)
}

/// An I/O scheduling class and level, as ionice(1) and ioprio_set(2) have them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoPriority {
    /// Only when no other program wants the disk.
    Idle,
    /// The default class, level 0 (first) to 7 (last).
    BestEffort(u8),
    /// Before every other class, level 0 to 7 (needs CAP_SYS_ADMIN).
    Realtime(u8),
}

impl IoPriority {
    /// `idle`, `best-effort[:0-7]` or `realtime[:0-7]` (also ionice's numbers 3, 2, 1 and the
    /// names `be`, `rt`).
    pub fn parse(text: &str) -> Result<IoPriority, String> {
        let (class, level) = match text.split_once(':') {
            Some((c, l)) => (c, Some(l)),
            None => (text, None),
        };
        let level = match level {
            None => Ok(4),
            Some(l) => match l.parse::<u8>() {
                Ok(n) if n <= 7 => Ok(n),
                _ => Err(format!("the IoNice level must be 0 to 7, not '{l}'")),
            },
        };
        match class.to_ascii_lowercase().as_str() {
            "idle" | "3" if text.contains(':') => {
                Err(format!("IoNice idle takes no level, not '{text}'"))
            }
            "idle" | "3" => Ok(IoPriority::Idle),
            "best-effort" | "besteffort" | "be" | "2" => level.map(IoPriority::BestEffort),
            "realtime" | "rt" | "1" => level.map(IoPriority::Realtime),
            _ => Err(format!(
                "IoNice must be idle, best-effort[:0-7] or realtime[:0-7], not '{text}'"
            )),
        }
    }

    /// The value ioprio_set(2) takes: the class in the top bits, the level below.
    fn value(self) -> libc::c_int {
        const CLASS_SHIFT: libc::c_int = 13;
        let (class, level) = match self {
            IoPriority::Realtime(l) => (1, l),
            IoPriority::BestEffort(l) => (2, l),
            IoPriority::Idle => (3, 0),
        };
        (class << CLASS_SHIFT) | libc::c_int::from(level)
    }
}

impl std::fmt::Display for IoPriority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IoPriority::Idle => write!(f, "idle"),
            IoPriority::BestEffort(l) => write!(f, "best-effort:{l}"),
            IoPriority::Realtime(l) => write!(f, "realtime:{l}"),
        }
    }
}

/// The buffer [`widen_pipe`] asks for: Linux's default limit for an unprivileged process
/// (`/proc/sys/fs/pipe-max-size`).
const WIDE_PIPE: libc::c_int = 1 << 20;

/// Gives `fd`, when it is a pipe with less, a buffer of 1 MiB (instead of 64 KiB), so that
/// the two sides hand each other a megabyte per wake-up: `s3nap recover | tar -x` spent a
/// tenth of its time on the switches between them. Anything else (a file, a terminal) or a refusal (the
/// user's pipe quota is spent) leaves it as it was; the size is only a speed.
pub fn widen_pipe(fd: impl std::os::fd::AsFd) {
    widen_pipe_to(fd, WIDE_PIPE);
}

fn widen_pipe_to(fd: impl std::os::fd::AsFd, wide: libc::c_int) {
    let fd = fd.as_fd().as_raw_fd();
    // SAFETY: F_GETPIPE_SZ reads and F_SETPIPE_SZ sets the size of the pipe's buffer, nothing
    // else; the descriptor is borrowed, so it stays open during the calls.
    unsafe {
        // Not a pipe (-1), or one made larger already (by the user): left as it is.
        let size = libc::fcntl(fd, libc::F_GETPIPE_SZ);
        if (0..wide).contains(&size) {
            libc::fcntl(fd, libc::F_SETPIPE_SZ, wide);
        }
    }
}

/// Sets the CPU niceness and the I/O priority of every thread of this process; threads and
/// children started afterwards inherit them. (Linux keeps both per thread: setting them for
/// the process id alone would leave the other threads as they were.) Each is set on its own:
/// what cannot be set (a negative niceness without CAP_SYS_NICE) is an error naming the
/// setting, and does not keep the other from being set; what was set stays.
pub fn set_priority(nice: Option<i32>, io: Option<IoPriority>) -> Vec<io::Error> {
    let threads: Vec<libc::id_t> = match std::fs::read_dir("/proc/self/task") {
        Ok(entries) => entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect(),
        // Without /proc, the calling thread (0): the others are started after it.
        Err(_) => vec![0],
    };
    let mut errors = Vec::new();
    if let Some(n) = nice {
        for &tid in &threads {
            // SAFETY: setpriority only reads its arguments.
            if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, n) } != 0 {
                let e = io::Error::last_os_error();
                errors.push(io::Error::new(e.kind(), format!("Nice {n}: {e}")));
                break;
            }
        }
    }
    if let Some(p) = io {
        const IOPRIO_WHO_PROCESS: libc::c_int = 1;
        for &tid in &threads {
            // SAFETY: ioprio_set only reads its arguments.
            let done =
                unsafe { libc::syscall(libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, tid, p.value()) };
            if done != 0 {
                let e = io::Error::last_os_error();
                errors.push(io::Error::new(e.kind(), format!("IoNice {p}: {e}")));
                break;
            }
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::time::{Duration, Instant};

    fn sh(script: &str) -> Command {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", script]);
        cmd
    }

    fn read_all(reader: &mut ChildReader) -> (Vec<u8>, io::Result<usize>) {
        let mut out = Vec::new();
        let result = reader.read_to_end(&mut out);
        (out, result)
    }

    #[test]
    fn a_widened_pipe_holds_a_megabyte_and_a_larger_one_or_a_file_is_left_alone() {
        use std::os::fd::FromRawFd;
        let pipe = || {
            let mut fds = [0; 2];
            // SAFETY: pipe(2) writes two new descriptors into the array, which the OwnedFds
            // then own and close.
            assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
            let [r, w] = fds.map(|fd| unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) });
            (r, w)
        };
        // SAFETY: F_GETPIPE_SZ and F_SETPIPE_SZ only read and set the pipe's size.
        let size =
            |fd: &std::os::fd::OwnedFd| unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETPIPE_SZ) };
        let (_r, w) = pipe();
        assert!(size(&w) < WIDE_PIPE);
        widen_pipe(&w);
        assert_eq!(size(&w), WIDE_PIPE);
        // Made larger before (by the user): not shrunk. (Above 1 MiB needs a privilege, so a
        // smaller width stands in for it.)
        let (_r, w) = pipe();
        widen_pipe_to(&w, 256 << 10);
        widen_pipe_to(&w, 128 << 10);
        assert_eq!(size(&w), 256 << 10);
        let mut file = tempfile::tempfile().unwrap();
        widen_pipe(&file);
        file.write_all(b"still a file").unwrap();
    }

    #[test]
    fn the_end_of_the_output_is_ok_only_after_exit_status_zero() {
        let mut ok = ChildReader::spawn(sh("echo data"), "good", Input::Closed).unwrap();
        let (out, result) = read_all(&mut ok);
        assert_eq!(result.unwrap(), 5);
        assert_eq!(out, b"data\n");
        assert!(ok.exit().unwrap().status.success());

        let script = "echo data; echo first >&2; echo 'disk on fire' >&2; exit 3";
        let mut failing = ChildReader::spawn(sh(script), "dumper", Input::Closed).unwrap();
        let (out, result) = read_all(&mut failing);
        assert_eq!(out, b"data\n", "the output itself is passed on");
        let err = result.unwrap_err().to_string();
        assert_eq!(
            err,
            "dumper exited with status 3; its last error output: first | disk on fire"
        );
        assert_eq!(failing.exit().unwrap().status.code(), Some(3));
        // A reader asked again does not turn the failure into a clean end.
        assert_eq!(failing.read(&mut [0; 8]).unwrap_err().to_string(), err);
    }

    #[test]
    fn a_signal_and_a_missing_program_are_errors_naming_the_program() {
        let mut killed = ChildReader::spawn(sh("kill -9 $$"), "snap", Input::Closed).unwrap();
        let err = read_all(&mut killed).1.unwrap_err().to_string();
        assert_eq!(err, "snap was killed by signal 9; no error output");
        let err = output(Command::new("false"), "false", Input::Closed).unwrap_err();
        assert!(
            err.to_string().starts_with("false exited with status 1"),
            "{err}"
        );
        let missing = Command::new("/nonexistent/dumper");
        let err = output(missing, "the dumper", Input::Closed).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(
            err.to_string().starts_with("cannot run the dumper: "),
            "{err}"
        );
    }

    #[test]
    fn the_stderr_tail_is_bounded_and_a_flood_of_stderr_does_not_block() {
        // 2 MB of stderr before any stdout: without the draining thread the child would
        // block on a full pipe and the read below would never end.
        let script = "i=0; while [ $i -lt 100 ]; do head -c 20000 /dev/zero | tr '\\0' x >&2; \
                      echo >&2; i=$((i+1)); done; echo 'last words' >&2; echo done";
        let mut reader = ChildReader::spawn(sh(script), "chatty", Input::Closed).unwrap();
        let (out, result) = read_all(&mut reader);
        result.unwrap();
        assert_eq!(out, b"done\n");
        let stderr = &reader.exit().unwrap().stderr;
        assert_eq!(stderr.last().unwrap(), "last words");
        assert!(stderr.iter().map(|l| l.len()).sum::<usize>() <= TAIL_BYTES);
        assert!(stderr.len() <= TAIL_LINES);

        let many = "for i in $(seq 1 50); do echo line $i >&2; done; exit 1";
        let err = output(sh(many), "many", Input::Closed).unwrap_err();
        assert!(
            err.to_string()
                .ends_with("its last error output: line 31 | line 32 | line 33 | line 34 | line 35 | line 36 | line 37 | line 38 | line 39 | line 40 | line 41 | line 42 | line 43 | line 44 | line 45 | line 46 | line 47 | line 48 | line 49 | line 50"),
            "{err}"
        );
    }

    #[test]
    fn input_is_fed_from_a_reader_and_its_failure_comes_first() {
        let big: Vec<u8> = (0..3_000_000u32).map(|i| i as u8).collect();
        let out = output(
            Command::new("cat"),
            "cat",
            Input::Feed(Box::new(io::Cursor::new(big.clone()))),
        )
        .unwrap();
        assert_eq!(out, big);

        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "object truncated",
                ))
            }
        }
        // gpg given a cut message fails too, but the cut is the news.
        let cmd = sh("cat >/dev/null; exit 2");
        let err = output(cmd, "gpg", Input::Feed(Box::new(Broken))).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(err.to_string(), "object truncated");

        // A child that stops reading early is judged by its exit status alone.
        let quits = sh("exec <&-; echo fine");
        let endless = Box::new(io::repeat(b'x'));
        assert_eq!(
            output(quits, "quits", Input::Feed(endless)).unwrap(),
            b"fine\n"
        );
    }

    #[test]
    fn data_on_a_descriptor_and_the_description_on_stdout() {
        // With a dozen descriptors open here the pipe's own number has two digits, which a
        // `sh` script could not name.
        let _open: Vec<std::fs::File> = (0..12)
            .map(|_| std::fs::File::open("/dev/null").unwrap())
            .collect();
        let script = "echo \"about this run, on $1\"; printf 'the data' >&\"$1\"";
        let mut cmd = Command::new("sh");
        cmd.args(["-c", script, "snapshotter"]);
        let mut reader = ChildReader::spawn_descriptor(cmd, "snap", Input::Closed).unwrap();
        let (out, result) = read_all(&mut reader);
        result.unwrap();
        assert_eq!(out, b"the data");
        assert_eq!(
            lines(&reader.exit().unwrap().stdout),
            ["about this run, on 3"]
        );
    }

    fn gone(pid: u32) -> bool {
        !Path::new(&format!("/proc/{pid}")).exists()
    }

    #[test]
    fn a_reader_dropped_early_lets_its_child_end_on_its_own() {
        // A program that cleans up when its output goes away (a snapshotter removing its
        // snapshot) must not be killed before it could.
        let dir = tempfile::tempdir().unwrap();
        let mark = dir.path().join("cleaned up");
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(format!(
            "trap '' PIPE; while echo data; do :; done; echo done > '{}'",
            mark.display()
        ));
        let mut reader = ChildReader::spawn(cmd, "snapshotter", Input::Closed).unwrap();
        let pid = reader.child.as_ref().unwrap().id();
        let mut buf = [0u8; 5];
        reader.read_exact(&mut buf).unwrap();
        drop(reader);
        assert!(gone(pid));
        assert!(mark.exists(), "killed before it could clean up");
    }

    #[test]
    fn a_reader_dropped_early_kills_and_reaps_its_child() {
        let mut reader = ChildReader::spawn(Command::new("yes"), "yes", Input::Closed).unwrap();
        let pid = reader.child.as_ref().unwrap().id();
        let mut buf = [0u8; 4];
        reader.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"y\ny\n");
        assert!(!gone(pid));
        drop(reader);
        // Reaped, not a zombie: its /proc entry is gone as soon as drop returns.
        assert!(gone(pid), "yes is still there");

        let feeding = Input::Feed(Box::new(io::repeat(b'z')));
        let cat = ChildReader::spawn(Command::new("cat"), "cat", feeding).unwrap();
        let pid = cat.child.as_ref().unwrap().id();
        let started = Instant::now();
        drop(cat);
        assert!(gone(pid));
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_writer_feeds_stdin_and_gives_the_exit_status() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("restored");
        let cmd = sh(&format!("cat > '{}'", file.display()));
        let mut writer = ChildWriter::spawn(cmd, "restore").unwrap();
        let stdin = writer.stdin.as_ref().unwrap().as_raw_fd();
        // SAFETY: F_GETPIPE_SZ only reads the size of the open pipe's buffer.
        let size = unsafe { libc::fcntl(stdin, libc::F_GETPIPE_SZ) };
        assert_eq!(size, WIDE_PIPE, "the restore command's stdin is widened");
        writer.write_all(b"rows").unwrap();
        assert!(writer.finish().unwrap().success());
        assert_eq!(std::fs::read(&file).unwrap(), b"rows");

        let mut quitter = ChildWriter::spawn(sh("exec <&-; exit 4"), "quitter").unwrap();
        let written = (0..1000).try_for_each(|_| quitter.write_all(&[0; 65536]));
        assert_eq!(written.unwrap_err().kind(), io::ErrorKind::BrokenPipe);
        assert_eq!(quitter.finish().unwrap().code(), Some(4));

        let sleeper = ChildWriter::spawn(Command::new("cat"), "cat").unwrap();
        let pid = sleeper.child.id();
        drop(sleeper);
        assert!(gone(pid));
    }

    #[test]
    fn a_program_run_to_its_end_is_stopped_with_its_children_at_the_deadline() {
        let exit = run_to_end(sh("echo out; echo err >&2; exit 3"), "hook", None).unwrap();
        assert_eq!(exit.status.code(), Some(3));
        assert_eq!(exit.stdout, b"out");
        assert_eq!(exit.stderr, ["err"]);
        assert!(exit.check("hook").unwrap_err().to_string().contains("err"));

        // A shell whose child would outlive it: the whole group is stopped. (Loose bounds: a
        // loaded machine is slow, but never 600 s slow.)
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let script = format!(
            "echo started >&2; sh -c 'echo $$ > {}; exec sleep 600' & wait",
            pid_file.display()
        );
        let started = Instant::now();
        let err = run_to_end(sh(&script), "slow", Some(Duration::from_secs(2))).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(
            err.to_string().starts_with("slow did not end within 2s"),
            "{err}"
        );
        assert!(err.to_string().contains("started"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(20));
        let pid = std::fs::read_to_string(&pid_file).unwrap();
        let stat = format!("/proc/{}/stat", pid.trim());
        // Gone, or a zombie nobody reaped yet (in a container, PID 1 may not reap at all).
        let alive = || {
            std::fs::read_to_string(&stat).is_ok_and(|s| {
                !s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
        };
        let until = Instant::now() + Duration::from_secs(20);
        while alive() {
            assert!(Instant::now() < until, "the shell's child was left running");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    #[test]
    fn io_priorities_parse_as_ionice_names_them() {
        assert_eq!(IoPriority::parse("idle"), Ok(IoPriority::Idle));
        assert_eq!(
            IoPriority::parse("best-effort:7"),
            Ok(IoPriority::BestEffort(7))
        );
        assert_eq!(IoPriority::parse("be"), Ok(IoPriority::BestEffort(4)));
        assert_eq!(IoPriority::parse("Realtime:0"), Ok(IoPriority::Realtime(0)));
        assert!(IoPriority::parse("best-effort:8").is_err());
        assert!(IoPriority::parse("idle:3").is_err());
        assert!(IoPriority::parse("slow").is_err());
        assert_eq!(IoPriority::BestEffort(7).value(), (2 << 13) | 7);
        assert_eq!(IoPriority::Idle.value(), 3 << 13);
    }

    #[test]
    fn lines_split_like_a_line_reader() {
        assert!(lines(b"").is_empty());
        assert_eq!(lines(b"\n"), [""]);
        assert_eq!(lines(b"a\n\nb"), ["a", "", "b"]);
        assert_eq!(lines(b"a\nb\n"), ["a", "b"]);
    }
}
