//! The operations behind `ApprovalState` and the coordinator. Each is one
//! round trip: a plain command for the legacy flag, one script otherwise.

use parking_lot::Mutex;
use redis::Value;

use crate::config::{Config, Topology};
use crate::conn::{Cancel, Client};
use crate::error::{Error, Result};
use crate::keys::{MrId, MrKeys, DUE_INDEX};
use crate::member::{check_rev, Member};
use crate::scripts::scripts;

/// The longest worker argument list kept for one reset.
pub const MAX_ARGS_BYTES: usize = 64 * 1024;

/// A reset to hand to the worker: the entry id and the worker's args as JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// The entry id, used to put the job back when the enqueue fails.
    pub id: u64,
    /// The worker's arguments, as the caller gave them.
    pub args: String,
}

/// What a script did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The script's verdict: `started`, `kept`, `enqueue`, `run`, `wait`, ...
    pub code: String,
    /// The verdict's number (an entry id, a count).
    pub value: i64,
    /// When a kept reset can run at the latest: the last live sync deadline (ms).
    pub due_at: u64,
    /// Resets the caller must enqueue now, in push order.
    pub jobs: Vec<Job>,
    /// Markers found past their deadline and removed (and resets revived).
    pub expired: Vec<String>,
    /// Set when the sweep's index could not be updated after the step; the
    /// step itself took effect, and lazy recovery still covers the merge request.
    pub index_error: Option<String>,
}

/// The answer to every read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The legacy flag is set.
    pub legacy: bool,
    /// Live sync markers.
    pub live_markers: u64,
    /// Kept resets that still hold the merge request.
    pub pending_resets: u64,
    /// The member asked about is live.
    pub member_live: bool,
    /// Resets that were due and must be enqueued now.
    pub jobs: Vec<Job>,
    /// Markers and resets found expired during the read.
    pub expired: Vec<String>,
    /// See [`Outcome::index_error`].
    pub index_error: Option<String>,
}

impl Status {
    /// A sync or a reset is in progress.
    pub fn syncing(&self) -> bool {
        self.live_markers > 0 || self.pending_resets > 0
    }
}

/// One merge request's whole state, read without writing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The server's time of the read (ms), or the test clock.
    pub now_ms: u64,
    /// TTL of the legacy flag in ms; `None` when the key is absent.
    pub legacy_ttl_ms: Option<i64>,
    /// Markers as stored (`member#instance`) with their deadlines (ms).
    pub markers: Vec<(String, u64)>,
    /// Kept resets: id and the raw entry `state|deadline|dirty|oldrev|newrev|args`.
    pub entries: Vec<(u64, String)>,
}

/// The tracking and coordination operations, over one Redis client.
pub struct Tracker {
    client: Client,
    clock: Mutex<Option<u64>>,
}

impl std::fmt::Debug for Tracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracker")
            .field("client", &self.client)
            .finish()
    }
}

impl Tracker {
    /// Checks `config`; connects on the first call.
    pub fn new(config: Config) -> Result<Tracker> {
        Ok(Tracker {
            client: Client::new(config)?,
            clock: Mutex::new(None),
        })
    }

    /// The Redis client, for plain commands outside the protocol.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Replaces the server clock with a fixed time in ms (the model checker's
    /// virtual clock); `None` returns to the server clock.
    pub fn set_clock(&self, now_ms: Option<u64>) {
        *self.clock.lock() = now_ms;
    }

    /// SET `mr_{id}_cannot_merge` "true" EX `ttl_secs`.
    pub fn legacy_set(&self, cancel: &Cancel, mr: MrId, ttl_secs: u64) -> Result<()> {
        if ttl_secs == 0 {
            return Err(Error::InvalidArgument(
                "ttl must be a positive number of seconds".into(),
            ));
        }
        let mut cmd = redis::cmd("SET");
        cmd.arg(MrKeys::new(mr).legacy)
            .arg("true")
            .arg("EX")
            .arg(ttl_secs);
        self.client.run(cancel, |c| c.query::<()>(cmd))
    }

    /// EXISTS `mr_{id}_cannot_merge`.
    pub fn legacy_exists(&self, cancel: &Cancel, mr: MrId) -> Result<bool> {
        let mut cmd = redis::cmd("EXISTS");
        cmd.arg(MrKeys::new(mr).legacy);
        self.client.run(cancel, |c| c.query::<bool>(cmd))
    }

    /// DEL `mr_{id}_cannot_merge`.
    pub fn legacy_delete(&self, cancel: &Cancel, mr: MrId) -> Result<()> {
        let mut cmd = redis::cmd("DEL");
        cmd.arg(MrKeys::new(mr).legacy);
        self.client.run(cancel, |c| c.query::<()>(cmd))
    }

    /// Every read in one step; hands out resets that were due.
    pub fn status(&self, cancel: &Cancel, mr: MrId, member: Option<&Member>) -> Result<Status> {
        let (text, old, new) = match member {
            Some(m) => {
                let (old, new) = m.revs().unwrap_or(("", ""));
                (m.text(), old.to_string(), new.to_string())
            }
            None => (String::new(), String::new(), String::new()),
        };
        let out = self.eval(cancel, mr, Op::Status, &[&text, &old, &new])?;
        let value = out.values;
        if value.len() != 4 {
            return Err(Error::Protocol(format!(
                "status returned {} values",
                value.len()
            )));
        }
        Ok(Status {
            legacy: value[0] > 0,
            live_markers: value[1] as u64,
            pending_resets: value[2] as u64,
            member_live: value[3] > 0,
            jobs: out.outcome.jobs,
            expired: out.outcome.expired,
            index_error: out.outcome.index_error,
        })
    }

    /// Tracks one sync of `member`.
    pub fn start(&self, cancel: &Cancel, mr: MrId, member: &Member) -> Result<Outcome> {
        self.run(cancel, mr, Op::Start, &[&member.text()])
    }

    /// Ends one tracked instance of `member`; returns the resets now due.
    pub fn finish(&self, cancel: &Cancel, mr: MrId, member: &Member) -> Result<Outcome> {
        self.run(cancel, mr, Op::Finish, &[&member.text()])
    }

    /// Keeps one push's reset: `enqueue` with the job, or `kept` while a sync runs.
    pub fn schedule(
        &self,
        cancel: &Cancel,
        mr: MrId,
        oldrev: Option<&str>,
        newrev: &str,
        args: &str,
    ) -> Result<Outcome> {
        let (old, new) = revs(oldrev, newrev)?;
        check_args(args)?;
        self.run(cancel, mr, Op::Schedule, &[&old, &new, args])
    }

    /// Hands out the kept resets of a merge request whose syncs are over.
    pub fn drain(&self, cancel: &Cancel, mr: MrId) -> Result<Outcome> {
        self.run(cancel, mr, Op::Drain, &[""])
    }

    /// The sweep's drain: as [`Tracker::drain`], and the index entry the sweep
    /// read with score `seen` goes when nothing is left behind it.
    pub fn sweep_drain(&self, cancel: &Cancel, mr: MrId, seen: &str) -> Result<Outcome> {
        self.run(cancel, mr, Op::Drain, &[seen])
    }

    /// Puts back jobs whose enqueue failed, so a later call enqueues them.
    pub fn restore(&self, cancel: &Cancel, mr: MrId, ids: &[u64]) -> Result<Outcome> {
        let ids: Vec<String> = ids.iter().map(u64::to_string).collect();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        self.run(cancel, mr, Op::Restore, &ids)
    }

    /// The reset worker asks to run: `run` (value = entry id) or `wait`.
    pub fn reset_begin(
        &self,
        cancel: &Cancel,
        mr: MrId,
        oldrev: Option<&str>,
        newrev: &str,
        args: &str,
    ) -> Result<Outcome> {
        let (old, new) = revs(oldrev, newrev)?;
        check_args(args)?;
        self.run(cancel, mr, Op::ResetBegin, &[&old, &new, args])
    }

    /// The reset worker's run ended: `done`, `rerun` (with jobs when due), `dropped`, `gone`.
    pub fn reset_finish(
        &self,
        cancel: &Cancel,
        mr: MrId,
        id: u64,
        completed: bool,
    ) -> Result<Outcome> {
        self.reset_finish_run(cancel, mr, id, None, completed)
    }

    /// As [`Tracker::reset_finish`], for the run whose `reset_begin` answered
    /// `token` (its `due_at`): a run that outlived its deadline, after which
    /// the entry was revived and begun again, gets `gone` and changes nothing.
    pub fn reset_finish_run(
        &self,
        cancel: &Cancel,
        mr: MrId,
        id: u64,
        token: Option<u64>,
        completed: bool,
    ) -> Result<Outcome> {
        let ok = if completed { "1" } else { "0" };
        let token = token.map(|t| t.to_string()).unwrap_or_default();
        self.run(cancel, mr, Op::ResetFinish, &[&id.to_string(), ok, &token])
    }

    /// Forgets every marker and kept reset of a merge request.
    pub fn clear(&self, cancel: &Cancel, mr: MrId) -> Result<Outcome> {
        self.run(cancel, mr, Op::Clear, &[])
    }

    /// Reads everything about one merge request without changing it.
    pub fn snapshot(&self, cancel: &Cancel, mr: MrId) -> Result<Snapshot> {
        let raw = self.eval(cancel, mr, Op::Snapshot, &[])?;
        let [ttl, now] = raw.values[..] else {
            return Err(Error::Protocol("snapshot returned a bad value".into()));
        };
        let mut markers = Vec::new();
        let mut flat = raw.outcome.expired.into_iter();
        while let (Some(member), Some(deadline)) = (flat.next(), flat.next()) {
            let deadline = deadline
                .parse::<f64>()
                .map_err(|_| Error::Protocol(format!("marker deadline {deadline:?}")))?;
            markers.push((member, deadline as u64));
        }
        Ok(Snapshot {
            now_ms: now.max(0) as u64,
            legacy_ttl_ms: (ttl != -2).then_some(ttl),
            markers,
            entries: raw
                .outcome
                .jobs
                .into_iter()
                .map(|j| (j.id, j.args))
                .collect(),
        })
    }

    /// Notes that `mr` has kept resets due at `due_ms` (ms), for the sweep.
    pub fn index_add(&self, cancel: &Cancel, mr: MrId, due_ms: u64) -> Result<()> {
        let ttl = self.pending_ttl_ms().to_string();
        let args = ["add", &mr.get().to_string(), &due_ms.to_string(), &ttl];
        self.index(cancel, &args)
    }

    /// After the sweep drained `mr`: forget it if nothing is left and no newer
    /// schedule touched it, or move it to `due_ms`.
    pub fn index_settle(
        &self,
        cancel: &Cancel,
        mr: MrId,
        seen: &str,
        due_ms: Option<u64>,
    ) -> Result<()> {
        let ttl = self.pending_ttl_ms().to_string();
        let due = due_ms.map(|d| d.to_string()).unwrap_or_default();
        let args = ["settle", &mr.get().to_string(), seen, &ttl, &due];
        self.index(cancel, &args)
    }

    /// Up to `limit` merge requests whose kept resets are due, with the score read.
    pub fn index_due(&self, cancel: &Cancel, limit: usize) -> Result<Vec<(MrId, String)>> {
        let now = self.now(cancel)?;
        let mut cmd = redis::cmd("ZRANGEBYSCORE");
        cmd.arg(DUE_INDEX)
            .arg("-inf")
            .arg(now)
            .arg("WITHSCORES")
            .arg("LIMIT")
            .arg(0)
            .arg(limit);
        let rows: Vec<(String, String)> = self.client.run(cancel, |c| c.query(cmd))?;
        let mut due = Vec::with_capacity(rows.len());
        let mut junk = Vec::new();
        for (member, score) in rows {
            match member.parse::<i64>().ok().and_then(|id| MrId::new(id).ok()) {
                Some(id) => due.push((id, score)),
                None => junk.push(member),
            }
        }
        // A member that is no merge request id must not block the sweep for
        // every other merge request; it is dropped from the index.
        if !junk.is_empty() {
            let mut cmd = redis::cmd("ZREM");
            cmd.arg(DUE_INDEX).arg(&junk);
            self.client.run(cancel, |c| c.query::<i64>(cmd))?;
        }
        Ok(due)
    }

    /// The time the scripts use, in ms.
    pub fn now(&self, cancel: &Cancel) -> Result<u64> {
        if let Some(now) = *self.clock.lock() {
            return Ok(now);
        }
        let (secs, micros): (u64, u64) =
            self.client.run(cancel, |c| c.query(redis::cmd("TIME")))?;
        Ok(secs * 1000 + micros / 1000)
    }

    fn index(&self, cancel: &Cancel, args: &[&str]) -> Result<()> {
        let script = &scripts().index;
        let mut invocation = script.key(DUE_INDEX);
        for arg in args {
            invocation.arg(*arg);
        }
        self.client
            .run(cancel, |c| c.invoke::<i64>(invocation))
            .map(|_| ())
    }

    fn pending_ttl_ms(&self) -> u128 {
        self.client.config().pending_ttl.as_millis()
    }

    fn run(&self, cancel: &Cancel, mr: MrId, op: Op, args: &[&str]) -> Result<Outcome> {
        self.eval(cancel, mr, op, args).map(|r| r.outcome)
    }

    fn eval(&self, cancel: &Cancel, mr: MrId, op: Op, args: &[&str]) -> Result<Raw> {
        let keys = MrKeys::new(mr);
        let config = self.client.config();
        let clock = self.clock.lock().map(|n| n.to_string()).unwrap_or_default();
        let script = op.script();
        let mut invocation = script.prepare_invoke();
        for key in keys.all() {
            invocation.key(key);
        }
        // Outside a Cluster the index shares the server: the script changes it
        // in the same step. On a Cluster it lives in another slot, so the
        // script returns the change and apply_index sends it.
        if !matches!(config.topology, Topology::Cluster(_)) {
            invocation.key(DUE_INDEX);
        }
        invocation
            .arg(clock)
            .arg(config.marker_ttl.as_millis() as u64)
            .arg(config.pending_ttl.as_millis() as u64);
        for arg in args {
            invocation.arg(*arg);
        }
        let value: Value = self.client.run(cancel, |c| c.invoke(invocation))?;
        let mut raw = match value {
            // The status of a merge request with nothing tracked: the legacy flag.
            Value::Int(legacy) if matches!(op, Op::Status) => Raw::idle(legacy),
            value => parse(value)?,
        };
        if let Some(change) = raw.index.take() {
            raw.outcome.index_error = self
                .apply_index(cancel, mr, change)
                .err()
                .map(|e| e.to_string());
        }
        Ok(raw)
    }

    /// Applies a script's index change to the global index, a second round
    /// trip taken only when a merge request starts or stops holding kept resets.
    fn apply_index(&self, cancel: &Cancel, mr: MrId, change: IndexChange) -> Result<()> {
        match change {
            IndexChange::Add(due) => {
                let due = due
                    .parse::<u64>()
                    .map_err(|_| Error::Protocol(format!("index due {due:?}")))?;
                self.index_add(cancel, mr, due)
            }
            IndexChange::Remove(seen) => self.index_settle(cancel, mr, &seen, None),
        }
    }
}

#[derive(Clone, Copy)]
enum Op {
    Status,
    Start,
    Finish,
    Schedule,
    Drain,
    Restore,
    ResetBegin,
    ResetFinish,
    Clear,
    Snapshot,
}

impl Op {
    fn script(self) -> &'static redis::Script {
        let s = scripts();
        match self {
            Op::Status => &s.status,
            Op::Start => &s.start,
            Op::Finish => &s.finish,
            Op::Schedule => &s.schedule,
            Op::Drain => &s.drain,
            Op::Restore => &s.restore,
            Op::ResetBegin => &s.reset_begin,
            Op::ResetFinish => &s.reset_finish,
            Op::Clear => &s.clear,
            Op::Snapshot => &s.snapshot,
        }
    }
}

struct Raw {
    outcome: Outcome,
    values: Vec<i64>,
    index: Option<IndexChange>,
}

impl Raw {
    /// A status read that found no tracking key.
    fn idle(legacy: i64) -> Raw {
        Raw {
            outcome: Outcome {
                code: "status".into(),
                value: legacy,
                due_at: 0,
                jobs: Vec::new(),
                expired: Vec::new(),
                index_error: None,
            },
            values: vec![legacy, 0, 0, 0],
            index: None,
        }
    }
}

/// What a script asks of the sweep's index.
enum IndexChange {
    Add(String),
    Remove(String),
}

fn revs(oldrev: Option<&str>, newrev: &str) -> Result<(String, String)> {
    let old = match oldrev {
        Some(old) => check_rev("oldrev", old)?,
        None => String::new(),
    };
    Ok((old, check_rev("newrev", newrev)?))
}

fn check_args(args: &str) -> Result<()> {
    if args.is_empty() || args.len() > MAX_ARGS_BYTES || args.contains('\0') {
        return Err(Error::InvalidArgument(format!(
            "worker args must be 1 to {MAX_ARGS_BYTES} bytes of JSON without NUL"
        )));
    }
    Ok(())
}

fn parse(value: Value) -> Result<Raw> {
    let bad = |what: &str| Error::Protocol(format!("script reply: {what}"));
    let Value::Array(items) = value else {
        return Err(bad("not an array"));
    };
    let [code, val, due, jobs, expired, index]: [Value; 6] =
        items.try_into().map_err(|_| bad("not six items"))?;
    let code = text(code).ok_or_else(|| bad("code"))?;
    let values = match val {
        Value::Int(n) => vec![n],
        Value::Array(items) => items
            .into_iter()
            .map(|v| int(v).ok_or_else(|| bad("value")))
            .collect::<Result<_>>()?,
        _ => return Err(bad("value")),
    };
    let due_at = int(due).ok_or_else(|| bad("due"))?.max(0) as u64;
    let Value::Array(jobs) = jobs else {
        return Err(bad("jobs"));
    };
    let mut parsed = Vec::with_capacity(jobs.len() / 2);
    let mut it = jobs.into_iter();
    while let (Some(id), Some(args)) = (it.next(), it.next()) {
        let id = int(id).ok_or_else(|| bad("job id"))? as u64;
        let args = text(args).ok_or_else(|| bad("job args"))?;
        parsed.push(Job { id, args });
    }
    let Value::Array(expired) = expired else {
        return Err(bad("expired"));
    };
    let expired = expired.into_iter().filter_map(text).collect();
    let Value::Array(index) = index else {
        return Err(bad("index"));
    };
    let mut index = index.into_iter().filter_map(text);
    let index = match (index.next().as_deref(), index.next()) {
        (Some("add"), Some(due)) => Some(IndexChange::Add(due)),
        (Some("del"), Some(seen)) => Some(IndexChange::Remove(seen)),
        (None, None) => None,
        _ => return Err(bad("index change")),
    };
    Ok(Raw {
        outcome: Outcome {
            code,
            value: values.first().copied().unwrap_or(0),
            due_at,
            jobs: parsed,
            expired,
            index_error: None,
        },
        values,
        index,
    })
}

fn int(value: Value) -> Option<i64> {
    match value {
        Value::Int(n) => Some(n),
        Value::BulkString(b) => std::str::from_utf8(&b).ok()?.parse().ok(),
        _ => None,
    }
}

fn text(value: Value) -> Option<String> {
    match value {
        Value::BulkString(b) => String::from_utf8(b).ok(),
        Value::SimpleString(s) => Some(s),
        _ => None,
    }
}
