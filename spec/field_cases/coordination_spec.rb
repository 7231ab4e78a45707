# frozen_string_literal: true

require "spec_helper"
require "io/wait"
require "json"

module ApprovalSyncTest
  # Forked processes that use the gem and report back through a pipe.
  module Forks
    # Runs the block in a forked process and returns its value. The child uses
    # the gem as the parent configured it; its errors come back as strings.
    # With `wait_for`, the child first reads one byte from that pipe (a barrier).
    #
    # The parent collects its garbage first: a child that frees a native
    # tracker made before the fork hangs (see the C04 example on GC), and the
    # other cases must not depend on that bug.
    def in_child(wait_for: nil, ready: nil, timeout: 10, collect_garbage: true, &block)
      GC.start if collect_garbage
      reader, writer = IO.pipe
      pid = Process.fork { run_child(reader, writer, wait_for, ready, &block) }
      writer.close
      ForkedChild.new(pid, reader, timeout)
    end

    def run_child(reader, writer, wait_for, ready)
      reader.close
      result = begin
        ready&.write("r")
        wait_for&.read(1)
        [:ok, yield]
      rescue Exception => e # rubocop:disable Lint/RescueException -- everything must reach the parent
        [:error, "#{e.class}: #{e.message}"]
      end
      writer.write(Marshal.dump(result))
      writer.close
    ensure
      exit!(0)
    end

    # A forked child's handle: #value waits for its report.
    ForkedChild = Struct.new(:pid, :reader, :timeout) do
      def value
        unless reader.wait_readable(timeout)
          kill
          raise "child #{pid} did not report within #{timeout}s (killed)"
        end

        status, result = Marshal.load(reader.read) # rubocop:disable Security/MarshalLoad -- our own child
        raise "child #{pid} failed: #{result}" unless status == :ok

        result
      ensure
        reap
      end

      def kill
        Process.kill("KILL", pid)
        reap
      rescue Errno::ESRCH
        nil
      end

      def reap
        reader.close unless reader.closed?
        Process.wait(pid)
      rescue Errno::ECHILD
        nil
      end
    end
  end
end

# Field cases C01-C05 and C14 of the coordination protocol, on real Redis,
# with real threads and forked processes where the case needs them.
RSpec.describe "Field cases: coordination", :approval_sync_field_cases do
  include_context ApprovalSync::RSpec::FLAG_ON_CONTEXT
  include ApprovalSyncTest::Forks

  let(:ref) { ApprovalSyncTest::REF }
  let(:mr42) { ApprovalSyncTest::FakeMergeRequest.new(42, :project7) }
  let(:coordinator) { ApprovalSync::ApprovalRulesSyncCoordinator.new(mr42) }
  let(:state) { ApprovalSync::ApprovalState.new(mr42) }
  let(:worker) { approval_sync_worker_spy }
  let(:push_ab) { { oldrev: rev(:aaa111), newrev: rev(:bbb222) } }
  let(:push_bc) { { oldrev: rev(:bbb222), newrev: rev(:ccc333) } }
  let(:push_cd) { { oldrev: rev(:ccc333), newrev: rev(:ddd444) } }

  before { worker }

  def schedule(push)
    coordinator.schedule_reset_approvals!(project_id: 7, user_id: 9, ref: ref, **push)
  end

  def args_of(push)
    [7, 9, ref, push[:newrev], push[:oldrev]]
  end

  # MR 43 as a bystander: a legacy flag, a sync in progress and a kept reset.
  def set_up_bystander
    other = ApprovalSync::ApprovalRulesSyncCoordinator.new(43)
    ApprovalSync::ApprovalState.new(43).temporarily_unapprove!(300)
    other.start_code_owner_sync!(**push_ab)
    other.schedule_reset_approvals!(project_id: 7, user_id: 9, ref: ref, **push_ab)
    worker.clear
    bystander_state
  end

  # Values of MR 43's keys (DUMP leaves out the TTL, which must only tick down).
  def bystander_state
    keys = redis.keys("*43*").sort
    keys.to_h { |key| [key, redis.dump(key)] }
  end

  describe "C01 two overlapping syncs" do
    it "enqueues nothing before the last finish, then exactly once with the params unchanged" do
      bystander = set_up_bystander
      coordinator.start_code_owner_sync!(**push_ab)
      coordinator.start_code_owner_sync!(**push_bc)
      expect(schedule(push_bc)).to eq(:kept)
      expect(worker.calls).to be_empty
      coordinator.finish_code_owner_sync!(**push_ab)
      expect(worker.calls).to be_empty
      expect(coordinator).to have_pending_reset_approvals.with(*args_of(push_bc)).count(1)
      expect(state.temporarily_unapproved?).to be(true)
      coordinator.finish_code_owner_sync!(**push_bc)
      expect(worker.calls.map(&:to_s)).to eq(["perform_async(7, 9, #{ref.inspect}, #{rev(:ccc333).inspect}, " \
                                              "#{rev(:bbb222).inspect})"])
      ran = worker.drain { |*args| coordinator.reset_approvals!(**reset_kwargs(args)) { nil } }
      expect(ran).to eq(1)
      expect(worker.calls.size).to eq(1)
      expect(redis.keys("*42*")).to be_empty
      expect(state.temporarily_unapproved?).to be(false)
      expect(bystander_state).to eq(bystander)
      expect(redis.keys("*43*").map { |key| redis.pttl(key) }).to all(be > 0)
    end
  end

  # The worker's perform(project_id, user_id, ref, newrev, oldrev) as keywords.
  def reset_kwargs(args)
    project_id, user_id, ref, newrev, oldrev = args
    { project_id: project_id, user_id: user_id, ref: ref, newrev: newrev, oldrev: oldrev }
  end

  describe "C02 every range kept" do
    it "enqueues the three resets of one sync in push order, each with its own range" do
      coordinator.start_code_owner_sync!(**push_ab)
      [push_ab, push_bc, push_cd].each { |push| expect(schedule(push)).to eq(:kept) }
      expect(coordinator).to have_pending_reset_approvals.count(3)
      expect(worker.calls).to be_empty
      coordinator.finish_code_owner_sync!(**push_ab)
      expect(worker.async_args).to eq([args_of(push_ab), args_of(push_bc), args_of(push_cd)])
      expect(worker.delayed_args).to be_empty
    end

    it "keeps the same range scheduled twice as two resets (a retried push job)" do
      coordinator.start_code_owner_sync!(**push_ab)
      2.times { schedule(push_bc) }
      coordinator.finish_code_owner_sync!(**push_ab)
      expect(worker).to have_enqueued_reset_approvals(*args_of(push_bc)).twice
    end
  end

  describe "C03 the 15 s flag is not the guard" do
    it "stays temporarily unapproved after the legacy key expired, until the sync finishes" do
      state.temporarily_unapprove!(15)
      coordinator.start_code_owner_sync!(**push_ab)
      redis.pexpire(ApprovalSyncTest::LEGACY, 1)
      eventually { !redis.exists?(ApprovalSyncTest::LEGACY) }
      expect(state.temporarily_unapproved?).to be(true)
      expect(state).to be_syncing_approvals
      coordinator.finish_code_owner_sync!(**push_ab)
      expect(state.temporarily_unapproved?).to be(false)
    end

    it "never calls perform_in with the flag on, whatever the order of calls" do
      schedule(push_ab)
      coordinator.sync_code_owners!(**push_bc) { schedule(push_bc) }
      coordinator.start_code_owner_sync!
      schedule(push_cd)
      coordinator.finish_code_owner_sync!
      worker.drain { |*args| coordinator.reset_approvals!(**reset_kwargs(args)) { nil } }
      expect(worker.calls.map(&:method_name).uniq).to eq([:perform_async])
      expect(worker.async_args).to eq([args_of(push_ab), args_of(push_bc), args_of(push_cd)])
      expect(redis_keys).to be_empty
    end
  end

  describe "C04 create flow across processes" do
    it "is seen at once by a forked process and cleared by the worker's finish in another" do
      coordinator.start_code_owner_sync!
      seen = in_child { ApprovalSync::ApprovalState.new(42).any_approval_rules_syncing? }.value
      expect(seen).to be(true)
      found = in_child do
        ApprovalSync::ApprovalRulesSyncCoordinator.new(42).finish_code_owner_sync!
        ApprovalSync::ApprovalState.new(42).any_approval_rules_syncing?
      end.value
      expect(found).to be(false)
      expect(coordinator).not_to be_syncing_approvals
      expect(redis_keys).to be_empty
    end

    it "clears a start that is never finished after the safety TTL" do
      ApprovalSync.configure do |config|
        config.marker_ttl = 1
        config.pending_ttl = 3
      end
      ready_reader, ready_writer = IO.pipe
      child = in_child(ready: ready_writer) do
        ApprovalSync::ApprovalRulesSyncCoordinator.new(42).start_code_owner_sync!
        sleep # the web request dies here
      end
      ready_writer.close
      eventually { redis.exists?(ApprovalSyncTest::MARKERS) }
      child.kill
      expect(coordinator).to be_syncing_approvals
      started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
      eventually(timeout: 3) { !state.any_approval_rules_syncing? }
      expect(Process.clock_gettime(Process::CLOCK_MONOTONIC) - started).to be < 2.5
      eventually(timeout: 2) { redis_keys.empty? }
    ensure
      child&.kill
      ready_reader&.close
    end

    it "does not hang a forked worker that frees a connection made before the fork" do
      ApprovalSync.tracker.ping
      ApprovalSync.configure { |config| config.read_timeout = 1.0 } # the old tracker becomes garbage
      coordinator.start_code_owner_sync!
      child = in_child(timeout: 5, collect_garbage: false) do
        GC.start
        ApprovalSync::ApprovalRulesSyncCoordinator.new(42).finish_code_owner_sync!
        :finished
      end
      expect(child.value).to eq(:finished)
      expect(redis_keys).to be_empty
    ensure
      child&.kill
    end

    it "leaves nothing behind after two starts (a retried request) and one finish" do
      coordinator.start_code_owner_sync!
      in_child { ApprovalSync::ApprovalRulesSyncCoordinator.new(42).start_code_owner_sync! }.value
      expect(redis.zrange(ApprovalSyncTest::MARKERS, 0, -1)).to eq(["code_owner:create#1"])
      in_child { ApprovalSync::ApprovalRulesSyncCoordinator.new(42).finish_code_owner_sync! }.value
      expect(redis_keys).to be_empty
      expect(state.temporarily_unapproved?).to be(false)
    end
  end

  describe "C05 the last finish is an event" do
    # A worker whose enqueues land in a Redis list, so those of a forked
    # process count as well as this process's.
    let(:list_worker) do
      url = ApprovalSyncTest::Suite.redis_url
      Class.new do
        define_singleton_method(:perform_async) do |*args|
          Redis.new(url: url).tap { |r| r.rpush("spec:enqueued", JSON.generate(args)) }.close
        end
        define_singleton_method(:perform_in) do |*args|
          Redis.new(url: url).tap { |r| r.rpush("spec:delayed", JSON.generate(args)) }.close
        end
      end
    end

    it "does nothing on the first finish and enqueues once on the last" do
      coordinator.start_code_owner_sync!(**push_ab)
      coordinator.start_code_owner_sync!(**push_bc)
      schedule(push_bc)
      expect(state.finish_approval_rules_sync!("code_owner:#{rev(:aaa111)}:#{rev(:bbb222)}")).to be(true)
      expect(worker.calls).to be_empty
      coordinator.finish_code_owner_sync!(**push_bc)
      expect(worker).to have_enqueued_reset_approvals(*args_of(push_bc)).once
      coordinator.finish_code_owner_sync!(**push_bc)
      expect(worker.calls.size).to eq(1)
    end

    # Threads blocked on the barrier, each to finish one push's sync.
    def finishers_waiting_on(barrier, pushes)
      threads = pushes.map do |push|
        Thread.new do
          barrier.read(1)
          ApprovalSync::ApprovalRulesSyncCoordinator.new(42).finish_code_owner_sync!(**push)
        end
      end
      eventually(interval: 0.005) { threads.all? { |thread| thread.status == "sleep" } }
      threads
    end

    # Finishes A in a forked child and A and B in two threads, released together.
    def race_last_finishes
      go_reader, go_writer = IO.pipe
      ready_reader, ready_writer = IO.pipe
      child = in_child(wait_for: go_reader, ready: ready_writer) do
        ApprovalSync::ApprovalRulesSyncCoordinator.new(42).finish_code_owner_sync!(**push_ab)
      end
      ready_writer.close
      raise "the child did not get ready" unless ready_reader.wait_readable(10)

      ready_reader.read(1)
      threads = finishers_waiting_on(go_reader, [push_ab, push_bc])
      go_writer.write("go!")
      threads.each(&:join)
      child.value
    ensure
      # Releases whoever still waits after a failure; spare bytes are harmless.
      go_writer.write("go!")
      child&.kill
      [go_reader, go_writer, ready_reader].each(&:close)
    end

    it "enqueues exactly once when two threads and a forked process finish the last two members at once" do
      ApprovalSync.config.reset_approvals_worker = list_worker
      20.times do |round|
        redis.flushdb
        coordinator.start_code_owner_sync!(**push_ab)
        coordinator.start_code_owner_sync!(**push_bc)
        schedule(push_cd)
        race_last_finishes
        enqueued = redis.lrange("spec:enqueued", 0, -1).map { |json| JSON.parse(json) }
        expect(enqueued).to eq([args_of(push_cd)]), "round #{round}: #{enqueued.inspect}"
        expect(redis.llen("spec:delayed")).to eq(0)
        expect(redis.exists?(ApprovalSyncTest::MARKERS)).to be(false)
      end
    end

    it "lets no reader memoize: a reader that saw no sync sees one another process started" do
      reader = ApprovalSync::ApprovalState.new(mr42)
      expect(reader.any_approval_rules_syncing?).to be(false)
      expect(reader.temporarily_unapproved?).to be(false)
      in_child { ApprovalSync::ApprovalRulesSyncCoordinator.new(42).start_code_owner_sync!(**push_ab) }.value
      expect(reader.any_approval_rules_syncing?).to be(true)
      expect(reader.temporarily_unapproved?).to be(true)
      in_child { ApprovalSync::ApprovalRulesSyncCoordinator.new(42).finish_code_owner_sync!(**push_ab) }.value
      expect(reader.any_approval_rules_syncing?).to be(false)
    end
  end

  describe "C14 enqueue fails after the read-and-clear" do
    it "keeps the params when perform_async raises on the last finish, and a later read enqueues them once" do
      coordinator.start_code_owner_sync!(**push_ab)
      schedule(push_bc)
      worker.fail_next(RuntimeError.new("Sidekiq's Redis is down"))
      expect { coordinator.finish_code_owner_sync!(**push_ab) }
        .to raise_error(ApprovalSync::EnqueueError, /Sidekiq's Redis is down/)
      expect(worker.calls).to be_empty
      expect(coordinator).to have_pending_reset_approvals.with(*args_of(push_bc)).count(1)
      expect(log_output).to match(/^E, .*event=enqueue_failed merge_request_id=42 kept=1/)
      expect(state.temporarily_unapproved?).to be(true)
      expect(worker).to have_enqueued_reset_approvals(*args_of(push_bc)).once
      3.times { state.temporarily_unapproved? }
      coordinator.schedule_reset_approvals!(project_id: 7, user_id: 9, ref: ref, **push_cd)
      expect(worker).to have_enqueued_reset_approvals(*args_of(push_bc)).once
      expect(worker.async_args).to eq([args_of(push_bc), args_of(push_cd)])
    end

    it "keeps only the unsent ones when perform_async fails in the middle, and the sweep sends them once" do
      coordinator.start_code_owner_sync!(**push_ab)
      [push_ab, push_bc, push_cd].each { |push| schedule(push) }
      failures = 0
      spy = worker
      failing = args_of(push_bc)
      flaky = Object.new
      flaky.define_singleton_method(:perform_in) { |*args| spy.perform_in(*args) }
      flaky.define_singleton_method(:perform_async) do |*args|
        raise "timeout" if args == failing && (failures += 1) == 1

        spy.perform_async(*args)
      end
      ApprovalSync.config.reset_approvals_worker = flaky
      expect { coordinator.finish_code_owner_sync!(**push_ab) }.to raise_error(ApprovalSync::EnqueueError)
      expect(worker.async_args).to eq([args_of(push_ab)])
      expect(coordinator).to have_pending_reset_approvals.count(2)
      expect(ApprovalSync.sweep!).to include(enqueued: 2)
      expect(worker.async_args).to eq([args_of(push_ab), args_of(push_bc), args_of(push_cd)])
      expect(ApprovalSync.sweep!).to include(enqueued: 0)
      state.temporarily_unapproved?
      expect(worker.async_args.size).to eq(3)
    end

    it "keeps the reset when perform_async raises on an immediate schedule" do
      worker.fail_next
      expect { schedule(push_ab) }.to raise_error(ApprovalSync::EnqueueError)
      expect(coordinator).to have_pending_reset_approvals.with(*args_of(push_ab)).count(1)
      expect(ApprovalSync.sweep!).to include(enqueued: 1)
      expect(worker.async_args).to eq([args_of(push_ab)])
      state.temporarily_unapproved?
      expect(worker.async_args).to eq([args_of(push_ab)])
    end
  end
end
