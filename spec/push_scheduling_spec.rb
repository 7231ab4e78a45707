# frozen_string_literal: true

require "spec_helper"

# One push on a branch with several open merge requests: EE sets the legacy
# flag on each and enqueues one delayed job for the push.
RSpec.describe ApprovalSync::ApprovalRulesSyncCoordinator, ".schedule_reset_approvals_for_push!" do
  include ApprovalSyncTest::SpecHelpers

  let(:spy) { ApprovalSync::RSpec::WorkerSpy.new }
  let(:params) { { project_id: 7, user_id: 9, ref: "refs/heads/feature", newrev: rev(:bbb222), oldrev: rev(:aaa111) } }
  let(:args) { [7, 9, "refs/heads/feature", rev(:bbb222), rev(:aaa111)] }

  def configure(flag_on_ids)
    ApprovalSync.configure do |config|
      config.reset_approvals_worker = spy
      config.deterministic_sync = ->(id) { flag_on_ids.include?(id) }
    end
  end

  it "with the flag off: the legacy flag on each merge request and one perform_in for the push" do
    configure([])

    results = described_class.schedule_reset_approvals_for_push!([42, 43], **params)

    expect(results).to eq(42 => :delayed, 43 => :delayed)
    expect(redis_keys).to eq(%w[mr_42_cannot_merge mr_43_cannot_merge])
    expect(redis.ttl("mr_42_cannot_merge")).to be_between(14, 15)
    expect(spy.calls.map { |call| [call.method_name, call.delay, call.args] }).to eq([[:perform_in, 10, args]])
  end

  it "with the flag on: each merge request keeps or enqueues its own reset" do
    configure([42, 43])
    ApprovalSync::ApprovalRulesSyncCoordinator.new(42).start_code_owner_sync!(oldrev: rev(:aaa111),
                                                                              newrev: rev(:bbb222))

    results = described_class.schedule_reset_approvals_for_push!([42, 43], **params)

    expect(results).to eq(42 => :kept, 43 => :enqueued)
    expect(spy.async_args).to eq([args])
    expect(spy.delayed_args).to be_empty
  end

  it "asks the flag per merge request, so a mixed rollout treats each in its own mode" do
    configure([43])

    results = described_class.schedule_reset_approvals_for_push!([42, 43], **params)

    expect(results).to eq(42 => :delayed, 43 => :enqueued)
    expect(spy.calls.map(&:method_name)).to contain_exactly(:perform_in, :perform_async)
  end

  it "checks everything before writing anything" do
    configure([])

    expect { described_class.schedule_reset_approvals_for_push!([42, 0], **params) }.to raise_error(ArgumentError)
    expect { described_class.schedule_reset_approvals_for_push!([42], **params, ref: "") }.to raise_error(ArgumentError)
    expect(redis_keys).to be_empty
    expect(spy.calls).to be_empty
  end
end
