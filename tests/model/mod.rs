//! An exhaustive interleaving checker for the reset protocol.
//!
//! Every step of the model calls the real `Tracker` operation (the Lua scripts
//! the gem runs) on a real redis-server; the model only decides which step may
//! come next and what the world outside Redis (processes, Sidekiq's queue)
//! looks like. The search is a depth-first walk over every interleaving, with
//! Redis rolled back by DUMP/RESTORE and states already seen pruned.
//!
//! Assumptions the search makes (the protocol's stated environment):
//! - a sync or a reset run that is not killed ends within `marker_ttl`, so the
//!   clock only jumps past the markers of processes that died;
//! - Sidekiq runs a queued job eventually and any number of them at once;
//! - the sweep runs eventually (the final recovery uses only the sweep).

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use approval_sync::{Cancel, Config, Kind, Member, MrId, MrKeys, Outcome, Topology, Tracker};
use redis::Value;

pub const MR: i64 = 42;
const INDEX: &str = "approval_sync:due";
const MARKER_TTL_MS: u64 = 300_000;
const PENDING_TTL_MS: u64 = 3_600_000;
/// The virtual clock at the start; each jump moves it past every live marker.
const T0: u64 = 1_700_000_000_000;
const JUMP: u64 = MARKER_TTL_MS + 1;

/// How schedule and the reset worker behave: the real coordinator, or a
/// deliberately broken variant the checker must catch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// The gem's coordinator: one `schedule` script, `reset_begin` before the work.
    Real,
    /// The seed's check-then-store: `status` reads "any sync live?" in one
    /// round trip, a second one stores the params (or enqueues at once).
    CheckThenStore,
    /// The reset worker runs its work without asking `reset_begin`.
    UncheckedWorker,
}

/// Which faults the search injects, beyond syncs that die between start and finish.
#[derive(Clone, Copy, Debug)]
pub struct Faults {
    /// Reset runs that raise (Sidekiq retries the job), in total per run.
    pub raises: u8,
    /// `perform_async` calls that raise (the jobs are put back), in total per run.
    pub enqueue_failures: u8,
    /// A process may die after a script handed it jobs and before `perform_async`.
    pub crash_before_enqueue: bool,
    /// A reset worker may be SIGKILLed mid-run (Sidekiq's basic fetch loses the job).
    pub worker_kill: bool,
}

impl Faults {
    pub fn claimed() -> Faults {
        Faults {
            raises: 1,
            enqueue_failures: 1,
            crash_before_enqueue: false,
            worker_kill: false,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Proc {
    Idle,
    Started,
    /// Check-then-store only: what the check read.
    Checked(bool),
    Scheduled,
    Done,
    Crashed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Sync {
    NotStarted,
    Running,
    Finished,
    /// Died mid-sync; the rules are half-built and the marker still live.
    CrashedLive,
    /// Died mid-sync and its marker expired.
    CrashedDead,
}

type Batch = Vec<(u8, u64)>;

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Push {
    proc: Proc,
    sync: Sync,
    scheduled: bool,
    /// Completed runs that no code-owner sync overlapped.
    clean: u8,
    /// Jobs a script handed this process, not yet given to `perform_async`.
    batch: Option<Batch>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Worker {
    push: u8,
    entry: u64,
    /// A code-owner sync was active at some point of this run.
    overlapped: bool,
    /// After the run: the jobs reset_finish handed out, not yet enqueued.
    batch: Option<Batch>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Sweep {
    Idle,
    Read {
        seen: String,
    },
    Drained {
        seen: String,
        left: i64,
        batch: Option<Batch>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Model {
    pushes: Vec<Push>,
    /// Sidekiq's queue: one entry per job, by push.
    queue: Vec<u8>,
    workers: Vec<Worker>,
    /// Readers (status calls) holding recovered jobs.
    readers: Vec<Batch>,
    sweep: Sweep,
    raises: u8,
    enqueue_failures: u8,
    epoch: u64,
    /// The batch the last step handed out, before the search decides how
    /// its `perform_async` goes. Not part of the state.
    fresh: Option<Fresh>,
    /// The push whose process just took a step and may die right after it.
    /// A crash is seen by no one, so dying at once stands for dying at any
    /// later point before the process's next step. Not part of the state.
    mortal: Option<usize>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Fresh {
    Push(usize),
    Worker(u8, u64),
    Reader(Batch),
    Sweep,
}

impl Model {
    fn now(&self) -> u64 {
        T0 + self.epoch * JUMP
    }

    fn sync_active(&self) -> bool {
        self.pushes
            .iter()
            .any(|p| matches!(p.sync, Sync::Running | Sync::CrashedLive))
    }

    fn normalise(&mut self) {
        self.queue.sort_unstable();
        self.workers.sort();
        self.readers.sort();
    }
}

/// Where a pending batch lives.
#[derive(Clone, Copy, Debug)]
enum Loc {
    Push(usize),
    Worker(usize),
    Reader(usize),
    Sweep,
}

#[derive(Clone, Debug)]
enum Step {
    Start(usize),
    Schedule(usize),
    Check(usize),
    Store(usize),
    Finish(usize),
    Begin(u8),
    Complete(usize),
    Raise(usize),
    Kill(usize),
    FailEnqueue(Loc),
    Status,
    SweepRead,
    SweepDrain,
    SweepSettle,
    Jump,
}

/// The MR's keys and the sweep index as read after a step.
#[derive(Clone, Debug, Default)]
struct RState {
    markers: Vec<(String, u64)>,
    resets: Vec<(String, String)>,
    due: Vec<(String, String)>,
    dumps: [Option<Vec<u8>>; 3],
    pttls: [i64; 3],
}

#[derive(Debug)]
pub struct Violation {
    pub what: String,
    pub trace: Vec<String>,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "VIOLATION: {}", self.what)?;
        writeln!(f, "trace ({} steps):", self.trace.len())?;
        for (i, s) in self.trace.iter().enumerate() {
            writeln!(f, "  {:>2}. {s}", i + 1)?;
        }
        Ok(())
    }
}

#[derive(Debug, Default, Clone)]
pub struct Stats {
    /// Complete interleavings the explored graph stands for (paths to an end).
    pub interleavings: f64,
    /// Distinct states (Redis + model, canonical).
    pub states: usize,
    /// Steps executed, including those that led to a state already seen.
    pub transitions: u64,
    /// Distinct end states, each followed by expiry and the sweep's recovery.
    pub ends: u64,
    pub elapsed: Duration,
}

pub struct Checker {
    tracker: Tracker,
    cancel: Cancel,
    con: redis::Connection,
    keys: [String; 3],
    n: usize,
    variant: Variant,
    faults: Faults,
    revs: Vec<(String, String, String)>,
    by_args: HashMap<String, u8>,
    /// Canonical state -> interleavings from it to an end.
    seen: HashMap<u128, f64>,
    trace: Vec<String>,
    stats: Stats,
    started: Instant,
}

type Res<T> = Result<T, String>;

fn rev(i: usize) -> String {
    format!("{:07x}{:033x}", 0xabc0000 + i, i)
}

impl Checker {
    pub fn new(url: &str, pushes: usize, variant: Variant, faults: Faults) -> Checker {
        let config = Config {
            topology: Topology::Url(url.to_string()),
            marker_ttl: Duration::from_millis(MARKER_TTL_MS),
            pending_ttl: Duration::from_millis(PENDING_TTL_MS),
            read_timeout: Duration::from_secs(5),
            ..Config::default()
        };
        let tracker = Tracker::new(config).expect("tracker");
        let con = redis::Client::open(url)
            .expect("client")
            .get_connection()
            .expect("connection");
        let k = MrKeys::new(MrId::new(MR).unwrap());
        let revs: Vec<_> = (0..pushes)
            .map(|p| {
                let (old, new) = (rev(p), rev(p + 1));
                let args = format!("[7,9,\"refs/heads/feature\",\"{new}\",\"{old}\"]");
                (old, new, args)
            })
            .collect();
        let by_args = revs
            .iter()
            .enumerate()
            .map(|(i, r)| (r.2.clone(), i as u8))
            .collect();
        Checker {
            tracker,
            cancel: Cancel::new(),
            con,
            keys: [k.markers, k.resets, INDEX.to_string()],
            n: pushes,
            variant,
            faults,
            revs,
            by_args,
            seen: HashMap::new(),
            trace: Vec::new(),
            stats: Stats::default(),
            started: Instant::now(),
        }
    }

    /// Explores every interleaving; the first violation ends the search.
    pub fn run(&mut self) -> Result<Stats, Violation> {
        let started = Instant::now();
        self.started = started;
        let _: () = redis::cmd("FLUSHALL").query(&mut self.con).unwrap();
        self.tracker.set_clock(Some(T0));
        let model = Model {
            pushes: vec![
                Push {
                    proc: Proc::Idle,
                    sync: Sync::NotStarted,
                    scheduled: false,
                    clean: 0,
                    batch: None,
                };
                self.n
            ],
            queue: vec![],
            workers: vec![],
            readers: vec![],
            sweep: Sweep::Idle,
            raises: self.faults.raises,
            enqueue_failures: self.faults.enqueue_failures,
            epoch: 0,
            fresh: None,
            mortal: None,
        };
        let rs = self.read().map_err(|e| self.violation(e))?;
        let key = self.key(&model, &rs);
        let total = self.dfs(&model, &rs, key)?;
        self.stats.interleavings = total;
        self.stats.states = self.seen.len();
        self.stats.elapsed = started.elapsed();
        self.tracker.set_clock(None);
        Ok(self.stats.clone())
    }

    fn violation(&self, what: String) -> Violation {
        Violation {
            what,
            trace: self.trace.clone(),
        }
    }

    fn dfs(&mut self, model: &Model, rs: &RState, key: u128) -> Result<f64, Violation> {
        let steps = self.enabled(model, rs);
        let mut total = 0.0;
        // Quiet: no process has a step left, only recovery could act. Check
        // that expiry and the sweep alone finish the job; then also explore
        // the recovery steps themselves.
        let quiet = steps
            .iter()
            .all(|s| matches!(s, Step::Status | Step::SweepRead | Step::Jump));
        if quiet {
            self.stats.ends += 1;
            self.trace
                .push("-- end: jump past every marker, then sweep and run jobs until quiet".into());
            let r = self.recover(model).map_err(|e| self.violation(e));
            self.trace.pop();
            r?;
            total += 1.0;
            if steps.is_empty() {
                return Ok(total);
            }
            self.restore(rs);
        }
        let mut at_parent = !quiet;
        for step in steps {
            if !at_parent {
                self.restore(rs);
            }
            self.stats.transitions += 1;
            if self.stats.transitions % 200_000 == 0 {
                eprintln!(
                    "interleavings: ... {} transitions, {} states, {:.0?}",
                    self.stats.transitions,
                    self.seen.len(),
                    self.started.elapsed()
                );
            }
            self.tracker.set_clock(Some(model.now()));
            let mut label = format!("{step:?}");
            let out = self.apply(model, rs, &step, &mut label);
            self.trace.push(label);
            let (next, nrs, touched) = match out {
                Ok(x) => x,
                Err(e) => return Err(self.violation(e)),
            };
            let alts = match self.alternatives(next) {
                Ok(alts) => alts,
                Err(e) => return Err(self.violation(e)),
            };
            // Redis holds nrs now; a descent moves it elsewhere.
            let mut at_child = true;
            let mut moved = false;
            for (next, how) in alts {
                if !at_child {
                    self.restore(&nrs);
                }
                at_child = true;
                if !how.is_empty() {
                    self.trace.push(how.to_string());
                }
                if let Err(e) = self.check(&next, &nrs) {
                    return Err(self.violation(e));
                }
                let nkey = self.key(&next, &nrs);
                let sub = match self.seen.get(&nkey) {
                    Some(&n) => n,
                    None => {
                        // Marked before descending: a step that changes
                        // nothing must not recurse forever.
                        self.seen.insert(nkey, 0.0);
                        let n = self.dfs(&next, &nrs, nkey)?;
                        self.seen.insert(nkey, n);
                        at_child = false;
                        moved = true;
                        n
                    }
                };
                if !how.is_empty() {
                    self.trace.pop();
                }
                if nkey != key {
                    total += sub;
                }
            }
            // Redis still holds the parent unless this step wrote or a descent ran.
            at_parent = !touched && !moved;
            self.trace.pop();
        }
        Ok(total)
    }

    fn enabled(&self, m: &Model, rs: &RState) -> Vec<Step> {
        let mut out = Vec::new();
        for (i, p) in m.pushes.iter().enumerate() {
            if p.batch.is_some() {
                out.push(Step::FailEnqueue(Loc::Push(i)));
                continue;
            }
            match p.proc {
                Proc::Idle => out.push(Step::Start(i)),
                Proc::Started => match self.variant {
                    Variant::CheckThenStore => out.push(Step::Check(i)),
                    _ => out.push(Step::Schedule(i)),
                },
                Proc::Checked(_) => out.push(Step::Store(i)),
                Proc::Scheduled => out.push(Step::Finish(i)),
                _ => {}
            }
        }
        let mut queued = m.queue.clone();
        queued.dedup();
        for p in queued {
            out.push(Step::Begin(p));
        }
        for (i, w) in m.workers.iter().enumerate() {
            match &w.batch {
                None => {
                    out.push(Step::Complete(i));
                    if m.raises > 0 {
                        out.push(Step::Raise(i));
                    }
                    if self.faults.worker_kill {
                        out.push(Step::Kill(i));
                    }
                }
                Some(_) => out.push(Step::FailEnqueue(Loc::Worker(i))),
            }
        }
        for i in 0..m.readers.len() {
            out.push(Step::FailEnqueue(Loc::Reader(i)));
        }
        if m.readers.len() < 2 && !rs.resets.is_empty() {
            out.push(Step::Status);
        }
        match &m.sweep {
            Sweep::Idle => {
                // index_due answers scores up to now; nothing else is worth a read.
                let now = m.now() as f64;
                if rs.due.iter().any(|(_, s)| s.parse::<f64>().unwrap() <= now) {
                    out.push(Step::SweepRead);
                }
            }
            Sweep::Read { .. } => out.push(Step::SweepDrain),
            Sweep::Drained { batch: Some(_), .. } => out.push(Step::FailEnqueue(Loc::Sweep)),
            Sweep::Drained { batch: None, .. } => out.push(Step::SweepSettle),
        }
        let crashed_live = m.pushes.iter().any(|p| p.sync == Sync::CrashedLive);
        let running = m.pushes.iter().any(|p| p.sync == Sync::Running);
        let working = m.workers.iter().any(|w| w.batch.is_none());
        // Time jumps past marker_ttl only when nothing that finishes within it
        // is under way: syncs, worker runs, perform_async calls, and queued
        // jobs, which workers begin within it (a job that never begins is a
        // crash the sweep heals).
        let enqueuing = m.pushes.iter().any(|p| p.batch.is_some())
            || m.workers.iter().any(|w| w.batch.is_some())
            || !m.readers.is_empty()
            || matches!(m.sweep, Sweep::Drained { batch: Some(_), .. });
        if crashed_live && !running && !working && !enqueuing && m.queue.is_empty() {
            out.push(Step::Jump);
        }
        out
    }

    fn member(&self, p: usize) -> Member {
        let (old, new, _) = &self.revs[p];
        Member::new(Kind::CodeOwner, Some(old), Some(new)).unwrap()
    }

    fn mr() -> MrId {
        MrId::new(MR).unwrap()
    }

    fn batch(&self, o: &Outcome) -> Res<Batch> {
        o.jobs
            .iter()
            .map(|j| {
                self.by_args
                    .get(&j.args)
                    .map(|&p| (p, j.id))
                    .ok_or_else(|| format!("job with unknown args {:?}", j.args))
            })
            .collect()
    }

    fn idx_err(o: &Outcome) -> Res<()> {
        match &o.index_error {
            Some(e) => Err(format!("index update failed: {e}")),
            None => Ok(()),
        }
    }

    /// Runs one step: the real operation on Redis, then the model's update.
    /// Returns the new model, the Redis state after it, and whether Redis was written.
    fn apply(
        &mut self,
        m: &Model,
        rs: &RState,
        step: &Step,
        label: &mut String,
    ) -> Res<(Model, RState, bool)> {
        let mut m = m.clone();
        let t = &self.tracker;
        let c = &self.cancel;
        let mr = Self::mr();
        let e = |x: approval_sync::Error| x.to_string();
        let mut touched = true;
        let mut note = String::new();
        match *step {
            Step::Start(p) => {
                m.mortal = Some(p);
                let o = t.start(c, mr, &self.member(p)).map_err(e)?;
                Self::idx_err(&o)?;
                m.pushes[p].proc = Proc::Started;
                m.pushes[p].sync = Sync::Running;
                for w in &mut m.workers {
                    if w.batch.is_none() {
                        w.overlapped = true;
                    }
                }
                note = o.code;
            }
            Step::Schedule(p) => {
                m.mortal = Some(p);
                let (old, new, args) = &self.revs[p];
                let o = t.schedule(c, mr, Some(old), new, args).map_err(e)?;
                Self::idx_err(&o)?;
                let b = self.batch(&o)?;
                m.pushes[p].proc = Proc::Scheduled;
                m.pushes[p].scheduled = true;
                if !b.is_empty() {
                    m.pushes[p].batch = Some(b);
                    m.fresh = Some(Fresh::Push(p));
                }
                note = format!("{} jobs={:?}", o.code, m.pushes[p].batch);
            }
            Step::Check(p) => {
                m.mortal = Some(p);
                let s = t.status(c, mr, None).map_err(e)?;
                self.read_status(&mut m, &s)?;
                m.pushes[p].proc = Proc::Checked(s.live_markers > 0);
                note = format!("live_markers={}", s.live_markers);
            }
            Step::Store(p) => {
                m.mortal = Some(p);
                let Proc::Checked(live) = m.pushes[p].proc else {
                    unreachable!()
                };
                m.pushes[p].proc = Proc::Scheduled;
                m.pushes[p].scheduled = true;
                if live {
                    // The seed's store: the params kept for the sync's finish.
                    let (old, new, args) = self.revs[p].clone();
                    let resets = self.keys[1].clone();
                    let id: u64 = redis::cmd("HINCRBY")
                        .arg(&resets)
                        .arg("seq")
                        .arg(1)
                        .query(&mut self.con)
                        .map_err(|x| x.to_string())?;
                    let entry = format!("w|{}|0|{old}|{new}|{args}", m.now() + MARKER_TTL_MS);
                    let _: () = redis::pipe()
                        .cmd("HSET")
                        .arg(&resets)
                        .arg(id)
                        .arg(entry)
                        .ignore()
                        .cmd("PEXPIRE")
                        .arg(&resets)
                        .arg(PENDING_TTL_MS)
                        .ignore()
                        .query(&mut self.con)
                        .map_err(|x| x.to_string())?;
                    note = format!("stored entry {id}");
                } else {
                    self.deliver(&mut m, &[(p as u8, 0)])?;
                    note = "enqueued".into();
                }
            }
            Step::Finish(p) => {
                let o = t.finish(c, mr, &self.member(p)).map_err(e)?;
                Self::idx_err(&o)?;
                let b = self.batch(&o)?;
                m.pushes[p].proc = Proc::Done;
                m.pushes[p].sync = Sync::Finished;
                if !b.is_empty() {
                    m.pushes[p].batch = Some(b);
                    m.fresh = Some(Fresh::Push(p));
                }
                note = format!("{} jobs={:?}", o.code, m.pushes[p].batch);
            }
            Step::Begin(p) => {
                let i = m.queue.iter().position(|&q| q == p).unwrap();
                m.queue.remove(i);
                let active = m.sync_active();
                if self.variant == Variant::UncheckedWorker {
                    touched = false;
                    m.workers.push(Worker {
                        push: p,
                        entry: 0,
                        overlapped: active,
                        batch: None,
                    });
                    note = "run (unchecked)".into();
                } else {
                    let (old, new, args) = &self.revs[p as usize];
                    let o = t.reset_begin(c, mr, Some(old), new, args).map_err(e)?;
                    Self::idx_err(&o)?;
                    note = format!("{} entry={}", o.code, o.value);
                    match o.code.as_str() {
                        "run" => m.workers.push(Worker {
                            push: p,
                            entry: o.value as u64,
                            overlapped: active,
                            batch: None,
                        }),
                        "wait" => {}
                        other => return Err(format!("reset_begin answered {other:?}")),
                    }
                }
                if active && note.starts_with("run") {
                    *label = format!("{step:?} -> {note}");
                    return Err(format!(
                        "push {p}'s reset began while a code-owner sync was active"
                    ));
                }
            }
            Step::Complete(w) => {
                let worker = m.workers[w].clone();
                let code;
                let mut b = vec![];
                if self.variant == Variant::UncheckedWorker {
                    // The work ran first; the bookkeeping comes after it.
                    let (old, new, args) = &self.revs[worker.push as usize];
                    let o = t.reset_begin(c, mr, Some(old), new, args).map_err(e)?;
                    let o = t.reset_finish(c, mr, o.value as u64, true).map_err(e)?;
                    b = self.batch(&o)?;
                    code = "done".to_string();
                } else {
                    let o = t.reset_finish(c, mr, worker.entry, true).map_err(e)?;
                    Self::idx_err(&o)?;
                    b = self.batch(&o)?;
                    code = o.code;
                }
                note = format!("{code} jobs={b:?}");
                *label = format!("{step:?} [push {}] -> {note}", worker.push);
                let push = &mut m.pushes[worker.push as usize];
                if !worker.overlapped {
                    if push.clean > 0 {
                        return Err(format!(
                            "push {}'s reset completed cleanly a second time",
                            worker.push
                        ));
                    }
                    push.clean += 1;
                } else if code == "done" {
                    return Err(format!(
                        "push {}'s reset run overlapped a code-owner sync and completed without a re-run",
                        worker.push
                    ));
                }
                if b.is_empty() {
                    m.workers.remove(w);
                } else {
                    m.workers[w].batch = Some(b);
                    m.fresh = Some(Fresh::Worker(worker.push, worker.entry));
                }
                m.normalise();
                return Ok((m, self.read_if(touched, rs)?, touched));
            }
            Step::Raise(w) => {
                let worker = m.workers.remove(w);
                m.raises -= 1;
                let o = t.reset_finish(c, mr, worker.entry, false).map_err(e)?;
                Self::idx_err(&o)?;
                if !o.jobs.is_empty() {
                    return Err(format!("a raised run handed out jobs: {:?}", o.jobs));
                }
                // Sidekiq's retry: the same job runs again later.
                self.deliver(&mut m, &[(worker.push, worker.entry)])?;
                note = o.code;
                *label = format!("{step:?} [push {}] -> {note}, job retried", worker.push);
                m.normalise();
                return Ok((m, self.read()?, true));
            }
            Step::Kill(w) => {
                touched = false;
                let worker = m.workers.remove(w);
                note = format!("push {} lost its job", worker.push);
            }
            Step::FailEnqueue(loc) => {
                let b = self.take(&mut m, loc);
                let ids: Vec<u64> = b.iter().map(|j| j.1).collect();
                let o = t.restore(c, mr, &ids).map_err(e)?;
                Self::idx_err(&o)?;
                note = format!("perform_async raised for {b:?}; restored {}", o.value);
            }
            Step::Status => {
                let s = t.status(c, mr, None).map_err(e)?;
                note = format!("jobs={:?}", self.read_status(&mut m, &s)?);
                // status writes only when it hands out jobs or revives a
                // reset; otherwise skip the read (checked in small runs).
                if s.jobs.is_empty() && s.expired.is_empty() {
                    touched = false;
                    if self.n <= 2 {
                        let after = self.read()?;
                        if self.key(&m, &after) != self.key(&m, rs) {
                            return Err("status wrote without handing out jobs".into());
                        }
                    }
                }
            }
            Step::SweepRead => {
                let due = t.index_due(c, 100).map_err(e)?;
                touched = false;
                match due.into_iter().find(|(id, _)| id.get() == MR as u64) {
                    Some((_, seen)) => {
                        note = format!("due, score {seen}");
                        m.sweep = Sweep::Read { seen };
                    }
                    None => note = "not due".into(),
                }
            }
            Step::SweepDrain => {
                let Sweep::Read { seen } = m.sweep.clone() else {
                    unreachable!()
                };
                let o = t.sweep_drain(c, mr, &seen).map_err(e)?;
                Self::idx_err(&o)?;
                let b = self.batch(&o)?;
                note = format!("left={} jobs={b:?}", o.value);
                if !b.is_empty() {
                    m.fresh = Some(Fresh::Sweep);
                }
                m.sweep = Sweep::Drained {
                    seen,
                    left: o.value,
                    batch: (!b.is_empty()).then_some(b),
                };
            }
            Step::SweepSettle => {
                // The sweep's drain settled the index itself; this step only
                // ends the sweep's turn (its jobs, if any, were delivered).
                touched = false;
                m.sweep = Sweep::Idle;
            }
            Step::Jump => {
                touched = false;
                m.epoch += 1;
                for p in &mut m.pushes {
                    if p.sync == Sync::CrashedLive {
                        p.sync = Sync::CrashedDead;
                    }
                }
            }
        }
        *label = if note.is_empty() {
            format!("{step:?}")
        } else {
            format!("{step:?} -> {note}")
        };
        m.normalise();
        let nrs = self.read_if(touched, rs)?;
        Ok((m, nrs, touched))
    }

    /// A script that handed out jobs is followed by `perform_async`. Success
    /// only puts jobs in the queue, which nothing else reads but the workers,
    /// so it happens at once; a failure (within budget) leaves the batch
    /// pending until its put-back step; with `crash_before_enqueue` the
    /// process may also die first.
    fn alternatives(&self, mut m: Model) -> Res<Vec<(Model, &'static str)>> {
        let mortal = m.mortal.take();
        let mut out = self.enqueue_alternatives(m)?;
        if let Some(p) = mortal {
            let mut dead: Vec<(Model, &'static str)> = out
                .iter()
                .filter(|(a, _)| a.pushes[p].batch.is_none())
                .map(|(a, how)| {
                    let mut a = a.clone();
                    let push = &mut a.pushes[p];
                    push.proc = Proc::Crashed;
                    if push.sync == Sync::Running {
                        push.sync = Sync::CrashedLive;
                    }
                    let how: &'static str = if how.is_empty() {
                        "  (then the process dies)"
                    } else {
                        "  (perform_async succeeds, then the process dies)"
                    };
                    (a, how)
                })
                .collect();
            out.append(&mut dead);
        }
        Ok(out)
    }

    fn enqueue_alternatives(&self, mut m: Model) -> Res<Vec<(Model, &'static str)>> {
        let Some(fresh) = m.fresh.take() else {
            return Ok(vec![(m, "")]);
        };
        let find = |m: &Model| -> Loc {
            match &fresh {
                Fresh::Push(p) => Loc::Push(*p),
                Fresh::Worker(p, e) => Loc::Worker(
                    m.workers
                        .iter()
                        .position(|w| w.push == *p && w.entry == *e && w.batch.is_some())
                        .unwrap(),
                ),
                Fresh::Reader(b) => Loc::Reader(m.readers.iter().position(|r| r == b).unwrap()),
                Fresh::Sweep => Loc::Sweep,
            }
        };
        let mut out = Vec::new();
        let mut ok = m.clone();
        let loc = find(&ok);
        let b = self.take(&mut ok, loc);
        self.deliver(&mut ok, &b)?;
        ok.normalise();
        out.push((ok, "  (perform_async succeeds)"));
        if m.enqueue_failures > 0 {
            let mut doomed = m.clone();
            doomed.enqueue_failures -= 1;
            out.push((doomed, "  (perform_async will raise)"));
        }
        if self.faults.crash_before_enqueue {
            let mut dead = m.clone();
            let loc = find(&dead);
            self.take(&mut dead, loc);
            match loc {
                Loc::Push(p) => {
                    let push = &mut dead.pushes[p];
                    push.proc = Proc::Crashed;
                    if push.sync == Sync::Running {
                        push.sync = Sync::CrashedLive;
                    }
                }
                Loc::Sweep => dead.sweep = Sweep::Idle,
                _ => {}
            }
            dead.normalise();
            out.push((dead, "  (the process dies before perform_async)"));
        }
        Ok(out)
    }

    /// A reader's lazy recovery: the jobs a status call handed out.
    fn read_status(&self, m: &mut Model, s: &approval_sync::Status) -> Res<Batch> {
        if let Some(err) = &s.index_error {
            return Err(format!("index update failed: {err}"));
        }
        let o = Outcome {
            code: String::new(),
            value: 0,
            due_at: 0,
            jobs: s.jobs.clone(),
            expired: vec![],
            index_error: None,
        };
        let b = self.batch(&o)?;
        if !b.is_empty() {
            m.readers.push(b.clone());
            m.fresh = Some(Fresh::Reader(b.clone()));
        }
        Ok(b)
    }

    fn read_if(&mut self, touched: bool, rs: &RState) -> Res<RState> {
        if touched {
            self.read()
        } else {
            Ok(rs.clone())
        }
    }

    fn take(&self, m: &mut Model, loc: Loc) -> Batch {
        match loc {
            Loc::Push(i) => m.pushes[i].batch.take().unwrap(),
            Loc::Worker(i) => m.workers.remove(i).batch.unwrap(),
            Loc::Reader(i) => m.readers.remove(i),
            Loc::Sweep => match &mut m.sweep {
                Sweep::Drained { batch, .. } => batch.take().unwrap(),
                _ => unreachable!(),
            },
        }
    }

    /// `perform_async` for each job, checking that no push is queued twice.
    fn deliver(&self, m: &mut Model, b: &[(u8, u64)]) -> Res<()> {
        for &(p, _) in b {
            if m.pushes[p as usize].clean > 0 {
                return Err(format!(
                    "push {p}'s reset was enqueued again after it completed cleanly"
                ));
            }
            if m.queue.contains(&p) {
                return Err(format!("push {p}'s reset is queued twice"));
            }
            if m.workers.iter().any(|w| w.push == p && w.batch.is_none()) {
                return Err(format!("push {p}'s reset was enqueued while it runs"));
            }
            m.queue.push(p);
        }
        Ok(())
    }

    /// Runs every queued job to its end; answers whether there was any. Before
    /// the final jump a job may wait for a dead sync's marker; after it, no
    /// sync is live, so each must run and complete cleanly.
    fn run_queued(&self, m: &mut Model, after_jump: bool) -> Res<bool> {
        let (t, c, mr) = (&self.tracker, &self.cancel, Self::mr());
        let mut any = false;
        while let Some(p) = m.queue.pop() {
            any = true;
            let (old, new, args) = &self.revs[p as usize];
            let o = t
                .reset_begin(c, mr, Some(old), new, args)
                .map_err(|x| x.to_string())?;
            Self::idx_err(&o)?;
            if o.code != "run" {
                if after_jump {
                    return Err(format!("recovery: push {p}'s reset answered {}", o.code));
                }
                continue;
            }
            let f = t
                .reset_finish(c, mr, o.value as u64, true)
                .map_err(|x| x.to_string())?;
            Self::idx_err(&f)?;
            if f.code == "done" {
                if m.pushes[p as usize].clean > 0 {
                    return Err(format!(
                        "recovery: push {p}'s reset completed cleanly a second time"
                    ));
                }
                m.pushes[p as usize].clean += 1;
            } else if after_jump {
                return Err(format!("recovery: push {p}'s reset ended {}", f.code));
            }
            let b = self.batch(&f)?;
            self.deliver(m, &b)?;
        }
        Ok(any)
    }

    /// At an end state: every marker expires, the sweep recovers what is
    /// kept, jobs run (no sync is left to overlap them); then every scheduled
    /// push must have completed cleanly and the MR must hold no key.
    fn recover(&mut self, end: &Model) -> Res<()> {
        let mut m = end.clone();
        let (t, c, mr) = (&self.tracker, &self.cancel, Self::mr());
        // Queued jobs begin before any deadline passes (the model's assumption
        // for workers), so they run at the end state's clock, before the jump;
        // one that waits for a dead sync's marker is recovered after it.
        t.set_clock(Some(m.now()));
        self.run_queued(&mut m, false)?;
        m.epoch += 1;
        for p in &mut m.pushes {
            if p.sync == Sync::CrashedLive {
                p.sync = Sync::CrashedDead;
            }
        }
        t.set_clock(Some(m.now()));
        for _ in 0..20 {
            let mut progress = false;
            let due = t.index_due(c, 100).map_err(|x| x.to_string())?;
            if let Some((_, seen)) = due.into_iter().find(|(id, _)| id.get() == MR as u64) {
                progress = true;
                let o = t.sweep_drain(c, mr, &seen).map_err(|x| x.to_string())?;
                Self::idx_err(&o)?;
                let b = self.batch(&o)?;
                self.deliver(&mut m, &b)?;
            }
            progress |= self.run_queued(&mut m, true)?;
            if !progress {
                break;
            }
        }
        for (i, p) in m.pushes.iter().enumerate() {
            if p.scheduled && p.clean == 0 {
                return Err(format!(
                    "push {i}'s reset was lost: scheduled, never completed cleanly after recovery"
                ));
            }
        }
        let rs = self.read()?;
        let now = m.now();
        if rs.markers.iter().any(|(_, d)| *d > now) {
            return Err(format!("live markers after recovery: {:?}", rs.markers));
        }
        if !rs.resets.is_empty() {
            return Err(format!("kept resets left after recovery: {:?}", rs.resets));
        }
        if !rs.due.is_empty() {
            return Err(format!(
                "MR still in the sweep index after recovery: {:?}",
                rs.due
            ));
        }
        Ok(())
    }

    /// Invariants on every state.
    fn check(&self, m: &Model, rs: &RState) -> Res<()> {
        let now = m.now();
        for (i, key) in self.keys.iter().enumerate() {
            if rs.dumps[i].is_some() && rs.pttls[i] < 0 {
                return Err(format!("{key} has no TTL"));
            }
        }
        let live_top = rs
            .markers
            .iter()
            .map(|(_, d)| *d)
            .filter(|d| *d > now)
            .max();
        if let Some(top) = live_top {
            // Real milliseconds pass while the search runs; allow a minute.
            if rs.pttls[0] + 60_000 < (top - now) as i64 {
                return Err(format!(
                    "markers key expires in {} ms, before its live marker ({} ms)",
                    rs.pttls[0],
                    top - now
                ));
            }
            if rs.dumps[1].is_some() && rs.pttls[1] < rs.pttls[0] {
                return Err("kept resets expire before the markers".into());
            }
        }
        // A running sync's marker must be live (syncs end within marker_ttl).
        for (i, p) in m.pushes.iter().enumerate() {
            if matches!(p.sync, Sync::Running | Sync::CrashedLive) {
                let member = format!("{}#", self.member(i).text());
                if !rs
                    .markers
                    .iter()
                    .any(|(k, d)| k.starts_with(&member) && *d > now)
                {
                    return Err(format!("push {i}'s active sync has no live marker"));
                }
            }
        }
        Ok(())
    }

    fn read(&mut self) -> Res<RState> {
        let now = self.tracker.now(&self.cancel).map_err(|e| e.to_string())?;
        let mut pipe = redis::pipe();
        for k in &self.keys {
            pipe.cmd("DUMP").arg(k).cmd("PTTL").arg(k);
        }
        pipe.cmd("ZRANGE")
            .arg(&self.keys[0])
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES");
        pipe.cmd("HGETALL").arg(&self.keys[1]);
        pipe.cmd("ZRANGE")
            .arg(&self.keys[2])
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES");
        let v: Vec<Value> = pipe.query(&mut self.con).map_err(|e| e.to_string())?;
        let mut rs = RState::default();
        for i in 0..3 {
            rs.dumps[i] = match &v[2 * i] {
                Value::BulkString(b) => Some(b.clone()),
                _ => None,
            };
            rs.pttls[i] = redis::from_redis_value::<i64>(v[2 * i + 1].clone()).unwrap_or(-2);
        }
        let pairs = |x: &Value| -> Vec<(String, String)> {
            let flat: Vec<String> = redis::from_redis_value(x.clone()).unwrap_or_default();
            flat.chunks(2)
                .map(|c| (c[0].clone(), c[1].clone()))
                .collect()
        };
        rs.markers = pairs(&v[6])
            .into_iter()
            .map(|(k, s)| (k, s.parse::<f64>().unwrap() as u64))
            .collect();
        rs.resets = pairs(&v[7]);
        rs.resets.sort();
        rs.due = pairs(&v[8]);
        for i in 0..3 {
            if rs.pttls[i] == -2 && rs.dumps[i].is_some() {
                return Err(format!(
                    "{} expired in real time during the search",
                    self.keys[i]
                ));
            }
        }
        // A markers key holding only dead markers gets a 1 ms TTL: it is gone
        // before any later step could read it, so the search drops it now.
        if rs.dumps[0].is_some() && rs.pttls[0] < 1000 && rs.markers.iter().all(|(_, d)| *d <= now)
        {
            let _: () = redis::cmd("DEL")
                .arg(&self.keys[0])
                .query(&mut self.con)
                .map_err(|e| e.to_string())?;
            rs.dumps[0] = None;
            rs.pttls[0] = -2;
            rs.markers.clear();
        }
        Ok(rs)
    }

    fn restore(&mut self, rs: &RState) {
        let mut pipe = redis::pipe();
        pipe.cmd("DEL").arg(&self.keys).ignore();
        for (i, k) in self.keys.iter().enumerate() {
            if let Some(d) = &rs.dumps[i] {
                pipe.cmd("RESTORE")
                    .arg(k)
                    .arg(rs.pttls[i].max(0))
                    .arg(d.as_slice())
                    .arg("REPLACE")
                    .ignore();
            }
        }
        let _: () = pipe.query(&mut self.con).expect("restore");
    }

    /// A canonical key: times relative to the clock, entry ids renamed by rank.
    fn key(&self, m: &Model, rs: &RState) -> u128 {
        let now = m.now() as i64;
        let rel = |t: i64| -> String {
            if t <= now {
                "past".into()
            } else {
                (t - now).to_string()
            }
        };
        let seq: Option<u64> = rs
            .resets
            .iter()
            .find(|(k, _)| k == "seq")
            .map(|(_, v)| v.parse().unwrap());
        let mut ids: Vec<u64> = rs
            .resets
            .iter()
            .filter_map(|(k, _)| k.parse().ok())
            .collect();
        for p in &m.pushes {
            ids.extend(p.batch.iter().flatten().map(|j| j.1));
        }
        for w in &m.workers {
            ids.push(w.entry);
            ids.extend(w.batch.iter().flatten().map(|j| j.1));
        }
        for r in &m.readers {
            ids.extend(r.iter().map(|j| j.1));
        }
        if let Sweep::Drained { batch: Some(b), .. } = &m.sweep {
            ids.extend(b.iter().map(|j| j.1));
        }
        ids.extend(seq);
        ids.sort_unstable();
        ids.dedup();
        // Ids at or below seq only compare by order with new ones; above it
        // (stale, from before the hash was recreated) the exact gap matters.
        let base = seq.unwrap_or(0);
        let id = |x: u64| -> String {
            if x <= base {
                format!("r{}", ids.binary_search(&x).unwrap())
            } else {
                format!("s+{}", x - base)
            }
        };
        let mut s = String::new();
        for (k, d) in &rs.markers {
            write!(s, "M{k}={};", rel(*d as i64)).unwrap();
        }
        for (k, v) in &rs.resets {
            if k == "seq" {
                write!(s, "seq;").unwrap();
            } else if k == "idx" {
                write!(s, "idx={};", v.parse::<i64>().unwrap() - now).unwrap();
            } else {
                let f: Vec<&str> = v.splitn(6, '|').collect();
                let dl = rel(f[1].parse().unwrap());
                write!(
                    s,
                    "E{}={}|{dl}|{}|{}|{};",
                    id(k.parse().unwrap()),
                    f[0],
                    f[2],
                    f[3],
                    f[4]
                )
                .unwrap();
            }
        }
        for (k, v) in &rs.due {
            write!(s, "D{k}={};", v.parse::<i64>().unwrap() - now).unwrap();
        }
        let jobs = |b: &Batch| -> String {
            b.iter()
                .map(|(p, e)| format!("{p}:{}", id(*e)))
                .collect::<Vec<_>>()
                .join(",")
        };
        for p in &m.pushes {
            write!(
                s,
                "P{:?}/{:?}/{}/{}/{:?};",
                p.proc,
                p.sync,
                p.scheduled,
                p.clean,
                p.batch.as_ref().map(jobs)
            )
            .unwrap();
        }
        write!(s, "Q{:?};", m.queue).unwrap();
        let mut ws: Vec<String> = m
            .workers
            .iter()
            .map(|w| {
                format!(
                    "W{}:{}:{}:{:?}",
                    w.push,
                    id(w.entry),
                    w.overlapped,
                    w.batch.as_ref().map(jobs)
                )
            })
            .collect();
        ws.sort();
        s.push_str(&ws.join(";"));
        let mut rd: Vec<String> = m.readers.iter().map(jobs).collect();
        rd.sort();
        write!(s, "R{rd:?};").unwrap();
        match &m.sweep {
            Sweep::Idle => s.push_str("S-;"),
            Sweep::Read { seen } => write!(s, "S{};", seen.parse::<i64>().unwrap() - now).unwrap(),
            Sweep::Drained { seen, left, batch } => write!(
                s,
                "S{}/{left}/{:?};",
                seen.parse::<i64>().unwrap() - now,
                batch.as_ref().map(jobs)
            )
            .unwrap(),
        }
        write!(s, "B{}/{}", m.raises, m.enqueue_failures).unwrap();
        let mut h1 = DefaultHasher::new();
        (0u8, &s).hash(&mut h1);
        let mut h2 = DefaultHasher::new();
        (1u8, &s).hash(&mut h2);
        ((h1.finish() as u128) << 64) | h2.finish() as u128
    }
}

/// Runs the checker and prints its figures.
pub fn explore(
    url: &str,
    pushes: usize,
    variant: Variant,
    faults: Faults,
) -> Result<Stats, Violation> {
    let mut checker = Checker::new(url, pushes, variant, faults);
    let out = checker.run();
    match &out {
        Ok(s) => eprintln!(
            "interleavings: {pushes} push(es), {variant:?}, {faults:?}: {:.0} complete interleavings, \
             {} distinct states, {} transitions, {} end states recovered, {:.1?}",
            s.interleavings, s.states, s.transitions, s.ends, s.elapsed
        ),
        Err(v) => eprintln!("interleavings: {pushes} push(es), {variant:?}: {v}"),
    }
    out
}
