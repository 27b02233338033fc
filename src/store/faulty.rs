//! A fault-injecting wrapper around any store, for tests: each call passes through the rules
//! in force, is recorded, and either reaches the inner store untouched or meets its fault.
//!
//! A [`Rule`] names an operation, optionally a key prefix and an object offset a read must
//! cover, which of its matching calls it hits (the Nth, the first N, or all), and the fault:
//! an error before the inner store is called (transient: worth retrying; permanent: not), a
//! lost reply (the inner operation is performed, then a transient error comes back, as when
//! the network drops the answer), or for reads a damaged body (cut short, or one bit flipped).
//! A rule may also carry no fault ([`Rule::pass`]) and a hook ([`Rule::then`]): a closure run
//! once each call it hits is done, before its answer returns — what another host does at that
//! moment (it acts on the inner store through what it captured, e.g. a `MemoryStore`'s sync
//! helpers). Rules are set at construction and while the test runs, through the [`Faults`]
//! handle, which also holds the record of every call made.

use std::fmt;
use std::future::Future;
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};

use super::{
    DynStore, ErrorKind, ObjectInfo, ObjectLock, PartReceipt, PendingUpload, Result, RetrievalTier,
    Store, StoreError, UploadOptions,
};

/// A store operation, as rules and the call record name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Put,
    Get,
    GetRange,
    Head,
    List,
    Delete,
    CreateUpload,
    UploadPart,
    CompleteUpload,
    AbortUpload,
    ListUploads,
    ServerTime,
    Restore,
    Retain,
    LocksEnabled,
}

impl Op {
    /// Every operation, for tests that go through them all.
    pub const ALL: [Op; 15] = [
        Op::Put,
        Op::Get,
        Op::GetRange,
        Op::Head,
        Op::List,
        Op::Delete,
        Op::CreateUpload,
        Op::UploadPart,
        Op::CompleteUpload,
        Op::AbortUpload,
        Op::ListUploads,
        Op::ServerTime,
        Op::Restore,
        Op::Retain,
        Op::LocksEnabled,
    ];

    fn name(self) -> &'static str {
        match self {
            Op::Put => "put",
            Op::Get | Op::GetRange => "get",
            Op::Head => "head",
            Op::List => "list",
            Op::Delete => "delete",
            Op::CreateUpload => "create upload",
            Op::UploadPart => "upload part",
            Op::CompleteUpload => "complete upload",
            Op::AbortUpload => "abort upload",
            Op::ListUploads => "list uploads",
            Op::ServerTime => "server time",
            Op::Restore => "restore",
            Op::Retain => "retain",
            Op::LocksEnabled => "locks enabled",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Fails with [`ErrorKind::Transient`] without calling the inner store.
    Transient,
    /// Fails with [`ErrorKind::Other`] without calling the inner store.
    Permanent,
    /// Fails with [`ErrorKind::NotImplemented`] without calling the inner store: a server
    /// that lacks the call (HTTP 501).
    NotImplemented,
    /// Fails with [`ErrorKind::Denied`] without calling the inner store (HTTP 403).
    Denied,
    /// Calls the inner store, then fails with [`ErrorKind::Transient`] whatever it did.
    LostReply,
    /// Reads only: the body comes back without its second half (at least one byte short).
    Truncate,
    /// Reads only: the lowest bit of one byte is flipped — the byte at the rule's
    /// [`Rule::covering`] offset, or else the body's first.
    FlipBit,
}

/// Which of a rule's matching calls it hits (counted from 1, per rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    Always,
    Nth(u32),
    FirstN(u32),
}

/// What a rule runs after each call it hits ([`Rule::then`]), given that call.
#[derive(Clone)]
struct Hook(Arc<dyn Fn(&Call) + Send + Sync>);

impl fmt::Debug for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Hook")
    }
}

#[derive(Debug, Clone)]
pub struct Rule {
    op: Op,
    /// `None`: the calls hit pass untouched (a rule for its hook).
    fault: Option<Fault>,
    then: Option<Hook>,
    when: When,
    key_prefix: Option<String>,
    covering: Option<u64>,
    /// Matching calls seen so far.
    seen: u32,
}

impl Rule {
    /// `fault` on every call of `op` (narrow it with the methods below).
    pub fn new(op: Op, fault: Fault) -> Self {
        let is_read = matches!(op, Op::Get | Op::GetRange);
        assert!(
            is_read || !matches!(fault, Fault::Truncate | Fault::FlipBit),
            "only a read has a body to damage, not {op:?}"
        );
        Rule {
            op,
            fault: Some(fault),
            then: None,
            when: When::Always,
            key_prefix: None,
            covering: None,
            seen: 0,
        }
    }

    /// No fault on the calls of `op`: they pass untouched (give the rule a [`Rule::then`]).
    pub fn pass(op: Op) -> Self {
        Rule {
            fault: None,
            ..Rule::new(op, Fault::Transient)
        }
    }

    /// Runs `hook` after each call this rule hits, once the call is done (its inner call
    /// performed or its fault met) and before its answer returns to the caller.
    pub fn then(mut self, hook: impl Fn(&Call) + Send + Sync + 'static) -> Self {
        self.then = Some(Hook(Arc::new(hook)));
        self
    }

    /// Only the `n`th matching call (from 1).
    pub fn nth(mut self, n: u32) -> Self {
        self.when = When::Nth(n);
        self
    }

    /// Only the first `n` matching calls.
    pub fn first(mut self, n: u32) -> Self {
        self.when = When::FirstN(n);
        self
    }

    /// Only calls whose key (or listing prefix) starts with `prefix`.
    pub fn key(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = Some(prefix.into());
        self
    }

    /// Only reads whose bytes include the object's byte `offset` (and a flip hits that byte).
    pub fn covering(mut self, offset: u64) -> Self {
        self.covering = Some(offset);
        self
    }

    fn matches(&self, call: &Call) -> bool {
        let range = call.range.clone().unwrap_or(0..u64::MAX);
        call.op == self.op
            && self
                .key_prefix
                .as_ref()
                .is_none_or(|p| call.key.starts_with(p))
            && self.covering.is_none_or(|at| range.contains(&at))
    }

    /// Counts `call` if it matches; whether this rule hits it.
    fn hits(&mut self, call: &Call) -> bool {
        if !self.matches(call) {
            return false;
        }
        self.seen += 1;
        match self.when {
            When::Always => true,
            When::Nth(n) => self.seen == n,
            When::FirstN(n) => self.seen <= n,
        }
    }
}

/// One call that reached the wrapper, and the fault it met.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub op: Op,
    /// The key; for a listing, its prefix; empty for `server_time`.
    pub key: String,
    /// The part number of an `upload_part`.
    pub part: Option<u32>,
    /// The bytes asked for by a `get_range`.
    pub range: Option<Range<u64>>,
    pub fault: Option<Fault>,
}

#[derive(Debug, Default)]
struct Shared {
    rules: Vec<Rule>,
    calls: Vec<Call>,
}

/// The handle on a [`FaultyStore`]'s rules and call record; clones share them.
#[derive(Debug, Clone, Default)]
pub struct Faults(Arc<Mutex<Shared>>);

impl Faults {
    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a rule; when several with a fault hit one call, the first added wins (all count
    /// the call, and the hooks of all run).
    pub fn add(&self, rule: Rule) {
        self.lock().rules.push(rule);
    }

    /// Removes every rule; calls pass untouched from now on.
    pub fn clear(&self) {
        self.lock().rules.clear();
    }

    /// Every call so far, in the order they reached the wrapper.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// The calls of `op` so far.
    pub fn calls_of(&self, op: Op) -> Vec<Call> {
        self.lock()
            .calls
            .iter()
            .filter(|c| c.op == op)
            .cloned()
            .collect()
    }

    /// How many calls of `op` there were.
    pub fn count(&self, op: Op) -> usize {
        self.lock().calls.iter().filter(|c| c.op == op).count()
    }

    /// Forgets the calls recorded so far (the rules' counts stay).
    pub fn forget_calls(&self) {
        self.lock().calls.clear();
    }

    /// Records `call`; the fault the rules give it, with the offset of the rule that gave it,
    /// and the hooks to run once it is done.
    fn decide(&self, call: &mut Call) -> (Option<(Fault, Option<u64>)>, Vec<Hook>) {
        let mut shared = self.lock();
        let (mut hit, mut hooks) = (None, Vec::new());
        for rule in &mut shared.rules {
            if rule.hits(call) {
                if let (Some(fault), None) = (rule.fault, hit) {
                    hit = Some((fault, rule.covering));
                }
                hooks.extend(rule.then.clone());
            }
        }
        call.fault = hit.map(|(fault, _)| fault);
        shared.calls.push(call.clone());
        (hit, hooks)
    }
}

/// Any store, with faults injected by the rules of its [`Faults`] handle.
pub struct FaultyStore {
    inner: DynStore,
    faults: Faults,
}

impl fmt::Debug for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultyStore")
            .field("inner", &self.inner)
            .finish()
    }
}

impl FaultyStore {
    /// `inner` with the given rules in force.
    pub fn new(inner: DynStore, rules: impl IntoIterator<Item = Rule>) -> Self {
        let faults = Faults::default();
        for rule in rules {
            faults.add(rule);
        }
        FaultyStore { inner, faults }
    }

    /// The handle to change the rules and read the calls while the store is in use.
    pub fn faults(&self) -> Faults {
        self.faults.clone()
    }

    fn error(&self, op: Op, key: &str, kind: ErrorKind, message: &str) -> StoreError {
        StoreError::new(kind, op.name(), self.inner.locate(key), message)
    }

    /// Runs `inner` for `call` unless an error fault stops it.
    async fn run<T>(&self, mut call: Call, inner: impl Future<Output = Result<T>>) -> Result<T> {
        let (hit, hooks) = self.faults.decide(&mut call);
        let result = self
            .apply(call.op, &call.key, hit.map(|(fault, _)| fault), inner)
            .await;
        done(&call, hooks);
        result
    }

    async fn apply<T>(
        &self,
        op: Op,
        key: &str,
        fault: Option<Fault>,
        inner: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        match fault {
            None => inner.await,
            Some(Fault::Transient) => {
                Err(self.error(op, key, ErrorKind::Transient, "injected transient fault"))
            }
            Some(Fault::Permanent) => {
                Err(self.error(op, key, ErrorKind::Other, "injected permanent fault"))
            }
            Some(Fault::NotImplemented) => Err(self.error(
                op,
                key,
                ErrorKind::NotImplemented,
                "NotImplemented (HTTP 501): injected",
            )),
            Some(Fault::Denied) => Err(self.error(
                op,
                key,
                ErrorKind::Denied,
                "AccessDenied (HTTP 403): injected",
            )),
            Some(Fault::LostReply) => {
                inner.await?;
                Err(self.error(op, key, ErrorKind::Transient, "injected lost reply"))
            }
            Some(Fault::Truncate | Fault::FlipBit) => unreachable!("rules refuse it"),
        }
    }

    /// A read of bytes `start..` of `key`, its body damaged if a rule says so.
    async fn read(
        &self,
        mut call: Call,
        start: u64,
        inner: impl Future<Output = Result<Bytes>>,
    ) -> Result<Bytes> {
        let (hit, hooks) = self.faults.decide(&mut call);
        let result = match hit {
            Some((Fault::Truncate, _)) => inner.await.map(|data| data.slice(..data.len() / 2)),
            Some((Fault::FlipBit, at)) => inner.await.map(|data| {
                let mut data = data.to_vec();
                let at = at.unwrap_or(start) - start;
                if let Some(byte) = data.get_mut(at as usize) {
                    *byte ^= 1;
                }
                data.into()
            }),
            other => {
                let fault = other.map(|(f, _)| f);
                self.apply(call.op, &call.key, fault, inner).await
            }
        };
        done(&call, hooks);
        result
    }
}

/// Runs the hooks of the rules that hit `call`, now that it is done.
fn done(call: &Call, hooks: Vec<Hook>) {
    for Hook(hook) in hooks {
        hook(call);
    }
}

fn call(op: Op, key: &str) -> Call {
    Call {
        op,
        key: key.to_string(),
        part: None,
        range: None,
        fault: None,
    }
}

#[async_trait]
impl Store for FaultyStore {
    fn locate(&self, key: &str) -> String {
        self.inner.locate(key)
    }

    fn dry_run(&self) -> bool {
        self.inner.dry_run()
    }

    async fn put_locked(&self, key: &str, data: Bytes, lock: Option<&ObjectLock>) -> Result<()> {
        self.run(call(Op::Put, key), self.inner.put_locked(key, data, lock))
            .await
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        self.read(call(Op::Get, key), 0, self.inner.get(key)).await
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        let c = Call {
            range: Some(range.clone()),
            ..call(Op::GetRange, key)
        };
        self.read(c, range.start, self.inner.get_range(key, range))
            .await
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>> {
        self.run(call(Op::Head, key), self.inner.head(key)).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.run(call(Op::List, prefix), self.inner.list(prefix))
            .await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.run(call(Op::Delete, key), self.inner.delete(key))
            .await
    }

    async fn create_upload(&self, key: &str, options: &UploadOptions) -> Result<String> {
        let inner = self.inner.create_upload(key, options);
        self.run(call(Op::CreateUpload, key), inner).await
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u32,
        data: Bytes,
    ) -> Result<PartReceipt> {
        let c = Call {
            part: Some(number),
            ..call(Op::UploadPart, key)
        };
        self.run(c, self.inner.upload_part(key, upload_id, number, data))
            .await
    }

    async fn complete_upload(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<PartReceipt>,
    ) -> Result<()> {
        let inner = self.inner.complete_upload(key, upload_id, parts);
        self.run(call(Op::CompleteUpload, key), inner).await
    }

    async fn abort_upload(&self, key: &str, upload_id: &str) -> Result<()> {
        let inner = self.inner.abort_upload(key, upload_id);
        self.run(call(Op::AbortUpload, key), inner).await
    }

    async fn list_uploads(&self, prefix: &str) -> Result<Vec<PendingUpload>> {
        let inner = self.inner.list_uploads(prefix);
        self.run(call(Op::ListUploads, prefix), inner).await
    }

    async fn restore(&self, key: &str, days: u32, tier: RetrievalTier) -> Result<()> {
        let inner = self.inner.restore(key, days, tier);
        self.run(call(Op::Restore, key), inner).await
    }

    async fn server_time(&self) -> Result<DateTime<Utc>> {
        self.run(call(Op::ServerTime, ""), self.inner.server_time())
            .await
    }

    async fn retain(&self, key: &str, lock: &ObjectLock) -> Result<()> {
        self.run(call(Op::Retain, key), self.inner.retain(key, lock))
            .await
    }

    async fn locks_enabled(&self) -> Result<bool> {
        self.run(call(Op::LocksEnabled, ""), self.inner.locks_enabled())
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    #[tokio::test]
    async fn rules_hit_their_nth_matching_call_and_can_change_while_running() {
        let store = FaultyStore::new(
            Arc::new(MemoryStore::new()),
            [Rule::new(Op::Put, Fault::Permanent).key("b/").nth(2)],
        );
        let faults = store.faults();
        let put = |key: &'static str| store.put(key, Bytes::from_static(b"x"));
        assert!(put("a/1").await.is_ok(), "another key does not count");
        assert!(put("b/1").await.is_ok());
        let err = put("b/2").await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Other);
        assert!(err.to_string().contains("b/2"), "{err}");
        assert!(put("b/3").await.is_ok(), "only the second");
        faults.add(Rule::new(Op::Head, Fault::LostReply));
        assert_eq!(
            store.head("b/1").await.unwrap_err().kind,
            ErrorKind::Transient
        );
        faults.clear();
        assert!(store.head("b/2").await.unwrap().is_none(), "never stored");
        let record: Vec<(Op, String, Option<Fault>)> = faults
            .calls()
            .into_iter()
            .map(|c| (c.op, c.key, c.fault))
            .collect();
        assert_eq!(
            record,
            vec![
                (Op::Put, "a/1".into(), None),
                (Op::Put, "b/1".into(), None),
                (Op::Put, "b/2".into(), Some(Fault::Permanent)),
                (Op::Put, "b/3".into(), None),
                (Op::Head, "b/1".into(), Some(Fault::LostReply)),
                (Op::Head, "b/2".into(), None),
            ]
        );
    }

    #[tokio::test]
    async fn a_hook_runs_after_the_call_it_hits_and_a_fault_rule_still_wins() {
        let memory = Arc::new(MemoryStore::new());
        let m = memory.clone();
        let store = FaultyStore::new(
            memory.clone(),
            [
                Rule::pass(Op::Head)
                    .key("a/")
                    .nth(2)
                    .then(move |c| m.insert("b/new", c.key.clone().into_bytes(), Utc::now())),
                Rule::new(Op::Head, Fault::LostReply).nth(2),
            ],
        );
        assert!(store.head("a/1").await.unwrap().is_none());
        assert!(memory.object("b/new").is_none(), "not yet");
        let err = store.head("a/2").await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Transient, "the fault rule still hits");
        assert_eq!(memory.object("b/new").as_deref(), Some(&b"a/2"[..]));
        let faults: Vec<Option<Fault>> = store.faults().calls().iter().map(|c| c.fault).collect();
        assert_eq!(faults, [None, Some(Fault::LostReply)]);
    }

    #[tokio::test]
    async fn damaged_reads_are_cut_or_flipped_where_the_rule_says() {
        let memory = MemoryStore::new();
        memory.insert("k", (0..100u8).collect::<Vec<u8>>(), Utc::now());
        let store = FaultyStore::new(
            Arc::new(memory),
            [
                Rule::new(Op::GetRange, Fault::FlipBit).covering(50),
                Rule::new(Op::Get, Fault::Truncate),
            ],
        );
        assert_eq!(
            &store.get_range("k", 0..10).await.unwrap()[..],
            &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
        );
        let flipped = store.get_range("k", 40..60).await.unwrap();
        assert_eq!(flipped[10], 50 ^ 1);
        assert_eq!(
            (40..60u8)
                .zip(flipped.iter())
                .filter(|(a, b)| a != *b)
                .count(),
            1
        );
        assert_eq!(store.get("k").await.unwrap().len(), 50);
    }
}
