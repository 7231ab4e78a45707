# frozen_string_literal: true

require "spec_helper"

# The RSpec support that host suites load with `require "approval_sync/rspec"`.
RSpec.describe ApprovalSync::RSpec do
  let(:ref) { ApprovalSyncTest::REF }
  let(:push) { { oldrev: rev(:aaa111), newrev: rev(:bbb222) } }
  let(:args) { [7, 9, ref, rev(:bbb222), rev(:aaa111)] }
  let(:not_met) { RSpec::Expectations::ExpectationNotMetError }

  describe "approval_sync_flag_states" do
    states = []
    approval_sync_flag_states do |enabled|
      it "runs the group with the flag #{enabled ? "on" : "off"}" do
        states << enabled
        expect(approval_sync_enabled?).to be(enabled)
        expect(ApprovalSync.deterministic?(42)).to be(enabled)
        expect(approval_sync_flag.asked_with).to eq([42])
      end
    end

    it "defined one context per flag state" do
      groups = self.class.parent_groups.first.children.map(&:description)
      expect(groups).to include(ApprovalSync::RSpec::FLAG_OFF_CONTEXT, ApprovalSync::RSpec::FLAG_ON_CONTEXT)
    end

    it "puts the host's own flag back after each example" do
      expect(ApprovalSync.config.deterministic_sync).not_to be_a(ApprovalSync::RSpec::FlagSpy)
    end
  end

  describe ApprovalSync::RSpec::WorkerSpy do
    subject(:spy) { described_class.new }

    it "records perform_async and perform_in apart, with their arguments and delay" do
      expect(spy.perform_async(1, "a")).to match(/\Aspy\d+\z/)
      spy.perform_in(10, 2, "b")
      expect(spy.calls.map(&:to_s)).to eq(['perform_async(1, "a")', 'perform_in(10, 2, "b")'])
      expect(spy.async_args).to eq([[1, "a"]])
      expect(spy.delayed_args).to eq([[10, 2, "b"]])
      expect(spy).to have_enqueued_reset_approvals(1, "a").once
      expect(spy).not_to have_enqueued_reset_approvals(2, "b")
      expect(spy).to have_enqueued_reset_approvals(2, "b").with_delay(10)
      expect(spy).not_to have_enqueued_reset_approvals(2, "b").with_delay(5)
      expect(spy).not_to have_enqueued_reset_approvals(1, "a").with_delay(10)
    end

    it "drains queued jobs through the block, including jobs enqueued while draining" do
      spy.perform_async(1)
      ran = []
      expect(spy.drain { |n| (ran << n) && (spy.perform_async(n + 1) if n < 3) }).to eq(3)
      expect(ran).to eq([1, 2, 3])
      expect(spy.jobs).to be_empty
      expect(spy.calls.size).to eq(3)
    end

    it "stops a job that keeps re-enqueuing itself" do
      spy.perform_async(1)
      expect { spy.drain(max_jobs: 5) { spy.perform_async(1) } }.to raise_error(RuntimeError, /ran 5 jobs/)
    end

    it "fails the next enqueues on request, without recording them" do
      spy.fail_next(IOError.new("down"), times: 2)
      expect { spy.perform_async(1) }.to raise_error(IOError, "down")
      expect { spy.perform_in(10, 1) }.to raise_error(IOError, "down")
      spy.perform_async(2)
      expect(spy.async_args).to eq([[2]])
    end

    it "is accepted as the reset worker" do
      ApprovalSync.config.reset_approvals_worker = spy
      expect(ApprovalSync.config.worker).to be(spy)
    end
  end

  describe "matchers" do
    include_context ApprovalSync::RSpec::FLAG_ON_CONTEXT

    let(:coordinator) { ApprovalSync::ApprovalRulesSyncCoordinator.new(42) }
    let(:worker) { approval_sync_worker_spy }

    before { worker }

    it "be_syncing_approvals reads a state, a coordinator, a merge request or an id" do
      coordinator.start_code_owner_sync!(**push)
      member = "code_owner:#{rev(:aaa111)}:#{rev(:bbb222)}"
      [coordinator, ApprovalSync::ApprovalState.new(42), ApprovalSyncTest::FakeMergeRequest.new(42, nil),
       42].each do |x|
        expect(x).to be_syncing_approvals
        expect(x).to be_syncing_approvals.for(member)
      end
      expect(43).not_to be_syncing_approvals
      expect { expect(43).to be_syncing_approvals }
        .to raise_error(not_met, "expected merge request 43 to be syncing approvals, but it was not")
    end

    it "have_pending_reset_approvals counts waiting resets, by arguments" do
      coordinator.start_code_owner_sync!(**push)
      2.times { coordinator.schedule_reset_approvals!(project_id: 7, user_id: 9, ref: ref, **push) }
      expect(coordinator).to have_pending_reset_approvals.count(2)
      expect(coordinator).to have_pending_reset_approvals.with(*args).count(2)
      expect(coordinator).not_to have_pending_reset_approvals.with(1, 2, ref, rev(:bbb222))
      expect { expect(42).to have_pending_reset_approvals.count(3) }
        .to raise_error(not_met, /to have 3 pending reset approvals, it has waiting \[7, 9/)
      coordinator.finish_code_owner_sync!(**push)
      expect(coordinator).not_to have_pending_reset_approvals
      expect(coordinator).to have_pending_reset_approvals.in_any_state.count(2)
    end

    it "have_enqueued_reset_approvals explains what the worker got" do
      worker.perform_in(10, *args)
      expect { expect(worker).to have_enqueued_reset_approvals(*args) }
        .to raise_error(not_met, /perform_async\(7, 9.*; it got perform_in\(10, 7, 9/)
      expect { expect(worker).to have_enqueued_reset_approvals(*args).with_delay(10).twice }
        .to raise_error(not_met, /2 time\(s\)/)
    end

    it "needs a WorkerSpy for have_enqueued_reset_approvals" do
      expect { expect(Object.new).to have_enqueued_reset_approvals }.to raise_error(ArgumentError, /WorkerSpy/)
    end
  end

  describe "key isolation" do
    include_context ApprovalSync::RSpec::FLAG_ON_CONTEXT

    it "clears every key of the merge requests an example touched, and nothing else" do
      redis.set("host:other", "kept")
      redis.set("mr_43_cannot_merge", "true")
      ApprovalSync::RSpec.isolate do
        coordinator = ApprovalSync::ApprovalRulesSyncCoordinator.new(42)
        ApprovalSync::ApprovalState.new(42).temporarily_unapprove!(300)
        coordinator.start_code_owner_sync!(**push)
        coordinator.schedule_reset_approvals!(project_id: 7, user_id: 9, ref: ref, **push)
        expect(redis_keys).to include(ApprovalSyncTest::DUE, ApprovalSyncTest::MARKERS, ApprovalSyncTest::RESETS)
      end
      expect(redis_keys).to eq(["host:other", "mr_43_cannot_merge"])
    end

    it "clears merge requests marked by hand, leaving other merge requests' index entries" do
      [42, 43].each do |id|
        coordinator = ApprovalSync::ApprovalRulesSyncCoordinator.new(id)
        coordinator.start_code_owner_sync!(**push)
        coordinator.schedule_reset_approvals!(project_id: 7, user_id: 9, ref: ref, **push)
      end
      ApprovalSync::RSpec::Touched.take
      approval_sync_touch(42)
      ApprovalSync::RSpec.isolate { nil }
      expect(redis_keys.grep(/42/)).to be_empty
      expect(redis.zrange(ApprovalSyncTest::DUE, 0, -1)).to eq(["43"])
      expect(ApprovalSync::ApprovalRulesSyncCoordinator.new(43)).to have_pending_reset_approvals.count(1)
    end

    it "puts the server clock back after clearing the index" do
      ApprovalSync::RSpec.clear_merge_requests!([42])
      expect(ApprovalSync.tracker.now).to be_within(5_000).of((Time.now.to_f * 1000).to_i)
    end
  end
end
