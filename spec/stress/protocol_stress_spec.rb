# frozen_string_literal: true

require "fileutils"
require "json"
require "spec_helper"

# Randomised stress on a real Redis through the public API: pushes in threads
# and in forked processes (some SIGKILLed mid-sync), a Sidekiq stand-in that
# records every perform_async, consumers that run the resets, then expiry and
# the sweep. Every event is written to Redis with the server's clock, so the
# checks at the end compare one timeline. Replay a failure with SEED=<n>.
module ProtocolStress
  MRS = 20
  PUSHES_PER_MR = 15
  MARKER_TTL = 1.0
  PENDING_TTL = 4.0
  RAISE_RATE = 0.05
  ENQUEUE_FAILURE_RATE = 0.02
  KILL_RATE = 0.3
  QUEUE = "stress:queue"
  LOG = "stress:log"

  # Sidekiq's stand-in: each job goes to a Redis list, so forked processes
  # share one queue. It raises now and then, like a Redis blip would.
  module Worker
    class << self
      attr_accessor :failure_rate

      def perform_async(*args)
        raise IOError, "stress: perform_async failed" if rand < failure_rate.to_f

        Stress.redis.rpush(QUEUE, JSON.generate(args))
        Stress.log("enqueue", args[0], args[3])
      end

      def perform_in(_delay, *args)
        perform_async(*args)
      end
    end
  end

  # Remembers the last event this thread saw, so a run can tell done from rerun.
  class Instrumenter
    def instrument(name, _payload)
      Thread.current[:stress_event] = name.delete_suffix(".approval_sync")
    end
  end

  # A stop flag the threads poll.
  class Flag
    def initialize
      @set = false
    end

    def true?
      @set
    end

    def make_true
      @set = true
    end
  end

  # Bookkeeping shared by the processes.
  module Stress
    class << self
      def redis
        @redis = nil if @pid != Process.pid
        @pid = Process.pid
        @redis ||= Redis.new(url: ApprovalSyncTest::Suite.redis_url)
      end

      # Server time in microseconds: one clock for every process.
      def now_us
        sec, usec = redis.time
        (sec * 1_000_000) + usec
      end

      def log(kind, mr_id, newrev, **extra)
        redis.rpush(LOG,
                    JSON.generate({ kind: kind, mr: mr_id, rev: newrev, at: now_us, pid: Process.pid }.merge(extra)))
      end
    end
  end

  module_function

  def rev(mr_id, push)
    format("%040x", (mr_id * 1000) + push + 1)
  end

  # One push: a code-owner sync with the reset scheduled inside it, as the
  # push flow does. The sync's own window is logged from inside the block.
  # A process to be killed stops at `hang` (:before_schedule or
  # :after_schedule), tells the parent through `ready` and waits for SIGKILL.
  def push(mr_id, index, rng, hang: nil, ready: nil)
    oldrev = rev(mr_id, index)
    newrev = rev(mr_id, index + 1)
    coordinator = ApprovalSync::ApprovalRulesSyncCoordinator.new(mr_id)
    Stress.log("sync_call", mr_id, newrev)
    coordinator.sync_code_owners!(oldrev: oldrev, newrev: newrev) do
      Stress.log("sync_begin", mr_id, newrev)
      sleep(rng.rand(0.0..0.03))
      wait_for_kill(ready) if hang == :before_schedule
      begin
        coordinator.schedule_reset_approvals!(project_id: mr_id, user_id: 1, ref: "refs/heads/f#{mr_id}",
                                              newrev: newrev, oldrev: oldrev)
        Stress.log("scheduled", mr_id, newrev)
      rescue ApprovalSync::EnqueueError
        Stress.log("scheduled", mr_id, newrev, put_back: true)
      end
      wait_for_kill(ready) if hang == :after_schedule
      sleep(rng.rand(0.0..0.03))
      Stress.log("sync_end", mr_id, newrev)
    end
  rescue ApprovalSync::EnqueueError
    nil # the finish's enqueue failed; the resets were put back
  end

  def wait_for_kill(ready)
    ready.write("x")
    ready.flush
    sleep 30
  end

  # One job, as the reset worker runs it. A raise goes back to the queue,
  # as Sidekiq's retry would.
  def consume(job, rng)
    project_id, user_id, ref, newrev, oldrev = JSON.parse(job)
    coordinator = ApprovalSync::ApprovalRulesSyncCoordinator.new(project_id)
    Thread.current[:stress_event] = nil
    raised = false
    ran = begin
      coordinator.reset_approvals!(project_id: project_id, user_id: user_id, ref: ref, newrev: newrev,
                                   oldrev: oldrev) do
        begin_us = Stress.now_us
        sleep(rng.rand(0.0..0.02))
        raised = rng.rand < RAISE_RATE
        end_us = Stress.now_us
        Thread.current[:stress_run] = [begin_us, end_us]
        raise "stress: the reset raised" if raised
      end
    rescue ApprovalSync::EnqueueError
      true
    rescue RuntimeError
      Stress.redis.rpush(QUEUE, job)
      true
    end
    ran ? log_run(project_id, newrev, raised) : Stress.log("waited", project_id, newrev)
  end

  def log_run(mr_id, newrev, raised)
    begin_us, end_us = Thread.current[:stress_run]
    Stress.log("run", mr_id, newrev, from: begin_us, to: end_us, raised: raised,
                                     event: Thread.current[:stress_event])
  end
end

RSpec.describe "protocol stress", :slow do
  include ProtocolStress

  let(:seed) { Integer(ENV.fetch("SEED", Random.new_seed % 1_000_000)) }
  let(:errors) { Queue.new }

  before do
    ApprovalSync.configure do |c|
      c.deterministic_sync = ->(_mr) { true }
      c.reset_approvals_worker = ProtocolStress::Worker
      c.instrumenter = ProtocolStress::Instrumenter.new
      c.marker_ttl = ProtocolStress::MARKER_TTL
      c.pending_ttl = ProtocolStress::PENDING_TTL
      c.logger = nil
    end
    ProtocolStress::Worker.failure_rate = ProtocolStress::ENQUEUE_FAILURE_RATE
  end

  after { ProtocolStress::Worker.failure_rate = 0 }

  def consumers(count, rng_seed, stop)
    Array.new(count) do |i|
      Thread.new do
        rng = Random.new(rng_seed + i)
        redis = Redis.new(url: ApprovalSyncTest::Suite.redis_url)
        until stop.true?
          _, job = redis.blpop(ProtocolStress::QUEUE, timeout: 0.1)
          ProtocolStress.consume(job, rng) if job
        end
      rescue StandardError => e
        errors << e
      ensure
        redis&.close
      end
    end
  end

  # Scans every tracking key now and then: none may live without a TTL.
  def ttl_watch(stop, untimed)
    Thread.new do
      redis = Redis.new(url: ApprovalSyncTest::Suite.redis_url)
      until stop.true?
        redis.scan_each(match: "approval_sync:*") { |key| untimed << key if redis.pttl(key) == -1 }
        sleep 0.01
      end
    ensure
      redis&.close
    end
  end

  # Pushes in forked children (some killed mid-sync) and in parent threads.
  def run_pushes(rng)
    work = (1..ProtocolStress::MRS).to_a.product((0...ProtocolStress::PUSHES_PER_MR).to_a).shuffle(random: rng)
    work.each_slice(12).sum do |slice|
      forked, threaded = slice.partition { rng.rand < 0.5 }
      children = forked.map { |mr_id, index| fork_push(mr_id, index, rng) }
      threads = threaded.map do |mr_id, index|
        thread_seed = rng.rand(1 << 30)
        Thread.new { ProtocolStress.push(mr_id, index, Random.new(thread_seed)) }
      end
      killed = children.count { |child| kill_and_reap(*child) }
      threads.each(&:join)
      killed
    end
  end

  # A child that will be killed stops mid-sync (before or after scheduling)
  # and says so through a pipe.
  def fork_push(mr_id, index, rng)
    child_seed = rng.rand(1 << 30)
    hang = (%i[before_schedule after_schedule].sample(random: rng) if rng.rand < ProtocolStress::KILL_RATE)
    reader, writer = IO.pipe
    pid = fork do
      reader.close
      ProtocolStress.push(mr_id, index, Random.new(child_seed), hang: hang, ready: writer)
      exit!(0)
    rescue Exception # rubocop:disable Lint/RescueException -- a child must never run the parent's at_exit
      exit!(1)
    end
    writer.close
    [pid, hang, reader]
  end

  # SIGKILL exactly mid-sync, once the child reached its point. True if killed.
  def kill_and_reap(pid, hang, reader)
    killed = hang && reader.wait_readable(10) ? Process.kill(:KILL, pid).positive? : false
    reader.close
    reap(pid) || killed
  end

  # Waits for a child; one stuck (say, on a lock another thread held at fork
  # time) is killed after 10 s and counts as a crashed sync. True if killed.
  def reap(pid)
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + 10
    until Process.wait(pid, Process::WNOHANG)
      if Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline
        Process.kill(:KILL, pid)
        Process.wait(pid)
        return true
      end
      sleep 0.005
    end
    false
  end

  def events
    redis.lrange(ProtocolStress::LOG, 0, -1).map { |line| JSON.parse(line) }
  end

  it "keeps every invariant under threads, forks, kills and faults" do
    warn "protocol stress: SEED=#{seed}"
    rng = Random.new(seed)
    stop = ProtocolStress::Flag.new
    untimed = Queue.new
    started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    workers = consumers(4, rng.rand(1 << 30), stop)
    watch = ttl_watch(stop, untimed)

    killed = run_pushes(rng)

    # Every crashed sync's marker expires; then the sweep and lazy reads
    # must bring every kept reset home.
    ProtocolStress::Worker.failure_rate = 0
    sleep ProtocolStress::MARKER_TTL + 0.2
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + 20
    loop do
      ApprovalSync.sweep!(limit: 1000)
      quiet = redis.llen(ProtocolStress::QUEUE).zero? && redis.keys("approval_sync:*").empty?
      break if quiet || Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline

      sleep 0.2
    end
    sleep 0.3 # let the last run log itself
    stop.make_true
    (workers + [watch]).each(&:join)
    raise errors.pop unless errors.empty?

    log = events
    dump = File.expand_path("../../tmp/protocol_stress_events.jsonl", __dir__)
    FileUtils.mkdir_p(File.dirname(dump))
    File.write(dump, log.map { |e| JSON.generate(e) }.join("\n"))
    scheduled = log.select { |e| e["kind"] == "scheduled" }.map { |e| [e["mr"], e["rev"]] }.uniq
    calls = log.select { |e| e["kind"] == "sync_call" }.to_h { |e| [[e["mr"], e["rev"]], e["at"]] }
    ends = log.select { |e| e["kind"] == "sync_end" }.to_h { |e| [[e["mr"], e["rev"]], e["at"]] }
    ttl_us = (ProtocolStress::MARKER_TTL * 1_000_000).to_i
    # A sync is active from inside its block until its end, or, killed, until
    # its marker expired (its deadline is after the call began + marker_ttl).
    windows = log.select { |e| e["kind"] == "sync_begin" }.map do |e|
      key = [e["mr"], e["rev"]]
      [e["mr"], e["at"], ends.fetch(key) { calls.fetch(key) + ttl_us }]
    end
    slow = windows.count { |_, from, to| to - from > ttl_us }
    runs = log.select { |e| e["kind"] == "run" }
    done = runs.select { |r| r["event"] == "reset_done" }
    overlapping = done.select do |r|
      windows.any? { |mr, from, to| mr == r["mr"] && from < r["to"] && r["from"] < to }
    end
    done_counts = done.group_by { |r| [r["mr"], r["rev"]] }.transform_values(&:size)
    lost = scheduled.reject { |key| done_counts[key] }
    twice = done_counts.select { |_, n| n > 1 }
    # Every job is consumed once, so a call for a push after its clean
    # completion means its reset was enqueued twice.
    first_done = done.group_by { |r| [r["mr"], r["rev"]] }.transform_values { |rs| rs.map { |r| r["to"] }.min }
    late_calls = log.select do |e|
      at = first_done[[e["mr"], e["rev"]]]
      at && ((e["kind"] == "run" && e["from"] > at) || (e["kind"] == "waited" && e["at"] > at))
    end
    leftover = redis.keys("approval_sync:*")
    untimed_keys = []
    untimed_keys << untimed.pop until untimed.empty?

    elapsed = Process.clock_gettime(Process::CLOCK_MONOTONIC) - started
    warn format("protocol stress: SEED=%<seed>d, %<pushes>d pushes (%<scheduled>d scheduled, %<killed>d kills), " \
                "%<runs>d runs (%<done>d clean), %<waits>d waits, %<slow>d syncs longer than marker_ttl, %<t>.1f s",
                seed: seed, pushes: calls.size, scheduled: scheduled.size, killed: killed, runs: runs.size,
                done: done.size, waits: log.count { |e| e["kind"] == "waited" }, slow: slow, t: elapsed)

    aggregate_failures("SEED=#{seed}") do
      expect(scheduled.size).to be > 100
      expect(lost).to be_empty, "resets never completed cleanly: #{lost.first(5)}"
      expect(overlapping).to be_empty, "clean runs that overlapped a sync: #{overlapping.first(3)}" if slow.zero?
      expect(twice).to be_empty, "pushes reset cleanly more than once: #{twice.first(5)}"
      expect(late_calls).to be_empty, "reset jobs after a clean completion: #{late_calls.first(3)}"
      expect(leftover).to be_empty
      expect(untimed_keys.uniq).to be_empty, "keys seen without a TTL"
      expect(elapsed).to be < 90
    end
  end
end
