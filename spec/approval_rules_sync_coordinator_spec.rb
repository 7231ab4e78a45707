# frozen_string_literal: true

require "spec_helper"
require "timeout"

RSpec.describe ApprovalSync::ApprovalRulesSyncCoordinator do
  let(:project) { Object.new }
  let(:merge_request) { ApprovalSyncTest::FakeMergeRequest.new(42, project) }
  let(:coordinator) { described_class.new(merge_request) }
  let(:worker) { approval_sync_worker_spy }
  let(:legacy) { ApprovalSyncTest::LEGACY }
  let(:markers) { ApprovalSyncTest::MARKERS }
  let(:resets) { ApprovalSyncTest::RESETS }
  let(:due_index) { ApprovalSyncTest::DUE }
  let(:ref) { ApprovalSyncTest::REF }
  let(:push_a) { { oldrev: rev(:aaa111), newrev: rev(:bbb222) } }
  let(:push_b) { { oldrev: rev(:bbb222), newrev: rev(:ccc333) } }

  before { worker }

  # The reset of one push, as the push flow schedules it.
  def schedule(push = push_a, **overrides)
    coordinator.schedule_reset_approvals!(project_id: 7, user_id: 9, ref: ref, **push, **overrides)
  end

  # The reset worker's side of one push.
  def reset(push = push_a, &)
    coordinator.reset_approvals!(project_id: 7, user_id: 9, ref: ref, **push, &)
  end

  # The worker arguments of one push: project, user, ref, newrev, oldrev.
  def args_of(push)
    [7, 9, ref, push[:newrev], push[:oldrev]].compact
  end

  def every_key_has_a_ttl
    redis_keys.each { |key| expect(redis.pttl(key)).to be > 0, "#{key} has no TTL" }
  end

  approval_sync_flag_states do |enabled|
    after do
      every_key_has_a_ttl
      expect(worker.calls.map(&:method_name)).not_to include(:perform_in) if enabled
    end

    describe "#sync_code_owners!" do
      it "runs the block between start and finish and returns its value" do
        seen = nil
        result = coordinator.sync_code_owners!(**push_a) do
          seen = [redis_keys, redis.zrange(markers, 0, -1)]
          :synced
        end
        expect(result).to eq(:synced)
        if enabled
          expect(seen).to eq([[markers], ["code_owner:#{rev(:aaa111)}:#{rev(:bbb222)}#1"]])
        else
          expect(seen).to eq([[], []])
        end
        expect(redis_keys).to be_empty
        expect(worker.calls).to be_empty
      end

      it "finishes the sync when the block raises, and re-raises the block's error" do
        error = Class.new(StandardError)
        expect { coordinator.sync_code_owners!(**push_a) { raise error, "boom" } }.to raise_error(error, "boom")
        expect(redis_keys).to be_empty
        expect(coordinator).not_to be_syncing_approvals
      end

      # Ruby 3.1's Timeout unwinds the block with throw: only an ensure clause runs.
      it "finishes the sync when Timeout.timeout interrupts the block" do
        expect { Timeout.timeout(0.2) { coordinator.sync_code_owners!(**push_a) { sleep } } }
          .to raise_error(Timeout::Error)
        expect(redis_keys).to be_empty
      end

      # Thread#kill raises nothing: only an ensure clause runs on the way out.
      it "finishes the sync when the thread is killed inside the block" do
        inside = Queue.new
        thread = Thread.new { coordinator.sync_code_owners!(**push_a) { (inside << true) && sleep } }
        inside.pop
        thread.kill.join(2)
        expect(redis_keys).to be_empty
      end

      it "needs a block and both revs, and checks them before running anything" do
        expect { coordinator.sync_code_owners!(**push_a) }.to raise_error(ArgumentError)
        ApprovalSyncTest::BAD_REVS.each do |bad|
          ran = false
          expect { coordinator.sync_code_owners!(oldrev: bad, newrev: rev(:bbb222)) { ran = true } }
            .to raise_error(bad_argument), bad.inspect[0, 60]
          expect { coordinator.sync_code_owners!(oldrev: rev(:aaa111), newrev: bad) { ran = true } }
            .to raise_error(bad_argument), bad.inspect[0, 60]
          expect(ran).to be(false)
        end
        expect(redis_keys).to be_empty
      end

      it "enqueues the resets kept during the sync once it finishes, with perform_async" do
        coordinator.sync_code_owners!(**push_a) do
          expect(schedule(push_a)).to eq(enabled ? :kept : :delayed)
          expect(worker.calls).to be_empty if enabled
        end
        if enabled
          expect(worker).to have_enqueued_reset_approvals(*args_of(push_a)).once
          expect(redis_keys).to eq([due_index, resets])
          expect(kept(42).map(&:state)).to eq([:queued])
          reset(push_a) { nil }
          expect(redis_keys).to be_empty
        else
          expect(worker).to have_enqueued_reset_approvals(*args_of(push_a)).with_delay(10).once
          expect(redis_keys).to eq([legacy])
        end
        expect(worker.calls.size).to eq(1)
      end
    end

    describe "#start_code_owner_sync! and #finish_code_owner_sync! (create flow)" do
      it "tracks a sync without revs as code_owner:create" do
        expect(coordinator.start_code_owner_sync!).to be_nil
        if enabled
          expect(redis_keys).to eq([markers])
          expect(redis.zrange(markers, 0, -1)).to eq(["code_owner:create#1"])
          deadline = redis.zscore(markers, "code_owner:create#1")
          seconds, micros = redis.time
          expect(deadline - ((seconds * 1000) + (micros / 1000))).to be_between(298_000, 300_000)
          expect(redis.pttl(markers)).to be_between(599_000, 600_000)
          expect(coordinator).to be_syncing_approvals.for("code_owner:create")
        else
          expect(redis_keys).to eq([legacy])
          expect(redis.get(legacy)).to eq("true")
          expect(redis.ttl(legacy)).to be_between(299, 300)
        end
        expect(ApprovalSync::ApprovalState.new(merge_request).temporarily_unapproved?).to be(true)
        coordinator.finish_code_owner_sync!
        expect(redis_keys).to be_empty
        expect(ApprovalSync::ApprovalState.new(merge_request).temporarily_unapproved?).to be(false)
      end

      it "tracks a sync with revs as code_owner:OLD:NEW" do
        coordinator.start_code_owner_sync!(**push_a)
        if enabled
          expect(redis.zrange(markers, 0, -1)).to eq(["code_owner:#{rev(:aaa111)}:#{rev(:bbb222)}#1"])
          expect(redis_keys).to eq([markers])
        else
          expect(redis_keys).to eq([legacy])
          expect(redis.ttl(legacy)).to be_between(299, 300)
        end
        coordinator.finish_code_owner_sync!(**push_a)
        expect(redis_keys).to be_empty
      end

      it "deletes the legacy flag on finish only with the flag off" do
        ApprovalSync::ApprovalState.new(merge_request).temporarily_unapprove!(15)
        coordinator.finish_code_owner_sync!
        expect(redis_keys).to eq(enabled ? [legacy] : [])
      end

      it "wants both revs or neither, and writes nothing otherwise" do
        %i[start_code_owner_sync! finish_code_owner_sync!].each do |method|
          expect { coordinator.public_send(method, oldrev: rev(:aaa111)) }.to raise_error(ArgumentError)
          expect { coordinator.public_send(method, newrev: rev(:bbb222)) }.to raise_error(ArgumentError)
          (ApprovalSyncTest::BAD_REVS - [nil]).each do |bad|
            expect { coordinator.public_send(method, oldrev: bad, newrev: rev(:bbb222)) }.to raise_error(bad_argument)
            expect { coordinator.public_send(method, oldrev: rev(:aaa111), newrev: bad) }.to raise_error(bad_argument)
          end
        end
        expect(redis_keys).to be_empty
      end
    end

    describe "#schedule_reset_approvals!" do
      if enabled
        it "enqueues at once with perform_async when no sync is in progress" do
          expect(schedule(push_a)).to eq(:enqueued)
          expect(worker.calls.map(&:to_s)).to eq(["perform_async(#{args_of(push_a).map(&:inspect).join(", ")})"])
          # The queued reset holds the merge request until the worker has run it,
          # and the sweep's index holds it at the entry's deadline, in case the
          # job is lost before a worker begins it.
          expect(redis_keys).to eq([due_index, resets])
          deadline = kept(42).first.deadline_ms
          expect(redis.zscore(due_index, "42").to_i).to eq(deadline)
          expect(redis.pttl(resets)).to be_between(3_599_000, 3_600_000)
          expect(kept(42).map { |entry| [entry.state, entry.args] }).to eq([[:queued, args_of(push_a)]])
          expect(coordinator).not_to have_pending_reset_approvals
          expect(coordinator).to have_pending_reset_approvals.in_any_state.count(1)
          expect(log_output).to include("event=reset_enqueued merge_request_id=42")
        end

        it "passes no oldrev when the push gave none" do
          schedule(push_a, oldrev: nil)
          expect(worker).to have_enqueued_reset_approvals(7, 9, ref, rev(:bbb222)).once
        end

        it "keeps the reset while a code-owner sync runs, enqueuing it when the sync finishes" do
          coordinator.start_code_owner_sync!(**push_a)
          expect(schedule(push_a)).to eq(:kept)
          expect(worker.calls).to be_empty
          expect(coordinator).to have_pending_reset_approvals.with(*args_of(push_a)).count(1)
          expect(redis_keys).to eq([due_index, markers, resets])
          expect(redis.hget(resets, "idx")).to eq(redis.zscore(due_index, "42").to_i.to_s)
          coordinator.finish_code_owner_sync!(**push_a)
          expect(worker).to have_enqueued_reset_approvals(*args_of(push_a)).once
          expect(worker.calls.size).to eq(1)
          expect(redis_keys).to eq([due_index, resets])
          reset(push_a) { nil }
          expect(redis_keys).to be_empty
        end

        it "is not held back by a reset marker alone (only code-owner syncs hold resets)" do
          ApprovalSync::ApprovalState.new(merge_request).start_approval_rules_sync!(
            "reset_approvals:#{rev(:aaa111)}:#{rev(:bbb222)}"
          )
          expect(schedule(push_b)).to eq(:enqueued)
          expect(worker).to have_enqueued_reset_approvals(*args_of(push_b)).once
        end
      else
        it "sets the legacy flag for 15 s and calls perform_in(10, project, user, ref, newrev, oldrev)" do
          expect(schedule(push_a)).to eq(:delayed)
          expect(redis_keys).to eq([legacy])
          expect(redis.get(legacy)).to eq("true")
          expect(redis.ttl(legacy)).to be_between(14, 15)
          expect(worker.calls.map(&:to_s)).to eq(["perform_in(10, #{args_of(push_a).map(&:inspect).join(", ")})"])
          expect(worker).to have_enqueued_reset_approvals(*args_of(push_a)).with_delay(10).once
          expect(worker).not_to have_enqueued_reset_approvals
          expect(log_output).to be_empty
        end

        it "calls perform_in with four arguments when there is no oldrev" do
          schedule(push_a, oldrev: nil)
          expect(worker.delayed_args).to eq([[10, 7, 9, ref, rev(:bbb222)]])
        end

        it "does the same while a create-flow sync holds the legacy flag" do
          coordinator.start_code_owner_sync!
          expect(schedule(push_a)).to eq(:delayed)
          expect(redis.ttl(legacy)).to be_between(14, 15)
          expect(worker.delayed_args).to eq([[10, *args_of(push_a)]])
        end
      end

      it "rejects bad arguments before writing or enqueuing anything" do
        good = { project_id: 7, user_id: 9, ref: ref, **push_a }
        bad_ids = ApprovalSyncTest::BAD_IDS
        bad_refs = [nil, 42, "", "a\0b", "x" * 1025, ("\xFF" * 4).dup.force_encoding("UTF-8"), "x" * 10_000_000]
        cases = bad_ids.map { |id| { project_id: id } } + bad_ids.map { |id| { user_id: id } } +
                bad_refs.map { |bad| { ref: bad } } +
                ApprovalSyncTest::BAD_REVS.map { |bad| { newrev: bad } } +
                (ApprovalSyncTest::BAD_REVS - [nil]).map { |bad| { oldrev: bad } }
        cases.each do |change|
          expect { coordinator.schedule_reset_approvals!(**good, **change) }
            .to raise_error(bad_argument), change.inspect[0, 80]
          ran = false
          expect { coordinator.reset_approvals!(**good, **change) { ran = true } }
            .to raise_error(bad_argument), change.inspect[0, 80]
          expect(ran).to be(false)
        end
        expect(redis_keys).to be_empty
        expect(worker.calls).to be_empty
      end
    end

    describe "#reset_approvals!" do
      it "runs the block when no sync is in progress and leaves no key" do
        schedule(push_a) if enabled
        ran = 0
        expect(reset(push_a) { ran += 1 }).to be(true)
        expect(ran).to eq(1)
        expect(redis_keys).to be_empty
        expect(coordinator).not_to be_syncing_approvals
      end

      it "runs a reset nobody scheduled (enqueued before the flag was turned on)" do
        ran = false
        expect(reset(push_b) { ran = true }).to be(true)
        expect(ran).to be(true)
        expect(redis_keys).to be_empty
      end

      it "needs a block" do
        expect { reset(push_a) }.to raise_error(ArgumentError)
        expect(redis_keys).to be_empty
      end

      if enabled
        it "waits while a code-owner sync runs (block not run) and is enqueued again when it finishes" do
          schedule(push_a)
          worker.clear
          coordinator.start_code_owner_sync!(**push_b)
          ran = false
          expect(reset(push_a) { ran = true }).to be(false)
          expect(ran).to be(false)
          expect(coordinator).to have_pending_reset_approvals.with(*args_of(push_a)).count(1)
          expect(worker.calls).to be_empty
          coordinator.finish_code_owner_sync!(**push_b)
          expect(worker).to have_enqueued_reset_approvals(*args_of(push_a)).once
          expect(worker.calls.size).to eq(1)
          expect(reset(push_a) { ran = true }).to be(true)
          expect(ran).to be(true)
          expect(redis_keys).to be_empty
        end

        it "runs again after a sync that started during the block (the overlapped run does not count)" do
          schedule(push_a)
          worker.clear
          expect(reset(push_a) { coordinator.start_code_owner_sync!(**push_b) }).to be(true)
          expect(worker.calls).to be_empty
          expect(coordinator).to have_pending_reset_approvals.with(*args_of(push_a)).count(1)
          coordinator.finish_code_owner_sync!(**push_b)
          expect(worker).to have_enqueued_reset_approvals(*args_of(push_a)).once
          runs = worker.drain { |*args| reset(push_a) { expect(args).to eq(args_of(push_a)) } }
          expect(runs).to eq(1)
          expect(worker.calls.size).to eq(1)
          expect(redis_keys).to be_empty
        end

        it "finishes its marker when the block raises, and re-raises (H4)" do
          schedule(push_a)
          expect { reset(push_a) { raise ArgumentError, "no approvals" } }.to raise_error(ArgumentError, "no approvals")
          expect(redis_keys).to be_empty
          expect(coordinator).not_to be_syncing_approvals
          expect(ApprovalSync::ApprovalState.new(merge_request).temporarily_unapproved?).to be(false)
        end

        it "holds the merge request while it runs and frees it after, also when the service skips it (H4)" do
          schedule(push_a)
          during = nil
          reset(push_a) { during = ApprovalSync::ApprovalState.new(merge_request).temporarily_unapproved? }
          expect(during).to be(true)
          expect(ApprovalSync::ApprovalState.new(merge_request).temporarily_unapproved?).to be(false)
          expect(redis_keys).to be_empty
        end
      else
        it "only runs the block, even while a sync holds the legacy flag" do
          coordinator.start_code_owner_sync!
          ran = false
          expect(reset(push_a) { ran = true }).to be(true)
          expect(ran).to be(true)
          expect(redis_keys).to eq([legacy])
        end

        it "re-raises the block's error and writes nothing" do
          expect { reset(push_a) { raise "boom" } }.to raise_error(RuntimeError, "boom")
          expect(redis_keys).to be_empty
        end
      end
    end

    describe "#clear!" do
      it "drops kept resets so that finishing a sync afterwards enqueues nothing" do
        coordinator.start_code_owner_sync!(**push_a)
        schedule(push_a)
        worker.clear
        expect(coordinator.clear!).to eq(enabled ? 1 : 0)
        coordinator.finish_code_owner_sync!(**push_a)
        expect(worker.calls).to be_empty
        expect(redis_keys).to be_empty
        expect(coordinator).not_to be_syncing_approvals
        expect(log_output).to include("event=resets_cleared merge_request_id=42 dropped=#{enabled ? 1 : 0}")
      end

      it "leaves merge request 43 alone" do
        other = described_class.new(43)
        other.start_code_owner_sync!(**push_a)
        other.schedule_reset_approvals!(project_id: 7, user_id: 9, ref: ref, **push_a)
        before = redis_keys.to_h { |key| [key, redis.dump(key)] }
        coordinator.clear!
        expect(redis_keys.to_h { |key| [key, redis.dump(key)] }).to eq(before)
      end
    end

    it "asks the flag about the merge request object on every call (H8)" do
      calls = [
        -> { coordinator.sync_code_owners!(**push_a) { nil } },
        -> { coordinator.start_code_owner_sync!(**push_b) },
        -> { schedule(push_a) },
        -> { coordinator.finish_code_owner_sync!(**push_b) },
        -> { reset(push_a) { nil } }
      ]
      calls.each_with_index do |call, index|
        approval_sync_flag.clear
        call.call
        expect(approval_sync_flag.asked_with).not_to be_empty, "call #{index} did not ask the flag"
        expect(approval_sync_flag.asked_with).to all(be(merge_request)), "call #{index} asked about something else"
      end
    end
  end

  describe ".new" do
    it "rejects bad merge request ids before touching Redis" do
      ApprovalSyncTest::BAD_IDS.each do |id|
        expect { described_class.new(id) }.to raise_error(bad_argument), id.inspect
        expect { described_class.new(ApprovalSyncTest::FakeMergeRequest.new(id, nil)) }.to raise_error(bad_argument)
      end
      expect(redis_keys).to be_empty
    end
  end
end
