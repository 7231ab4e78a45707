//! Exhaustive interleavings of up to three pushes on one merge request, each
//! step the real script on a real redis-server (see tests/model/mod.rs).

mod common;
mod model;

use common::RedisServer;
use model::{explore, Faults, Variant};

fn pass(pushes: usize) -> model::Stats {
    let server = RedisServer::start();
    match explore(&server.url(), pushes, Variant::Real, Faults::claimed()) {
        Ok(stats) => stats,
        Err(v) => panic!("{v}"),
    }
}

#[test]
fn one_push_every_interleaving_keeps_the_invariants() {
    let stats = pass(1);
    assert!(stats.states > 10, "{stats:?}");
}

#[test]
fn two_pushes_every_interleaving_keeps_the_invariants() {
    let stats = pass(2);
    assert!(stats.interleavings > 1000.0, "{stats:?}");
}

#[test]
fn three_pushes_every_interleaving_keeps_the_invariants() {
    let server = RedisServer::start();
    // Raising resets are covered with two pushes; with three they would take
    // the run past ten minutes. CHECKER_RAISES / CHECKER_FAILS widen the bound.
    let raises = std::env::var("CHECKER_RAISES").map_or(0, |v| v.parse().unwrap());
    let fails = std::env::var("CHECKER_FAILS").map_or(1, |v| v.parse().unwrap());
    let faults = faults_with(|f| {
        f.raises = raises;
        f.enqueue_failures = fails;
    });
    let stats = match explore(&server.url(), 3, Variant::Real, faults) {
        Ok(stats) => stats,
        Err(v) => panic!("{v}"),
    };
    assert!(stats.states > 10_000, "{stats:?}");
}

#[test]
fn check_then_store_scheduling_is_caught() {
    let server = RedisServer::start();
    let out = explore(&server.url(), 2, Variant::CheckThenStore, Faults::claimed());
    let violation = out.expect_err("the checker missed the check-then-store race");
    eprintln!("{violation}");
    assert!(violation.what.contains("lost"), "{violation}");
}

#[test]
fn a_reset_that_skips_reset_begin_is_caught() {
    let server = RedisServer::start();
    let out = explore(
        &server.url(),
        2,
        Variant::UncheckedWorker,
        Faults::claimed(),
    );
    let violation = out.expect_err("the checker missed an unchecked reset");
    eprintln!("{violation}");
    assert!(violation.what.contains("sync was active"), "{violation}");
}

fn faults_with(f: impl FnOnce(&mut Faults)) -> Faults {
    let mut faults = Faults::claimed();
    f(&mut faults);
    faults
}

/// For the known gaps below: the checker's trace is the failure message.
fn expect_no_violation(pushes: usize, faults: Faults) {
    let server = RedisServer::start();
    if let Err(v) = explore(&server.url(), pushes, Variant::Real, faults) {
        panic!("{v}");
    }
}

/// A worker killed mid-run: its entry passes its deadline, is revived and
/// the sweep finds it through the index.
#[test]
fn a_killed_reset_worker_is_recovered_by_the_sweep() {
    expect_no_violation(2, faults_with(|f| f.worker_kill = true));
}

/// A process killed after a script handed it jobs and before perform_async:
/// the queued entries pass their deadline and are enqueued again.
#[test]
fn a_crash_before_perform_async_loses_nothing() {
    expect_no_violation(2, faults_with(|f| f.crash_before_enqueue = true));
}

/// Two failed enqueues in a row, with the sweep about: the sweep's drain
/// settles the index in the same step, so no put-back is dropped from it.
#[test]
fn two_failed_enqueues_lose_nothing() {
    expect_no_violation(2, faults_with(|f| f.enqueue_failures = 2));
}
