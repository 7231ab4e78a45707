//! The core's operations on a real Redis: each field case of the coordination
//! group at the level of the scripts, with every key and TTL checked.

mod common;

use std::time::Duration;

use approval_sync::{Cancel, Config, Error, Kind, Member, MrId, Topology, Tracker};
use common::RedisServer;

const A: &str = "aaa1110000000000000000000000000000000000";
const B: &str = "bbb2220000000000000000000000000000000000";
const C: &str = "ccc3330000000000000000000000000000000000";
const D: &str = "ddd4440000000000000000000000000000000000";

fn tracker(server: &RedisServer) -> Tracker {
    Tracker::new(Config {
        topology: Topology::Url(server.url()),
        ..Config::default()
    })
    .unwrap()
}

fn mr(id: i64) -> MrId {
    MrId::new(id).unwrap()
}

fn code_owner(old: &str, new: &str) -> Member {
    Member::new(Kind::CodeOwner, Some(old), Some(new)).unwrap()
}

fn args(old: &str, new: &str) -> String {
    format!("[7,9,\"refs/heads/feature\",\"{new}\",\"{old}\"]")
}

fn keys(server: &RedisServer) -> Vec<String> {
    let mut keys: Vec<String> = server
        .cli(&["KEYS", "*"])
        .lines()
        .map(str::to_string)
        .filter(|k| !k.is_empty())
        .collect();
    keys.sort();
    keys
}

/// Every key this project wrote carries a TTL.
fn assert_all_keys_expire(server: &RedisServer) {
    for key in keys(server) {
        let ttl: i64 = server.cli(&["PTTL", &key]).trim().parse().unwrap();
        assert!(ttl > 0, "{key} has no TTL ({ttl})");
    }
}

#[test]
fn c01_overlapping_syncs_enqueue_once_after_the_last_finish() {
    let server = RedisServer::start();
    let t = tracker(&server);
    let c = Cancel::new();

    t.start(&c, mr(42), &code_owner(A, B)).unwrap();
    t.start(&c, mr(42), &code_owner(B, C)).unwrap();
    let kept = t.schedule(&c, mr(42), Some(B), C, &args(B, C)).unwrap();
    assert_eq!(kept.code, "kept");
    assert!(kept.jobs.is_empty());
    assert_all_keys_expire(&server);

    let first = t.finish(&c, mr(42), &code_owner(A, B)).unwrap();
    assert!(
        first.jobs.is_empty(),
        "enqueued before the last sync finished"
    );

    let last = t.finish(&c, mr(42), &code_owner(B, C)).unwrap();
    assert_eq!(last.jobs.len(), 1);
    assert_eq!(last.jobs[0].args, args(B, C));

    let run = t.reset_begin(&c, mr(42), Some(B), C, &args(B, C)).unwrap();
    assert_eq!(run.code, "run");
    let done = t.reset_finish(&c, mr(42), run.value as u64, true).unwrap();
    assert_eq!(done.code, "done");
    assert!(keys(&server).is_empty(), "left: {:?}", keys(&server));
}

#[test]
fn c02_every_range_is_kept_in_push_order() {
    let server = RedisServer::start();
    let t = tracker(&server);
    let c = Cancel::new();

    t.start(&c, mr(42), &code_owner(A, B)).unwrap();
    for (old, new) in [(A, B), (B, C), (C, D)] {
        assert_eq!(
            t.schedule(&c, mr(42), Some(old), new, &args(old, new))
                .unwrap()
                .code,
            "kept"
        );
    }
    let out = t.finish(&c, mr(42), &code_owner(A, B)).unwrap();
    let got: Vec<&str> = out.jobs.iter().map(|j| j.args.as_str()).collect();
    assert_eq!(got, [args(A, B), args(B, C), args(C, D)]);
}

#[test]
fn same_push_twice_is_counted_but_create_is_not() {
    let server = RedisServer::start();
    let t = tracker(&server);
    let c = Cancel::new();
    let push = code_owner(A, B);

    t.start(&c, mr(42), &push).unwrap();
    assert_eq!(t.start(&c, mr(42), &push).unwrap().value, 2);
    t.finish(&c, mr(42), &push).unwrap();
    assert!(t.status(&c, mr(42), Some(&push)).unwrap().member_live);
    t.finish(&c, mr(42), &push).unwrap();
    assert!(!t.status(&c, mr(42), None).unwrap().syncing());

    let create = Member::new(Kind::CodeOwner, None, None).unwrap();
    t.start(&c, mr(42), &create).unwrap();
    t.start(&c, mr(42), &create).unwrap();
    t.finish(&c, mr(42), &create).unwrap();
    assert!(!t.status(&c, mr(42), None).unwrap().syncing());
    assert!(keys(&server).is_empty());
}

#[test]
fn a_sync_starting_during_a_reset_makes_it_run_again() {
    let server = RedisServer::start();
    let t = tracker(&server);
    let c = Cancel::new();

    let queued = t.schedule(&c, mr(42), Some(A), B, &args(A, B)).unwrap();
    assert_eq!(queued.code, "enqueue");
    let run = t.reset_begin(&c, mr(42), Some(A), B, &args(A, B)).unwrap();
    assert_eq!(run.code, "run");

    t.start(&c, mr(42), &code_owner(B, C)).unwrap();
    let end = t.reset_finish(&c, mr(42), run.value as u64, true).unwrap();
    assert_eq!(end.code, "rerun");
    assert!(end.jobs.is_empty(), "re-enqueued while the sync still runs");

    let fin = t.finish(&c, mr(42), &code_owner(B, C)).unwrap();
    assert_eq!(
        fin.jobs.len(),
        1,
        "the overlapped reset runs again after the sync"
    );
}

#[test]
fn a_reset_waits_while_a_sync_runs() {
    let server = RedisServer::start();
    let t = tracker(&server);
    let c = Cancel::new();

    t.start(&c, mr(42), &code_owner(A, B)).unwrap();
    let wait = t.reset_begin(&c, mr(42), Some(A), B, &args(A, B)).unwrap();
    assert_eq!(wait.code, "wait");
    let fin = t.finish(&c, mr(42), &code_owner(A, B)).unwrap();
    assert_eq!(fin.jobs.len(), 1);
}

#[test]
fn expired_markers_release_kept_resets_once_and_the_index_follows() {
    let server = RedisServer::start();
    let t = tracker(&server);
    let c = Cancel::new();
    let base = 1_000_000_000_000;
    t.set_clock(Some(base));

    t.start(&c, mr(42), &code_owner(A, B)).unwrap();
    t.schedule(&c, mr(42), Some(A), B, &args(A, B)).unwrap();
    assert!(
        t.index_due(&c, 10).unwrap().is_empty(),
        "due before the marker expired"
    );

    let after = base + Duration::from_secs(301).as_millis() as u64;
    t.set_clock(Some(after));
    let due = t.index_due(&c, 10).unwrap();
    assert_eq!(due.iter().map(|d| d.0).collect::<Vec<_>>(), [mr(42)]);

    let first = t.drain(&c, mr(42)).unwrap();
    assert_eq!(first.jobs.len(), 1);
    assert_eq!(first.expired.len(), 1);
    assert!(
        t.drain(&c, mr(42)).unwrap().jobs.is_empty(),
        "drained twice"
    );
    assert!(t.index_due(&c, 10).unwrap().is_empty(), "index not cleared");
}

#[test]
fn a_failed_enqueue_puts_the_reset_back() {
    let server = RedisServer::start();
    let t = tracker(&server);
    let c = Cancel::new();

    let out = t.schedule(&c, mr(42), Some(A), B, &args(A, B)).unwrap();
    let id = out.jobs[0].id;
    assert_eq!(t.restore(&c, mr(42), &[id]).unwrap().value, 1);
    let again = t.status(&c, mr(42), None).unwrap();
    assert_eq!(again.jobs.len(), 1, "a later call hands it out again");
    assert!(
        t.status(&c, mr(42), None).unwrap().jobs.is_empty(),
        "only once"
    );
}

#[test]
fn clear_forgets_everything_and_a_late_finish_enqueues_nothing() {
    let server = RedisServer::start();
    let t = tracker(&server);
    let c = Cancel::new();

    t.start(&c, mr(42), &code_owner(A, B)).unwrap();
    t.schedule(&c, mr(42), Some(A), B, &args(A, B)).unwrap();
    assert_eq!(t.clear(&c, mr(42)).unwrap().value, 1);
    let late = t.finish(&c, mr(42), &code_owner(A, B)).unwrap();
    assert!(late.jobs.is_empty());
    assert!(keys(&server).is_empty(), "left: {:?}", keys(&server));
}

#[test]
fn a_bystander_merge_request_never_changes() {
    let server = RedisServer::start();
    let t = tracker(&server);
    let c = Cancel::new();

    t.legacy_set(&c, mr(43), 15).unwrap();
    t.start(&c, mr(42), &code_owner(A, B)).unwrap();
    t.schedule(&c, mr(42), Some(A), B, &args(A, B)).unwrap();
    t.finish(&c, mr(42), &code_owner(A, B)).unwrap();
    let snap = t.snapshot(&c, mr(43)).unwrap();
    assert!(snap.markers.is_empty() && snap.entries.is_empty());
    assert!(snap.legacy_ttl_ms.unwrap() > 0);
}

#[test]
fn a_key_of_the_wrong_type_is_named() {
    let server = RedisServer::start();
    let t = tracker(&server);
    let c = Cancel::new();
    server.cli(&["LPUSH", "approval_sync:{mr_42_cannot_merge}:resets", "x"]);

    match t.start(&c, mr(42), &code_owner(A, B)) {
        Err(Error::WrongType { key, .. }) => {
            assert_eq!(key, "approval_sync:{mr_42_cannot_merge}:resets")
        }
        other => panic!("expected WrongType, got {other:?}"),
    }
    assert_eq!(keys(&server), ["approval_sync:{mr_42_cannot_merge}:resets"]);
}

#[test]
fn legacy_flag_is_gitlabs_key_and_ttl() {
    let server = RedisServer::start();
    let t = tracker(&server);
    let c = Cancel::new();

    t.legacy_set(&c, mr(42), 15).unwrap();
    assert_eq!(server.cli(&["GET", "mr_42_cannot_merge"]).trim(), "true");
    let ttl: i64 = server
        .cli(&["TTL", "mr_42_cannot_merge"])
        .trim()
        .parse()
        .unwrap();
    assert!((14..=15).contains(&ttl));
    assert!(t.legacy_exists(&c, mr(42)).unwrap());
    t.legacy_delete(&c, mr(42)).unwrap();
    assert!(keys(&server).is_empty());
}

#[test]
fn a_stalled_run_cannot_end_the_run_that_replaced_it() {
    let server = RedisServer::start();
    let t = tracker(&server);
    let c = Cancel::new();
    let base = 1_000_000_000_000;
    t.set_clock(Some(base));

    t.schedule(&c, mr(42), Some(A), B, &args(A, B)).unwrap();
    let first = t.reset_begin(&c, mr(42), Some(A), B, &args(A, B)).unwrap();
    assert_eq!(first.code, "run");

    // The first run stalls past its deadline; the entry is revived and run again.
    t.set_clock(Some(base + 301_000));
    assert_eq!(t.drain(&c, mr(42)).unwrap().jobs.len(), 1);
    let second = t.reset_begin(&c, mr(42), Some(A), B, &args(A, B)).unwrap();
    assert_eq!((second.code.as_str(), second.value), ("run", first.value));
    assert_ne!(second.due_at, first.due_at, "each run has its own token");

    let late = t
        .reset_finish_run(&c, mr(42), first.value as u64, Some(first.due_at), true)
        .unwrap();
    assert_eq!(late.code, "gone", "the stalled run ended the new one");

    t.start(&c, mr(42), &code_owner(B, C)).unwrap();
    let end = t
        .reset_finish_run(&c, mr(42), second.value as u64, Some(second.due_at), true)
        .unwrap();
    assert_eq!(end.code, "rerun", "the overlapped run must run again");
}

#[test]
fn the_markers_ttl_follows_the_latest_deadline() {
    let server = RedisServer::start();
    let t = tracker(&server);
    let c = Cancel::new();
    let markers = "approval_sync:{mr_42_cannot_merge}:markers";
    let pttl = || -> i64 { server.cli(&["PTTL", markers]).trim().parse().unwrap() };
    let base = 1_700_000_000_000;

    t.set_clock(Some(base));
    t.start(&c, mr(42), &code_owner(A, B)).unwrap();
    t.set_clock(Some(base + 100_000));
    t.start(&c, mr(42), &code_owner(C, D)).unwrap();
    // Latest deadline base + 400 s, one marker TTL past it: 600 s from now.
    assert!((590_000..=600_000).contains(&pttl()), "{}", pttl());

    // The earlier sync ends at base + 200 s: every write of the markers sets
    // their TTL anew, one marker TTL past the latest deadline (base + 400 s).
    t.set_clock(Some(base + 200_000));
    t.finish(&c, mr(42), &code_owner(A, B)).unwrap();
    assert!((490_000..=500_000).contains(&pttl()), "{}", pttl());

    // A sync starting now has the latest deadline (base + 500 s).
    t.start(&c, mr(42), &code_owner(A, B)).unwrap();
    assert!((590_000..=600_000).contains(&pttl()), "{}", pttl());
    t.finish(&c, mr(42), &code_owner(A, B)).unwrap();
    assert!((490_000..=500_000).contains(&pttl()), "{}", pttl());

    // A key that lost its TTL (a hand-made change) gets one at the next write.
    server.cli(&["PERSIST", markers]);
    t.start(&c, mr(42), &code_owner(A, B)).unwrap();
    assert!((590_000..=600_000).contains(&pttl()), "{}", pttl());
    t.finish(&c, mr(42), &code_owner(A, B)).unwrap();
    t.finish(&c, mr(42), &code_owner(C, D)).unwrap();
    assert!(keys(&server).is_empty());
}

#[test]
fn thousands_of_kept_resets_are_handed_out_in_one_finish() {
    let server = RedisServer::start();
    let t = tracker(&server);
    let c = Cancel::new();
    let base: u64 = 1_700_000_000_000;
    t.set_clock(Some(base));
    t.start(&c, mr(42), &code_owner(A, B)).unwrap();

    // More kept resets than one unpack() can pass to a command, seeded as a
    // schedule during the sync would have stored them.
    let n: u64 = 6000;
    let first = base * 1000 + 1;
    let mut fields: Vec<(String, String)> = (0..n)
        .map(|i| {
            let entry = format!("w|{}|0|{A}|{B}|[{i}]", base + 300_000);
            ((first + i).to_string(), entry)
        })
        .collect();
    fields.push(("seq".into(), (first + n - 1).to_string()));
    let mut con = redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let _: () = redis::cmd("HSET")
        .arg("approval_sync:{mr_42_cannot_merge}:resets")
        .arg(&fields)
        .query(&mut con)
        .unwrap();

    let out = t.finish(&c, mr(42), &code_owner(A, B)).unwrap();
    assert_eq!(out.jobs.len() as u64, n);
    for (i, job) in out.jobs.iter().enumerate() {
        assert_eq!(
            (job.id, job.args.as_str()),
            (first + i as u64, &*format!("[{i}]"))
        );
    }
    let snap = t.snapshot(&c, mr(42)).unwrap();
    assert_eq!(snap.entries.len() as u64, n);
    assert!(snap.entries.iter().all(|(_, raw)| raw.starts_with("q|")));
    assert_all_keys_expire(&server);
}

#[test]
fn a_finish_ends_the_live_instance_when_a_lower_one_died() {
    let server = RedisServer::start();
    let t = tracker(&server);
    let c = Cancel::new();
    let base: u64 = 1_700_000_000_000;

    // The same push synced twice: the first process dies, its retry runs.
    t.set_clock(Some(base));
    t.start(&c, mr(42), &code_owner(A, B)).unwrap();
    t.set_clock(Some(base + 100_000));
    assert_eq!(t.start(&c, mr(42), &code_owner(A, B)).unwrap().value, 2);
    t.set_clock(Some(base + 120_000));
    assert_eq!(
        t.schedule(&c, mr(42), Some(B), C, &args(B, C))
            .unwrap()
            .code,
        "kept"
    );

    // The retry ends after the first one's deadline: #1 is gone, #2 is its own.
    t.set_clock(Some(base + 310_000));
    let out = t.finish(&c, mr(42), &code_owner(A, B)).unwrap();
    assert_eq!(out.value, 1, "the live instance was found");
    assert_eq!(out.jobs.len(), 1, "the kept reset goes at once");
    assert!(t.snapshot(&c, mr(42)).unwrap().markers.is_empty());
}

/// Seeds one raw field of merge request 42's resets hash.
fn seed_entry(server: &RedisServer, field: &str, entry: &str) {
    server.cli(&[
        "HSET",
        "approval_sync:{mr_42_cannot_merge}:resets",
        field,
        entry,
    ]);
}

#[test]
fn new_entries_go_after_every_entry_present_even_without_seq() {
    let server = RedisServer::start();
    let t = tracker(&server);
    let c = Cancel::new();
    let base: u64 = 1_700_000_000_000;
    t.set_clock(Some(base));
    t.start(&c, mr(42), &code_owner(C, D)).unwrap();

    // A kept reset whose hash lost "seq", with an id the clock would give next
    // and one above it: neither may be overwritten or overtaken.
    for (id, old) in [(base * 1000 + 1, A), (base * 1000 + 500, B)] {
        let entry = format!("w|{}|0|{old}|{C}|{}", base + 300_000, args(old, C));
        seed_entry(&server, &id.to_string(), &entry);
    }
    t.schedule(&c, mr(42), Some(C), D, &args(C, D)).unwrap();
    let out = t.finish(&c, mr(42), &code_owner(C, D)).unwrap();
    let sent: Vec<&str> = out.jobs.iter().map(|j| j.args.as_str()).collect();
    assert_eq!(sent, [args(A, C), args(B, C), args(C, D)]);
}

#[test]
fn an_entry_under_a_field_that_is_no_id_is_reported_and_nothing_is_written() {
    let server = RedisServer::start();
    let t = tracker(&server);
    let c = Cancel::new();
    let entry = format!("w|1700000300000|0|{A}|{B}|{}", args(A, B));
    for field in ["abc", "0042", "1e3", "1.5", "12345678901234567890"] {
        server.cli(&["FLUSHALL"]);
        seed_entry(&server, field, &entry);
        match t.start(&c, mr(42), &code_owner(C, D)) {
            Err(Error::Protocol(text)) => {
                assert!(
                    text.starts_with("ASCORRUPT approval_sync:{mr_42_cannot_merge}:resets field"),
                    "{text}"
                );
                assert!(!text.contains("script"), "{text}");
            }
            other => panic!("field {field}: expected a protocol error, got {other:?}"),
        }
        assert_eq!(
            keys(&server),
            ["approval_sync:{mr_42_cannot_merge}:resets"],
            "field {field}"
        );
    }
}

#[test]
fn clear_forgets_a_merge_request_with_a_damaged_entry() {
    let server = RedisServer::start();
    let t = tracker(&server);
    let c = Cancel::new();
    t.start(&c, mr(42), &code_owner(A, B)).unwrap();
    seed_entry(&server, "77", "garbage");
    assert!(t.status(&c, mr(42), None).is_err());

    assert_eq!(t.clear(&c, mr(42)).unwrap().value, 1);
    assert!(keys(&server).is_empty());
}

#[test]
fn damaged_numbers_in_the_state_are_reported_before_anything_is_written() {
    let server = RedisServer::start();
    let t = tracker(&server);
    let c = Cancel::new();
    let resets = "approval_sync:{mr_42_cannot_merge}:resets";
    let markers = "approval_sync:{mr_42_cannot_merge}:markers";
    let entry = |state: &str, deadline: &str, dirty: &str| {
        format!("{state}|{deadline}|{dirty}|{A}|{B}|{}", args(A, B))
    };
    let hset = |field: &str, value: String| {
        vec![
            "HSET".to_string(),
            resets.to_string(),
            field.to_string(),
            value,
        ]
    };
    let cases = [
        (
            "a deadline past 2^53",
            hset("5", entry("q", "99999999999999999999", "0")),
        ),
        (
            "an unknown state",
            hset("5", entry("z", "1700000300000", "0")),
        ),
        (
            "a dirty flag of 7",
            hset("5", entry("r", "1700000300000", "7")),
        ),
        ("seq of 1e300", hset("seq", "1e300".into())),
        ("seq of 2^53", hset("seq", "9007199254740992".into())),
        (
            "a marker scored +inf",
            ["ZADD", markers, "+inf", "code_owner:x#1"]
                .map(String::from)
                .to_vec(),
        ),
    ];
    for (what, command) in cases {
        server.cli(&["FLUSHALL"]);
        server.cli(&command.iter().map(String::as_str).collect::<Vec<_>>());
        let before = keys(&server);
        match t.schedule(&c, mr(42), Some(C), D, &args(C, D)) {
            Err(Error::Protocol(text)) => assert!(text.starts_with("ASCORRUPT"), "{what}: {text}"),
            other => panic!("{what}: expected a protocol error, got {other:?}"),
        }
        assert_eq!(keys(&server), before, "{what}");
        assert!(t.clear(&c, mr(42)).is_ok(), "{what}: clear repairs it");
    }
}
