//! Proves the launchers in tests/common work, so other integration tests can
//! trust them.

mod common;

use common::{cluster, redis_cli, RedisServer};
use std::net::TcpStream;

#[test]
fn standalone_answers_ping_and_is_gone_after_drop() {
    let server = RedisServer::start();
    assert_eq!(server.ping(), "+PONG");
    assert!(server.cli(&["INFO", "server"]).contains("redis_version:7."));
    assert_eq!(server.url(), format!("redis://127.0.0.1:{}", server.port()));

    let port = server.port();
    server.stop();
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn start_with_passes_extra_arguments() {
    let server = RedisServer::start_with(&["--requirepass", "s3cret"]);
    assert!(server.ping().starts_with("-NOAUTH"));
    assert_eq!(
        redis_cli(
            server.port(),
            &["--no-auth-warning", "-a", "s3cret", "PING"]
        )
        .trim(),
        "PONG"
    );
}

#[test]
fn url_works_with_the_redis_crate() {
    let server = RedisServer::start();
    let mut conn = redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let reply: String = redis::cmd("PING").query(&mut conn).unwrap();
    assert_eq!(reply, "PONG");
}

#[test]
fn cluster_of_three_masters_is_ok() {
    let cluster = cluster(3);
    assert_eq!(cluster.nodes().len(), 3);
    for server in &cluster.servers {
        let info = server.cli(&["CLUSTER", "INFO"]);
        assert!(info.contains("cluster_state:ok"), "{info}");
        assert!(info.contains("cluster_size:3"), "{info}");
    }
    // Any node redirects a key it does not own; -c follows the redirect.
    let first = cluster.servers[0].port();
    assert_eq!(redis_cli(first, &["-c", "SET", "k", "v"]).trim(), "OK");
    assert_eq!(redis_cli(first, &["-c", "GET", "k"]).trim(), "v");
}
