# frozen_string_literal: true

require "spec_helper"

# Handing resets to the worker: whatever fails after Redis marked them
# enqueued puts them back, so nothing is lost silently.
RSpec.describe ApprovalSync::Jobs do
  include ApprovalSyncTest::SpecHelpers

  let(:coordinator) { ApprovalSync::ApprovalRulesSyncCoordinator.new(42) }
  let(:oldrev) { rev(:aaa111) }
  let(:newrev) { rev(:bbb222) }
  let(:params) { { project_id: 7, user_id: 9, ref: "refs/heads/feature", newrev: newrev, oldrev: oldrev } }

  before do
    ApprovalSync.configure { |config| config.deterministic_sync = ->(_) { true } }
    coordinator.start_code_owner_sync!(oldrev: oldrev, newrev: newrev)
    coordinator.schedule_reset_approvals!(**params)
  end

  def entry_states
    ApprovalSync.tracker.snapshot(42)[3].map { |_, entry| entry[0] }
  end

  it "puts the resets back when the worker constant does not load" do
    ApprovalSync.configure { |config| config.reset_approvals_worker = "NoSuchResetWorker" }

    expect { coordinator.finish_code_owner_sync!(oldrev: oldrev, newrev: newrev) }
      .to raise_error(ApprovalSync::EnqueueError, /NoSuchResetWorker/)
    expect(entry_states).to eq(["w"])
    expect(log_output).to include("event=enqueue_failed")
  end

  it "enqueues them exactly once on a later call once the worker loads" do
    ApprovalSync.configure { |config| config.reset_approvals_worker = "NoSuchResetWorker" }
    expect { coordinator.finish_code_owner_sync!(oldrev: oldrev, newrev: newrev) }
      .to raise_error(ApprovalSync::EnqueueError)

    spy = ApprovalSync::RSpec::WorkerSpy.new
    ApprovalSync.configure { |config| config.reset_approvals_worker = spy }
    2.times { ApprovalSync::ApprovalState.new(42).temporarily_unapproved? }

    expect(spy.async_args).to eq([[7, 9, "refs/heads/feature", newrev, oldrev]])
    expect(entry_states).to eq(["q"])
  end
end
