//! The connection to Redis: one multiplexed connection per process, shared by
//! every thread, rebuilt after a fork, a fault or an interrupted call.
//!
//! Calls block the calling thread on a small Tokio runtime owned by this
//! module. Each call can be cancelled from another thread through [`Cancel`],
//! which is how the Ruby binding honours `Timeout` and `Thread#kill`.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, Cmd, IntoConnectionInfo, Pipeline, RedisFuture, Value};
use tokio::runtime::Runtime;

use crate::config::{Config, Tls, Topology};
use crate::error::{Error, Result};

/// The name of every connection this gem opens to a single server.
pub const CLIENT_NAME: &str = "approval_sync";

/// The pause before sending a command again that a Cluster node refused
/// while a slot was moving.
const CLUSTER_RETRY_WAIT: Duration = Duration::from_millis(20);

/// How often a waiting call looks at its [`Cancel`] flag.
const CANCEL_POLL: Duration = Duration::from_millis(10);

/// Lets another thread abandon a call that is waiting on Redis.
///
/// Cancelling only stores a flag, which is async-signal-safe: Ruby may call
/// the unblocking function from a signal handler. The waiting call notices
/// within [`CANCEL_POLL`].
#[derive(Debug, Default)]
pub struct Cancel {
    cancelled: AtomicBool,
}

impl Cancel {
    /// A fresh token, not cancelled.
    pub fn new() -> Cancel {
        Cancel::default()
    }

    /// Abandons the call using this token; safe from any thread, any time,
    /// and from a signal handler.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
    }

    /// True once [`Cancel::cancel`] ran.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }

    /// Completes once the token is cancelled.
    async fn cancelled(&self) {
        while !self.is_cancelled() {
            tokio::time::sleep(CANCEL_POLL).await;
        }
    }
}

/// A live connection of either kind.
#[derive(Clone)]
enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// What belongs to one process: forked children must build their own.
struct Live {
    pid: u32,
    runtime: Arc<Runtime>,
    conn: Option<Conn>,
    connecting: Arc<tokio::sync::Mutex<()>>,
}

/// A handle to Redis for one configuration, shared by every thread.
pub struct Client {
    config: Config,
    live: Mutex<Option<Live>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("config", &self.config)
            .finish()
    }
}

impl Client {
    /// Checks the configuration; connects lazily on the first call.
    pub fn new(config: Config) -> Result<Client> {
        config.validate()?;
        build_client(&config)?;
        Ok(Client {
            config,
            live: Mutex::new(None),
        })
    }

    /// The configuration this client was built with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Runs `op` on the shared connection, connecting when `op` first asks
    /// for it (so an operation that never talks to Redis needs no server).
    ///
    /// Connecting ends with a typed error after `connect_timeout`, each
    /// command after `read_timeout`, and the whole call as soon as `cancel`
    /// fires. A connection that saw a timeout, an I/O error or a cancellation
    /// is dropped, never reused with a reply still in flight.
    pub fn run<'a, T, F, Fut>(&'a self, cancel: &Cancel, op: F) -> Result<T>
    where
        F: FnOnce(ConnHandle<'a>) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let runtime = self.runtime()?;
        let failure = Arc::new(Mutex::new(None));
        let handle = ConnHandle {
            client: self,
            failure: failure.clone(),
        };
        let read_timeout = self.config.read_timeout;
        let outcome = runtime.block_on(async {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => Err(Error::Interrupted),
                reply = op(handle) => reply.map_err(|e| {
                    // Our own finding (timeout, connect failure, named key)
                    // is more precise than the driver error it travelled as.
                    failure.lock().take().unwrap_or_else(|| Error::from_redis(e, read_timeout))
                }),
            }
        });
        if let Err(err) = &outcome {
            if err.poisons_connection() {
                self.discard();
            }
        }
        outcome
    }

    /// Drops the shared connection; the next call opens a new one. Calls that
    /// other threads have in flight on it finish normally.
    pub fn discard(&self) {
        if let Some(live) = self.live.lock().as_mut() {
            if live.pid == std::process::id() {
                live.conn = None;
            }
        }
    }

    /// The runtime of this process, made anew in a forked child.
    fn runtime(&self) -> Result<Arc<Runtime>> {
        let pid = std::process::id();
        let mut guard = self.live.lock();
        if let Some(live) = guard.as_ref() {
            if live.pid == pid {
                return Ok(live.runtime.clone());
            }
        }
        // A forked child inherits the parent's sockets and a runtime whose
        // threads did not survive the fork. Dropping either would shut down
        // the parent's TLS session or wait for threads that do not exist, so
        // both are leaked: a few kilobytes once per fork.
        if let Some(stale) = guard.take() {
            std::mem::forget(stale);
        }
        // A current-thread runtime: each caller drives the socket itself inside
        // block_on (one caller at a time holds the driver, the others find
        // their replies routed to them), so no reply waits on a hand-off to
        // another OS thread.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .thread_name("approval-sync-io")
            .enable_all()
            .build()
            .map_err(|e| Error::Connection(format!("cannot start the I/O thread: {e}")))?;
        let runtime = Arc::new(runtime);
        *guard = Some(Live {
            pid,
            runtime: runtime.clone(),
            conn: None,
            connecting: Arc::new(tokio::sync::Mutex::new(())),
        });
        Ok(runtime)
    }

    async fn connection(&self) -> Result<Conn> {
        let connecting = {
            let live = self.live.lock();
            let Some(live) = live.as_ref() else {
                return Err(Error::Connection("no runtime for this process".into()));
            };
            if let Some(conn) = &live.conn {
                return Ok(conn.clone());
            }
            live.connecting.clone()
        };
        let connect_timeout = self.config.connect_timeout;
        // Threads that find no connection wait for one of them to open it,
        // so a process holds one connection rather than one per thread. The
        // wait counts against the same connect timeout as connecting.
        tokio::time::timeout(connect_timeout, async {
            let _turn = connecting.lock().await;
            if let Some(conn) = self.live.lock().as_ref().and_then(|l| l.conn.clone()) {
                return Ok(conn);
            }
            let conn = connect(&self.config).await?;
            // Stored before the turn ends, so the next waiter finds it.
            if let Some(live) = self.live.lock().as_mut() {
                if live.pid == std::process::id() && live.conn.is_none() {
                    live.conn = Some(conn.clone());
                }
            }
            Ok(conn)
        })
        .await
        .map_err(|_| Error::Timeout(connect_timeout))?
    }
}

impl Drop for Client {
    /// In a forked child, the parent's runtime and sockets must be leaked:
    /// dropping the runtime would wait forever for worker threads that did
    /// not survive the fork (a GC of a pre-fork tracker would hang the child).
    fn drop(&mut self) {
        if let Some(live) = self.live.get_mut().take() {
            if live.pid != std::process::id() {
                std::mem::forget(live);
            }
        }
    }
}

/// Access to the shared connection for one operation.
pub struct ConnHandle<'a> {
    client: &'a Client,
    failure: Arc<Mutex<Option<Error>>>,
}

impl ConnHandle<'_> {
    /// Runs one command.
    pub async fn query<T: redis::FromRedisValue>(self, cmd: Cmd) -> redis::RedisResult<T> {
        let key = cmd.args_iter().nth(1).and_then(|arg| match arg {
            redis::Arg::Simple(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
            _ => None,
        });
        let cmd = &cmd;
        let reply = self.timed(|mut conn| async move { cmd.query_async(&mut conn).await });
        match reply.await {
            // The server's WRONGTYPE does not say which key; a plain command
            // has one, so name it.
            Err(e) if e.code() == Some("WRONGTYPE") => {
                let key = key.unwrap_or_else(|| "(unknown)".into());
                let detail = format!("{key} holds another type than this command needs");
                Err(self.fail(Error::WrongType { key, detail }))
            }
            reply => reply,
        }
    }

    /// Runs a script invocation, loading the script if the server lost it.
    /// EVALSHA of an unknown script runs nothing, so loading and retrying
    /// cannot apply a script's effects twice.
    pub async fn invoke<T: redis::FromRedisValue>(
        self,
        invocation: redis::ScriptInvocation<'_>,
    ) -> redis::RedisResult<T> {
        let invocation = &invocation;
        self.timed(|mut conn| async move { invocation.invoke_async(&mut conn).await })
            .await
    }

    /// Connects if needed, then runs `f` within the read timeout.
    ///
    /// A server that answers READONLY was demoted (a Sentinel failover) and
    /// ran none of the command's writes, so `f` runs once more on a new
    /// connection, which asks the sentinels for the new master.
    async fn timed<T, F, Fut>(&self, f: F) -> redis::RedisResult<T>
    where
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let read_timeout = self.client.config.read_timeout;
        let mut deadline = tokio::time::Instant::now() + read_timeout;
        let mut demoted = false;
        loop {
            let conn = match self.client.connection().await {
                Ok(conn) => conn,
                Err(e) => return Err(self.fail(e)),
            };
            let reply = match tokio::time::timeout_at(deadline, f(conn)).await {
                Ok(reply) => reply,
                Err(_) => return Err(self.fail(Error::Timeout(read_timeout))),
            };
            match reply {
                Err(e) if !demoted && e.code() == Some("READONLY") => {
                    demoted = true;
                    self.client.discard();
                    deadline = tokio::time::Instant::now() + read_timeout;
                }
                // A Cluster node that answers MOVED, ASK, TRYAGAIN or
                // CLUSTERDOWN ran nothing; when the client's own redirects
                // ran out mid-migration, wait a moment and send it again,
                // within the same read timeout.
                Err(e)
                    if matches!(e.code(), Some("MOVED" | "ASK" | "TRYAGAIN" | "CLUSTERDOWN"))
                        && tokio::time::Instant::now() + CLUSTER_RETRY_WAIT < deadline =>
                {
                    tokio::time::sleep(CLUSTER_RETRY_WAIT).await;
                }
                reply => return reply,
            }
        }
    }

    /// Records `err` for [`Client::run`] and returns a stand-in for the driver.
    fn fail(&self, err: Error) -> redis::RedisError {
        *self.failure.lock() = Some(err);
        redis::RedisError::from((redis::ErrorKind::Client, "approval_sync call failed"))
    }
}

// Built once per connection attempt; its size does not matter.
#[allow(clippy::large_enum_variant)]
enum Built {
    Single(redis::Client),
    Cluster(redis::cluster::ClusterClient),
    Sentinel(redis::sentinel::SentinelClient),
}

fn config_err(e: impl std::fmt::Display) -> Error {
    Error::Config(crate::config::redact_url(&e.to_string()))
}

fn certificates(tls: &Tls) -> Result<redis::TlsCertificates> {
    let read = |path: &std::path::PathBuf| {
        std::fs::read(path)
            .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))
    };
    let client_tls = match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
            client_cert: read(cert)?,
            client_key: read(key)?,
        }),
        (None, None) => None,
        _ => {
            return Err(Error::Config(
                "TLS client certificate and key must be given together".into(),
            ))
        }
    };
    let root_cert = tls.ca_file.as_ref().map(read).transpose()?;
    Ok(redis::TlsCertificates {
        client_tls,
        root_cert,
    })
}

fn connection_info(config: &Config, url: &str) -> Result<redis::ConnectionInfo> {
    let url = with_tls_scheme(config, url);
    let mut info = url.as_str().into_connection_info().map_err(config_err)?;
    let mut redis = info.redis_settings().clone();
    if let Some(user) = &config.username {
        redis = redis.set_username(user);
    }
    if let Some(password) = &config.password {
        redis = redis.set_password(password);
    }
    if let Some(db) = config.db {
        redis = redis.set_db(db);
    }
    // Shows as lib-name in CLIENT LIST (Redis 7+), so operators and tests can
    // tell this gem's connections apart; older servers ignore it.
    redis = redis.set_lib_name("approval_sync", env!("CARGO_PKG_VERSION"));
    info = info.set_redis_settings(redis);
    if let (Some(tls), redis::ConnectionAddr::TcpTls { host, port, .. }) =
        (&config.tls, info.addr())
    {
        if tls.insecure {
            let addr = redis::ConnectionAddr::TcpTls {
                host: host.clone(),
                port: *port,
                insecure: true,
                tls_params: None,
            };
            info = info.set_addr(addr);
        }
    }
    Ok(info)
}

/// Bare `host:port` seeds become URLs; TLS settings turn `redis://` into `rediss://`.
fn with_tls_scheme(config: &Config, url: &str) -> String {
    let url = if url.contains("://") {
        url.to_string()
    } else {
        format!("redis://{url}")
    };
    match (&config.tls, url.strip_prefix("redis://")) {
        (Some(_), Some(rest)) => format!("rediss://{rest}"),
        _ => url,
    }
}

fn build_client(config: &Config) -> Result<Built> {
    let certs = config.tls.as_ref().map(certificates).transpose()?;
    match &config.topology {
        Topology::Url(url) => {
            let info = connection_info(config, url)?;
            let client = match certs {
                Some(certs) if !config.tls.as_ref().is_some_and(|t| t.insecure) => {
                    redis::Client::build_with_tls(info, certs)
                }
                _ => redis::Client::open(info),
            };
            client.map(Built::Single).map_err(config_err)
        }
        Topology::Cluster(nodes) => {
            let infos = nodes
                .iter()
                .map(|n| connection_info(config, n))
                .collect::<Result<Vec<_>>>()?;
            // MOVED and ASK are followed at once; TRYAGAIN (keys of a slot
            // half migrated) waits 10 to 250 ms between tries rather than
            // redis-rs's 1.28 s minimum, so a migration window fits in one
            // read timeout instead of failing the call.
            let mut builder = redis::cluster::ClusterClientBuilder::new(infos)
                .connection_timeout(config.connect_timeout)
                .response_timeout(config.read_timeout)
                .retries(8)
                .min_retry_wait(10)
                .max_retry_wait(250)
                .retry_wait_formula(10, 2);
            if let Some(certs) = certs {
                builder = builder.certs(certs);
            }
            builder.build().map(Built::Cluster).map_err(config_err)
        }
        Topology::Sentinel {
            sentinels,
            master_name,
            sentinel_password,
        } => {
            let addrs = sentinels
                .iter()
                .map(|s| {
                    let url = if s.contains("://") {
                        s.clone()
                    } else {
                        format!("redis://{s}")
                    };
                    url.as_str()
                        .into_connection_info()
                        .map(|i| i.addr().clone())
                        .map_err(config_err)
                })
                .collect::<Result<Vec<_>>>()?;
            let mut builder = redis::sentinel::SentinelClientBuilder::new(
                addrs,
                master_name.clone(),
                redis::sentinel::SentinelServerType::Master,
            )
            .map_err(config_err)?;
            if let Some(user) = &config.username {
                builder = builder.set_client_to_redis_username(user);
            }
            if let Some(password) = &config.password {
                builder = builder.set_client_to_redis_password(password);
            }
            if let Some(password) = sentinel_password {
                builder = builder.set_client_to_sentinel_password(password);
            }
            if let Some(db) = config.db {
                builder = builder.set_client_to_redis_db(db);
            }
            if let Some(certs) = certs {
                builder = builder
                    .set_client_to_redis_tls_mode(redis::TlsMode::Secure)
                    .set_client_to_redis_certificates(certs);
            }
            builder.build().map(Built::Sentinel).map_err(config_err)
        }
    }
}

async fn connect(config: &Config) -> Result<Conn> {
    let timeout = config.connect_timeout;
    let redis_err = |e: redis::RedisError| Error::from_redis(e, timeout);
    let async_config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(config.connect_timeout))
        .set_response_timeout(Some(config.read_timeout));
    let conn = match build_client(config)? {
        Built::Single(client) => client
            .get_multiplexed_async_connection_with_config(&async_config)
            .await
            .map_err(redis_err)?,
        Built::Cluster(client) => {
            return client
                .get_async_connection()
                .await
                .map(Conn::Cluster)
                .map_err(redis_err)
        }
        Built::Sentinel(mut client) => client
            .get_async_connection_with_config(&async_config)
            .await
            .map_err(redis_err)?,
    };
    Ok(Conn::Single(named(conn).await))
}

/// Names the connection in CLIENT LIST, so operators can tell this gem's one
/// connection per process from the host's others. Best effort: an ACL that
/// forbids CLIENT SETNAME must not stop the gem from working.
async fn named(mut conn: MultiplexedConnection) -> MultiplexedConnection {
    let mut cmd = redis::cmd("CLIENT");
    cmd.arg("SETNAME").arg(CLIENT_NAME);
    let _ignored: redis::RedisResult<()> = cmd.query_async(&mut conn).await;
    conn
}
