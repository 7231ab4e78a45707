//! `ApprovalSync::Native::Tracker`: the core's operations as Ruby methods.
//! Arguments arrive checked by `lib/approval_sync`; values go back as plain
//! arrays so the Ruby side needs no wrapper types.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use magnus::{function, method, prelude::*, Error, RHash, RModule, Ruby, TryConvert};

use super::errors::to_ruby;
use super::gvl::without_gvl;
use crate::config::{Config, Tls, Topology};
use crate::keys::MrId;
use crate::member::Member;
use crate::tracker::{Job, Outcome, Tracker};

/// An outcome as Ruby sees it:
/// [code, value, due_at, [[id, args], ...], expired, index_error or nil].
type RbOutcome = (
    String,
    i64,
    u64,
    Vec<(u64, String)>,
    Vec<String>,
    Option<String>,
);

#[magnus::wrap(class = "ApprovalSync::Native::Tracker", free_immediately, size)]
struct RbTracker(Arc<Tracker>);

fn jobs(jobs: Vec<Job>) -> Vec<(u64, String)> {
    jobs.into_iter().map(|j| (j.id, j.args)).collect()
}

fn outcome(o: Outcome) -> RbOutcome {
    (
        o.code,
        o.value,
        o.due_at,
        jobs(o.jobs),
        o.expired,
        o.index_error,
    )
}

fn mr(ruby: &Ruby, id: i64) -> Result<MrId, Error> {
    MrId::new(id).map_err(|e| to_ruby(ruby, e))
}

fn member(ruby: &Ruby, text: String) -> Result<Member, Error> {
    Member::parse(&text).map_err(|e| to_ruby(ruby, e))
}

fn get<T: TryConvert>(hash: RHash, key: &str) -> Result<Option<T>, Error> {
    match hash.get(key) {
        Some(v) if !v.is_nil() => T::try_convert(v).map(Some),
        _ => Ok(None),
    }
}

/// A database number: an Integer from 0, never a Float quietly truncated.
fn database(hash: RHash) -> Result<Option<i64>, Error> {
    // UNWRAP: config() runs inside a Ruby method call, on a Ruby thread.
    let ruby = Ruby::get().unwrap();
    match hash.get("db") {
        Some(v) if !v.is_nil() => match magnus::Integer::from_value(v).map(|i| i.to_i64()) {
            Some(Ok(db)) if db >= 0 => Ok(Some(db)),
            _ => Err(to_ruby(
                &ruby,
                crate::error::Error::Config(format!("db must be an Integer from 0, got {v}")),
            )),
        },
        _ => Ok(None),
    }
}

/// A positive number of seconds; anything else is a configuration error
/// rather than a silent fallback to the default.
fn seconds(hash: RHash, key: &str, default: Duration) -> Result<Duration, Error> {
    let Some(secs) = get::<f64>(hash, key)? else {
        return Ok(default);
    };
    match Duration::try_from_secs_f64(secs) {
        Ok(d) if !d.is_zero() && secs <= 1e9 => Ok(d),
        _ => {
            let err = crate::error::Error::Config(format!(
                "{key} must be a positive number of seconds, got {secs}"
            ));
            // UNWRAP: config() runs inside a Ruby method call, on a Ruby thread.
            Err(to_ruby(&Ruby::get().unwrap(), err))
        }
    }
}

fn config(hash: RHash) -> Result<Config, Error> {
    let defaults = Config::default();
    let topology = if let Some(nodes) = get::<Vec<String>>(hash, "cluster_nodes")? {
        Topology::Cluster(nodes)
    } else if let Some(sentinels) = get::<Vec<String>>(hash, "sentinels")? {
        Topology::Sentinel {
            sentinels,
            master_name: get(hash, "master_name")?.unwrap_or_default(),
            sentinel_password: get(hash, "sentinel_password")?,
        }
    } else {
        Topology::Url(get(hash, "url")?.unwrap_or_else(|| "redis://127.0.0.1:6379/0".into()))
    };
    let ca_file = get::<String>(hash, "ca_file")?.map(PathBuf::from);
    let cert_file = get::<String>(hash, "cert_file")?.map(PathBuf::from);
    let key_file = get::<String>(hash, "key_file")?.map(PathBuf::from);
    let insecure = get::<bool>(hash, "tls_insecure")?.unwrap_or(false);
    let tls = if ca_file.is_some() || cert_file.is_some() || key_file.is_some() || insecure {
        Some(Tls {
            ca_file,
            cert_file,
            key_file,
            insecure,
        })
    } else {
        None
    };
    Ok(Config {
        topology,
        username: get(hash, "username")?,
        password: get(hash, "password")?,
        db: database(hash)?,
        tls,
        connect_timeout: seconds(hash, "connect_timeout", defaults.connect_timeout)?,
        read_timeout: seconds(hash, "read_timeout", defaults.read_timeout)?,
        marker_ttl: seconds(hash, "marker_ttl", defaults.marker_ttl)?,
        pending_ttl: seconds(hash, "pending_ttl", defaults.pending_ttl)?,
    })
}

impl RbTracker {
    fn new(ruby: &Ruby, settings: RHash) -> Result<RbTracker, Error> {
        let tracker = Tracker::new(config(settings)?).map_err(|e| to_ruby(ruby, e))?;
        Ok(RbTracker(Arc::new(tracker)))
    }

    /// Runs one core call without the GVL.
    fn call<T, F>(&self, ruby: &Ruby, f: F) -> Result<T, Error>
    where
        F: FnOnce(&Tracker, &crate::conn::Cancel) -> crate::error::Result<T> + Send,
        T: Send,
    {
        let tracker = self.0.clone();
        without_gvl(ruby, move |cancel| f(&tracker, cancel))
    }

    fn legacy_set(ruby: &Ruby, rb_self: &Self, id: i64, ttl: u64) -> Result<(), Error> {
        let id = mr(ruby, id)?;
        rb_self.call(ruby, move |t, c| t.legacy_set(c, id, ttl))
    }

    fn legacy_exists(ruby: &Ruby, rb_self: &Self, id: i64) -> Result<bool, Error> {
        let id = mr(ruby, id)?;
        rb_self.call(ruby, move |t, c| t.legacy_exists(c, id))
    }

    fn legacy_delete(ruby: &Ruby, rb_self: &Self, id: i64) -> Result<(), Error> {
        let id = mr(ruby, id)?;
        rb_self.call(ruby, move |t, c| t.legacy_delete(c, id))
    }

    /// [legacy?, live markers, pending resets, member live?, jobs, expired, index_error]
    #[allow(clippy::type_complexity)]
    fn status(
        ruby: &Ruby,
        rb_self: &Self,
        id: i64,
        text: Option<String>,
    ) -> Result<
        (
            bool,
            u64,
            u64,
            bool,
            Vec<(u64, String)>,
            Vec<String>,
            Option<String>,
        ),
        Error,
    > {
        let id = mr(ruby, id)?;
        let member = text.map(|t| member(ruby, t)).transpose()?;
        let status = rb_self.call(ruby, move |t, c| t.status(c, id, member.as_ref()))?;
        Ok((
            status.legacy,
            status.live_markers,
            status.pending_resets,
            status.member_live,
            jobs(status.jobs),
            status.expired,
            status.index_error,
        ))
    }

    fn start(ruby: &Ruby, rb_self: &Self, id: i64, text: String) -> Result<RbOutcome, Error> {
        let (id, member) = (mr(ruby, id)?, member(ruby, text)?);
        rb_self
            .call(ruby, move |t, c| t.start(c, id, &member))
            .map(outcome)
    }

    fn finish(ruby: &Ruby, rb_self: &Self, id: i64, text: String) -> Result<RbOutcome, Error> {
        let (id, member) = (mr(ruby, id)?, member(ruby, text)?);
        rb_self
            .call(ruby, move |t, c| t.finish(c, id, &member))
            .map(outcome)
    }

    fn schedule(
        ruby: &Ruby,
        rb_self: &Self,
        id: i64,
        old: Option<String>,
        new: String,
        args: String,
    ) -> Result<RbOutcome, Error> {
        let id = mr(ruby, id)?;
        rb_self
            .call(ruby, move |t, c| {
                t.schedule(c, id, old.as_deref(), &new, &args)
            })
            .map(outcome)
    }

    fn drain(ruby: &Ruby, rb_self: &Self, id: i64) -> Result<RbOutcome, Error> {
        let id = mr(ruby, id)?;
        rb_self.call(ruby, move |t, c| t.drain(c, id)).map(outcome)
    }

    fn sweep_drain(ruby: &Ruby, rb_self: &Self, id: i64, seen: String) -> Result<RbOutcome, Error> {
        let id = mr(ruby, id)?;
        rb_self
            .call(ruby, move |t, c| t.sweep_drain(c, id, &seen))
            .map(outcome)
    }

    fn restore(ruby: &Ruby, rb_self: &Self, id: i64, ids: Vec<u64>) -> Result<RbOutcome, Error> {
        let id = mr(ruby, id)?;
        rb_self
            .call(ruby, move |t, c| t.restore(c, id, &ids))
            .map(outcome)
    }

    fn reset_begin(
        ruby: &Ruby,
        rb_self: &Self,
        id: i64,
        old: Option<String>,
        new: String,
        args: String,
    ) -> Result<RbOutcome, Error> {
        let id = mr(ruby, id)?;
        rb_self
            .call(ruby, move |t, c| {
                t.reset_begin(c, id, old.as_deref(), &new, &args)
            })
            .map(outcome)
    }

    fn reset_finish(
        ruby: &Ruby,
        rb_self: &Self,
        id: i64,
        entry: u64,
        token: u64,
        completed: bool,
    ) -> Result<RbOutcome, Error> {
        let id = mr(ruby, id)?;
        rb_self
            .call(ruby, move |t, c| {
                t.reset_finish_run(c, id, entry, Some(token), completed)
            })
            .map(outcome)
    }

    fn clear(ruby: &Ruby, rb_self: &Self, id: i64) -> Result<RbOutcome, Error> {
        let id = mr(ruby, id)?;
        rb_self.call(ruby, move |t, c| t.clear(c, id)).map(outcome)
    }

    fn index_settle(
        ruby: &Ruby,
        rb_self: &Self,
        id: i64,
        seen: String,
        due: Option<u64>,
    ) -> Result<(), Error> {
        let id = mr(ruby, id)?;
        rb_self.call(ruby, move |t, c| t.index_settle(c, id, &seen, due))
    }

    fn index_due(ruby: &Ruby, rb_self: &Self, limit: usize) -> Result<Vec<(u64, String)>, Error> {
        let due = rb_self.call(ruby, move |t, c| t.index_due(c, limit))?;
        Ok(due
            .into_iter()
            .map(|(id, score)| (id.get(), score))
            .collect())
    }

    /// [now_ms, legacy_ttl_ms or nil, [[member, deadline]], [[id, entry]]]
    #[allow(clippy::type_complexity)]
    fn snapshot(
        ruby: &Ruby,
        rb_self: &Self,
        id: i64,
    ) -> Result<(u64, Option<i64>, Vec<(String, u64)>, Vec<(u64, String)>), Error> {
        let id = mr(ruby, id)?;
        let s = rb_self.call(ruby, move |t, c| t.snapshot(c, id))?;
        Ok((s.now_ms, s.legacy_ttl_ms, s.markers, s.entries))
    }

    fn now(ruby: &Ruby, rb_self: &Self) -> Result<u64, Error> {
        rb_self.call(ruby, |t, c| t.now(c))
    }

    /// One plain round trip: the floor the benchmarks compare against.
    fn ping(ruby: &Ruby, rb_self: &Self) -> Result<String, Error> {
        rb_self.call(ruby, |t, c| {
            t.client().run(c, |h| h.query(redis::cmd("PING")))
        })
    }

    /// Sleeps inside a released call; lets specs test interrupts without Redis.
    fn pause(ruby: &Ruby, rb_self: &Self, seconds: f64) -> Result<bool, Error> {
        if !seconds.is_finite() {
            return Err(Error::new(
                ruby.exception_arg_error(),
                "pause takes a finite number of seconds",
            ));
        }
        let duration = Duration::from_secs_f64(seconds.clamp(0.0, 60.0));
        rb_self.call(ruby, move |t, c| {
            t.client().run(c, |_| async move {
                tokio::time::sleep(duration).await;
                Ok(true)
            })
        })
    }

    fn set_clock(&self, now_ms: Option<u64>) {
        self.0.set_clock(now_ms);
    }

    fn discard(&self) {
        self.0.client().discard();
    }

    fn inspect(&self) -> String {
        format!(
            "#<ApprovalSync::Native::Tracker {:?}>",
            self.0.client().config()
        )
    }
}

pub fn init(ruby: &Ruby, native: RModule) -> Result<(), Error> {
    let class = native.define_class("Tracker", ruby.class_object())?;
    class.define_singleton_method("new", function!(RbTracker::new, 1))?;
    class.define_method("legacy_set", method!(RbTracker::legacy_set, 2))?;
    class.define_method("legacy_exists", method!(RbTracker::legacy_exists, 1))?;
    class.define_method("legacy_delete", method!(RbTracker::legacy_delete, 1))?;
    class.define_method("status", method!(RbTracker::status, 2))?;
    class.define_method("start", method!(RbTracker::start, 2))?;
    class.define_method("finish", method!(RbTracker::finish, 2))?;
    class.define_method("schedule", method!(RbTracker::schedule, 4))?;
    class.define_method("drain", method!(RbTracker::drain, 1))?;
    class.define_method("sweep_drain", method!(RbTracker::sweep_drain, 2))?;
    class.define_method("restore", method!(RbTracker::restore, 2))?;
    class.define_method("reset_begin", method!(RbTracker::reset_begin, 4))?;
    class.define_method("reset_finish", method!(RbTracker::reset_finish, 4))?;
    class.define_method("clear", method!(RbTracker::clear, 1))?;
    class.define_method("index_settle", method!(RbTracker::index_settle, 3))?;
    class.define_method("index_due", method!(RbTracker::index_due, 1))?;
    class.define_method("snapshot", method!(RbTracker::snapshot, 1))?;
    class.define_method("now", method!(RbTracker::now, 0))?;
    class.define_method("ping", method!(RbTracker::ping, 0))?;
    class.define_method("pause", method!(RbTracker::pause, 1))?;
    class.define_method("set_clock", method!(RbTracker::set_clock, 1))?;
    class.define_method("discard", method!(RbTracker::discard, 0))?;
    class.define_method("inspect", method!(RbTracker::inspect, 0))?;
    Ok(())
}
