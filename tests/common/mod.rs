//! Throwaway redis-server processes for integration tests.
//!
//! Every server binds to 127.0.0.1 on a free port, keeps its data and log in
//! its own temp dir, and is killed when its handle is dropped, so a failing
//! test cannot leave one behind unless the test process itself is killed.

// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

pub const HOST: &str = "127.0.0.1";
const START_TIMEOUT: Duration = Duration::from_secs(10);
const PORT_ATTEMPTS: usize = 5;

pub struct RedisServer {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// `args` go after the defaults, e.g. `&["--requirepass", "secret"]`.
    pub fn start_with(args: &[&str]) -> Self {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        Self::launch(|| args.clone())
    }

    /// Starts a server, picking ports again when another process took one
    /// between our probe and redis-server's bind. `args` runs once per try so
    /// it can pick extra ports too.
    fn launch(args: impl Fn() -> Vec<String>) -> Self {
        let dir = temp_dir();
        let log_path = dir.join("redis.log");
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port();
            let log = fs::File::create(&log_path).expect("create redis.log");
            let child = Command::new("redis-server")
                .args(["--bind", HOST, "--port", &port.to_string()])
                .args(["--dir", dir.to_str().expect("utf-8 temp dir")])
                .args(["--save", "", "--appendonly", "no"])
                .args(args())
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("clone log handle"))
                .stderr(log)
                .spawn()
                .expect("spawn redis-server (is it installed?)");
            let mut server = RedisServer {
                child,
                port,
                dir: dir.clone(),
            };
            match server.wait_ready() {
                Ok(()) => return server,
                Err(log) if log.contains("Address already in use") => continue,
                Err(log) => panic!("redis-server on port {port} failed to start:\n{log}"),
            }
        }
        panic!("redis-server found no free port in {PORT_ATTEMPTS} tries");
    }

    /// Err carries the log tail. The caller's Drop kills a hung server.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(reply) = ping_reply(self.port) {
                // NOAUTH also proves the server is serving.
                if reply == "+PONG" || reply.starts_with("-NOAUTH") {
                    return Ok(());
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("exited with {status}\n{}", self.log_tail()));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "no PONG within {START_TIMEOUT:?}\n{}",
                    self.log_tail()
                ));
            }
            sleep(Duration::from_millis(20));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn address(&self) -> String {
        format!("{HOST}:{}", self.port)
    }

    /// Without credentials: add them yourself if the server has a password.
    pub fn url(&self) -> String {
        format!("redis://{HOST}:{}", self.port)
    }

    /// The raw first line of the reply to PING, e.g. `+PONG`.
    pub fn ping(&self) -> String {
        ping_reply(self.port).unwrap_or_else(|| panic!("no reply to PING on port {}", self.port))
    }

    pub fn cli(&self, args: &[&str]) -> String {
        redis_cli(self.port, args)
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    pub fn stop(self) {}
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // SIGKILL: nothing is persisted, so there is nothing to shut down cleanly.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Speaks RESP directly so readiness needs no client library.
fn ping_reply(port: u16) -> Option<String> {
    let timeout = Duration::from_millis(500);
    let addr = SocketAddr::new(HOST.parse().expect("HOST is an IP"), port);
    let mut stream = TcpStream::connect_timeout(&addr, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.write_all(b"*1\r\n$4\r\nPING\r\n").ok()?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).ok()?;
    Some(line.trim_end().to_string()).filter(|l| !l.is_empty())
}

/// Binding port 0 asks the kernel for a free port; the listener is closed
/// again at once, so launch retries if someone else takes it meanwhile.
fn free_port() -> u16 {
    let listener = TcpListener::bind((HOST, 0)).expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

fn temp_dir() -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("approval_sync-redis-{}-{n}", std::process::id()));
    // A leftover from an earlier run with the same pid would hold stale files.
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// Runs `redis-cli -h 127.0.0.1 -p PORT ARGS...` and returns its stdout.
/// Panics if redis-cli fails; a Redis error reply is still returned as text.
pub fn redis_cli(port: u16, args: &[&str]) -> String {
    let port = port.to_string();
    let output = Command::new("redis-cli")
        .args(["-h", HOST, "-p", &port])
        .args(args)
        .output()
        .expect("run redis-cli (is it installed?)");
    assert!(
        output.status.success(),
        "redis-cli -p {port} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Masters with no replicas; dropping it stops every node.
pub struct Cluster {
    pub servers: Vec<RedisServer>,
}

impl Cluster {
    /// `["127.0.0.1:p1", ...]`
    pub fn nodes(&self) -> Vec<String> {
        self.servers.iter().map(RedisServer::address).collect()
    }

    pub fn urls(&self) -> Vec<String> {
        self.servers.iter().map(RedisServer::url).collect()
    }
}

/// Starts `masters` nodes (at least 3, as redis-cli requires), joins them
/// with `redis-cli --cluster create` and waits for `cluster_state:ok` on all.
pub fn cluster(masters: usize) -> Cluster {
    assert!(
        masters >= 3,
        "redis-cli --cluster create needs at least 3 masters"
    );
    let servers: Vec<RedisServer> = (0..masters)
        .map(|_| {
            RedisServer::launch(|| {
                // An explicit bus port: port + 10000 may be taken or past 65535.
                let bus_port = free_port().to_string();
                ["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"]
                    .into_iter()
                    .chain([
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-port",
                        &bus_port,
                    ])
                    .map(String::from)
                    .collect()
            })
        })
        .collect();
    let cluster = Cluster { servers };

    let nodes = cluster.nodes();
    let mut create = Command::new("redis-cli");
    create
        .args(["--cluster-yes", "--cluster", "create"])
        .args(&nodes)
        .args(["--cluster-replicas", "0"]);
    run_with_timeout(create, Duration::from_secs(30));

    let deadline = Instant::now() + Duration::from_secs(15);
    while !cluster
        .servers
        .iter()
        .all(|s| s.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok"))
    {
        assert!(
            Instant::now() < deadline,
            "cluster {nodes:?} not ok within 15s"
        );
        sleep(Duration::from_millis(50));
    }
    cluster
}

/// redis-cli --cluster create can wait forever for nodes that never join.
fn run_with_timeout(mut command: Command, timeout: Duration) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn command");
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("wait for command") {
            let output = child.wait_with_output().expect("read command output");
            assert!(
                status.success(),
                "{command:?} failed ({status}):\n{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            return;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} timed out after {timeout:?}");
        }
        sleep(Duration::from_millis(50));
    }
}
