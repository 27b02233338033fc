//! Servers and programs the dump tests meet for real: a MariaDB server started on a Unix socket
//! in a test's directory (installed by scripts/setup-tests.sh), and running client programs.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `cmd` to its end and returns its stdout; panics with its stderr on failure.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (scripts/setup-tests.sh installs it)"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Writes `text` into `file` of Subversion working copy `wc` (added when new) and commits it,
/// `text` as the message.
pub fn svn_commit(wc: &Path, file: &str, text: &str) {
    let path = wc.join(file);
    let new = !path.exists();
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, text).unwrap();
    if new {
        run(Command::new("svn")
            .args(["add", "-q", "--parents"])
            .arg(&path));
    }
    run(Command::new("svn")
        .args(["commit", "-q", "-m", text])
        .arg(wc));
}

/// Waits up to a minute for `ready`.
pub fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready() {
        assert!(Instant::now() < deadline, "{what} did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A MariaDB server of one test, on a Unix socket; killed when dropped.
pub struct Mariadb {
    child: Child,
    options: PathBuf,
}

impl Mariadb {
    pub fn start(dir: &Path) -> Mariadb {
        let data = dir.join("mysql-data");
        let socket = dir.join("mysql.sock");
        run(Command::new("mariadb-install-db").args([
            "--no-defaults",
            &format!("--datadir={}", data.display()),
            "--user=root",
            "--skip-test-db",
            "--auth-root-authentication-method=socket",
        ]));
        let child = Command::new("mariadbd")
            .args([
                "--no-defaults",
                &format!("--datadir={}", data.display()),
                &format!("--socket={}", socket.display()),
                &format!("--pid-file={}", dir.join("mysql.pid").display()),
                &format!("--log-error={}", dir.join("mysql.err").display()),
                "--skip-networking",
                "--user=root",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mariadbd");
        // Credentials and socket live in the client's own option file, never on a command line.
        let options = dir.join("client.cnf");
        fs::write(
            &options,
            format!("[client]\nsocket={}\nuser=root\n", socket.display()),
        )
        .unwrap();
        let db = Mariadb { child, options };
        wait_for("mariadbd", || {
            Command::new("mariadb-admin")
                .arg(db.defaults())
                .arg("ping")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        });
        db
    }

    /// The client option that names the socket and user (`--defaults-extra-file=…`).
    pub fn defaults(&self) -> String {
        format!("--defaults-extra-file={}", self.options.display())
    }

    /// Runs `sql` through the `mariadb` client; its output, tab-separated without headers.
    pub fn sql(&self, sql: &str) -> String {
        run(Command::new("mariadb").arg(self.defaults()).args([
            "--batch",
            "--skip-column-names",
            "-e",
            sql,
        ]))
    }
}

impl Drop for Mariadb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
