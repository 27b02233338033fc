//! The fault-injecting HTTP proxy (scripts/fault-proxy.py) between s3nap and a test's moto
//! server: rules in, events out. See the script for what each action does.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{python, ConfigBuilder, S3Server};

/// How long a test waits for an acknowledgement or an expected event.
const WAIT: Duration = Duration::from_secs(60);

/// A running proxy in front of one moto server. Killed when dropped.
pub struct FaultProxy {
    child: Child,
    stdin: Mutex<ChildStdin>,
    events: Mutex<Receiver<Value>>,
    /// Events read while waiting for something else, in arrival order.
    seen: Mutex<Vec<Value>>,
    seq: Mutex<u64>,
    pub endpoint: String,
}

impl FaultProxy {
    pub fn start(upstream: &S3Server) -> FaultProxy {
        Self::start_with(upstream, &[])
    }

    /// A proxy serving HTTPS at `https://localhost:PORT` with the certificate `cert` (PEM, its
    /// key in `key`); the upstream stays plain HTTP.
    pub fn start_tls(upstream: &S3Server, cert: &Path, key: &Path) -> FaultProxy {
        Self::start_with(
            upstream,
            &[
                "--tls-cert",
                cert.to_str().unwrap(),
                "--tls-key",
                key.to_str().unwrap(),
            ],
        )
    }

    fn start_with(upstream: &S3Server, options: &[&str]) -> FaultProxy {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/fault-proxy.py");
        let mut child = Command::new(python())
            .arg(script)
            .args(options)
            .arg(&upstream.endpoint)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting the fault proxy");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines() {
                let Ok(line) = line else { break };
                let event: Value = serde_json::from_str(&line).expect("a proxy event line");
                if tx.send(event).is_err() {
                    break;
                }
            }
        });
        let first = rx
            .recv_timeout(WAIT)
            .expect("the fault proxy did not start");
        assert_eq!(first["event"], "listening", "{first}");
        FaultProxy {
            endpoint: first["endpoint"].as_str().unwrap().to_string(),
            child,
            stdin: Mutex::new(stdin),
            events: Mutex::new(rx),
            seen: Mutex::new(Vec::new()),
            seq: Mutex::new(0),
        }
    }

    /// Waits for the first event not yet taken for which `want` holds; the others are kept
    /// for [`FaultProxy::hits`]. Panics after `deadline`.
    fn take(&self, deadline: Duration, what: &str, want: impl Fn(&Value) -> bool) -> Value {
        let end = Instant::now() + deadline;
        let mut seen = self.seen.lock().unwrap();
        if let Some(i) = seen.iter().position(&want) {
            return seen.remove(i);
        }
        let events = self.events.lock().unwrap();
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match events.recv_timeout(left) {
                Ok(event) if want(&event) => return event,
                Ok(event) => seen.push(event),
                Err(RecvTimeoutError::Timeout) => {
                    panic!("no {what} from the proxy in {deadline:?}")
                }
                Err(RecvTimeoutError::Disconnected) => panic!("the fault proxy died"),
            }
        }
    }

    fn command(&self, mut cmd: Value) -> Value {
        let seq = {
            let mut seq = self.seq.lock().unwrap();
            *seq += 1;
            *seq
        };
        cmd["seq"] = json!(seq);
        writeln!(self.stdin.lock().unwrap(), "{cmd}").expect("writing to the fault proxy");
        self.take(WAIT, "acknowledgement", |e| {
            e["event"] == "ok" && e["seq"] == seq
        })
    }

    /// Adds a rule (in force when this returns) and returns its id, e.g.
    /// `json!({"method": "PUT", "target": "partNumber=2", "action": "reset"})`.
    pub fn add(&self, rule: Value) -> u64 {
        let ack = self.command(json!({"cmd": "add", "rule": rule}));
        ack["rule"].as_u64().expect("a rule id")
    }

    /// Removes every rule and releases every held request.
    pub fn clear(&self) {
        self.command(json!({"cmd": "clear"}));
    }

    /// Releases the requests held so far.
    pub fn release(&self) {
        self.command(json!({"cmd": "release"}));
    }

    /// Waits until a `hold` or `hold_reply` rule holds a request; returns its event.
    pub fn wait_held(&self, deadline: Duration) -> Value {
        self.take(deadline, "held request", |e| e["event"] == "held")
    }

    /// The rule hits seen so far (waiting briefly for events still in the pipe).
    pub fn hits(&self) -> Vec<Value> {
        // Locked in the order `take` locks them.
        let mut seen = self.seen.lock().unwrap();
        let events = self.events.lock().unwrap();
        while let Ok(event) = events.recv_timeout(Duration::from_millis(200)) {
            seen.push(event);
        }
        seen.iter()
            .filter(|e| e["event"] == "hit")
            .cloned()
            .collect()
    }

    /// The events named `event` seen so far (e.g. `tls_refused`), waiting briefly as
    /// [`FaultProxy::hits`] does.
    pub fn events(&self, event: &str) -> Vec<Value> {
        self.hits();
        let seen = self.seen.lock().unwrap();
        seen.iter()
            .filter(|e| e["event"] == event)
            .cloned()
            .collect()
    }

    /// How many requests the rule with id `rule` has hit.
    pub fn hits_of(&self, rule: u64) -> usize {
        self.hits().iter().filter(|e| e["rule"] == rule).count()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ConfigBuilder {
    /// Like [`ConfigBuilder::s3`], but s3nap reaches `server` through `proxy`.
    pub fn s3_via(self, server: &S3Server, proxy: &FaultProxy, bucket: &str) -> Self {
        let mut this = self.s3(server, bucket);
        if let Some(s3) = this.s3.as_mut() {
            s3.0 = proxy.endpoint.clone();
        }
        this
    }
}
