//! The connection layer on a real Redis: cancellation, timeouts, recovery
//! after a dropped connection, and which server errors end a connection.

mod common;

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use approval_sync::conn::Client;
use approval_sync::{Cancel, Config, Error, Topology};
use common::RedisServer;

fn client(url: String, read_timeout: Duration) -> Client {
    Client::new(Config {
        topology: Topology::Url(url),
        connect_timeout: Duration::from_millis(500),
        read_timeout,
        ..Config::default()
    })
    .unwrap()
}

fn ping(client: &Client) -> Result<String, Error> {
    client.run(&Cancel::new(), |c| c.query(redis::cmd("PING")))
}

/// The id of this process's one named connection, from CLIENT LIST.
fn gem_connection_ids(server: &RedisServer) -> Vec<String> {
    server
        .cli(&["CLIENT", "LIST"])
        .lines()
        .filter(|line| line.contains(" name=approval_sync "))
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[test]
fn a_cancelled_call_ends_at_once_and_its_connection_is_replaced() {
    let server = RedisServer::start_with(&["--enable-debug-command", "yes"]);
    let client = Arc::new(client(server.url(), Duration::from_secs(10)));
    assert_eq!(ping(&client).unwrap(), "PONG");
    let before = gem_connection_ids(&server);
    assert_eq!(before.len(), 1);

    let port = server.port();
    let sleeper = thread::spawn(move || common::redis_cli(port, &["DEBUG", "SLEEP", "1.5"]));
    thread::sleep(Duration::from_millis(200));
    let cancel = Arc::new(Cancel::new());
    let canceller = {
        let cancel = cancel.clone();
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(200));
            cancel.cancel();
        })
    };
    let started = Instant::now();
    let result: Result<String, Error> = client.run(&cancel, |c| c.query(redis::cmd("PING")));
    assert!(matches!(result, Err(Error::Interrupted)), "{result:?}");
    assert!(started.elapsed() < Duration::from_secs(1));
    canceller.join().unwrap();
    sleeper.join().unwrap();

    assert_eq!(ping(&client).unwrap(), "PONG");
    let deadline = Instant::now() + Duration::from_secs(3);
    while gem_connection_ids(&server).len() != 1 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    let after = gem_connection_ids(&server);
    assert_eq!(after.len(), 1);
    assert_ne!(after, before, "the interrupted connection was reused");
}

#[test]
fn a_stalled_server_gives_a_timeout_within_the_read_timeout() {
    let server = RedisServer::start_with(&["--enable-debug-command", "yes"]);
    let client = client(server.url(), Duration::from_millis(300));
    assert_eq!(ping(&client).unwrap(), "PONG");
    let port = server.port();
    let sleeper = thread::spawn(move || common::redis_cli(port, &["DEBUG", "SLEEP", "1"]));
    thread::sleep(Duration::from_millis(150));
    let started = Instant::now();
    let result = ping(&client);
    assert!(matches!(result, Err(Error::Timeout(_))), "{result:?}");
    assert!(started.elapsed() < Duration::from_millis(800));
    sleeper.join().unwrap();
    assert_eq!(ping(&client).unwrap(), "PONG");
}

#[test]
fn a_killed_connection_fails_at_most_one_call() {
    let server = RedisServer::start();
    let client = client(server.url(), Duration::from_secs(1));
    for _ in 0..3 {
        assert_eq!(ping(&client).unwrap(), "PONG");
        let id = gem_connection_ids(&server).remove(0);
        let id = id.trim_start_matches("id=");
        server.cli(&["CLIENT", "KILL", "ID", id]);
        thread::sleep(Duration::from_millis(50));
        if let Err(err) = ping(&client) {
            assert!(matches!(err, Error::Connection(_)), "{err:?}");
        }
        assert_eq!(ping(&client).unwrap(), "PONG");
    }
}

#[test]
fn a_plain_command_on_a_key_of_the_wrong_type_names_the_key() {
    let server = RedisServer::start();
    server.cli(&["SET", "approval_sync:due", "x"]);
    let client = client(server.url(), Duration::from_secs(1));
    let mut cmd = redis::cmd("ZCARD");
    cmd.arg("approval_sync:due");
    let result: Result<i64, Error> = client.run(&Cancel::new(), |c| c.query(cmd));
    match result {
        Err(Error::WrongType { key, .. }) => assert_eq!(key, "approval_sync:due"),
        other => panic!("expected WrongType, got {other:?}"),
    }
    // A typed answer from the server does not cost the connection.
    let before = gem_connection_ids(&server);
    assert_eq!(ping(&client).unwrap(), "PONG");
    assert_eq!(gem_connection_ids(&server), before);
}

#[test]
fn an_operation_that_never_asks_for_redis_needs_no_server() {
    let client = client("redis://127.0.0.1:1".into(), Duration::from_millis(100));
    let started = Instant::now();
    let slept: Result<bool, Error> = client.run(&Cancel::new(), |_| async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        Ok(true)
    });
    assert!(slept.unwrap());
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(matches!(ping(&client), Err(Error::Connection(_))));
}
