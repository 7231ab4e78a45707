# frozen_string_literal: true

require_relative "runtime_helper"

# The Ruby objects the gem keeps (worker class, flag callable, logger,
# instrumenter) and its native tracker survive a collection at every
# allocation and compaction between calls. bin/test runs this file once more
# with APPROVAL_SYNC_GC_STRESS=1, which turns on GC.stress inside the
# examples; without it they run once, quickly, as part of the whole suite.
RSpec.describe "Held Ruby objects under GC.stress and GC.compact" do
  include_context "with a standalone server"

  stress = ENV["APPROVAL_SYNC_GC_STRESS"] == "1"

  # Objects referenced only by the configuration once the example lets go.
  def configure_fresh_objects
    asked = []
    calls = []
    log = StringIO.new
    events = []
    worker = Class.new do
      define_singleton_method(:perform_async) { |*args| calls << [:async, args] }
      define_singleton_method(:perform_in) { |delay, *args| calls << [:in, delay, args] }
    end
    instrumenter = Object.new
    instrumenter.define_singleton_method(:instrument) { |name, payload| events << [name, payload[:merge_request_id]] }
    ApprovalSync.configure do |c|
      c.reset_approvals_worker = worker
      c.deterministic_sync = lambda { |mr|
        asked << mr
        true
      }
      c.logger = Logger.new(log)
      c.instrumenter = instrumenter
    end
    { asked:, calls:, log:, events: }
  end

  # A coordinator lifecycle, with `between` run between calls.
  def lifecycle(id, between)
    state = ApprovalSync::ApprovalState.new(id)
    co = ApprovalSync::ApprovalRulesSyncCoordinator.new(id)
    steps = [
      -> { state.start_approval_rules_sync!(member(:o, :n)) },
      -> { co.schedule_reset_approvals!(**reset_args(id, :o, :n)) },
      -> { co.sync_code_owners!(oldrev: sha(:n), newrev: sha(:m)) { :synced } },
      -> { state.finish_approval_rules_sync!(member(:o, :n)) },
      -> { co.reset_approvals!(**reset_args(id, :o, :n)) { :reset } },
      -> { state.any_approval_rules_syncing? }
    ]
    steps.map do |step|
      between.call
      step.call
    end
  end

  def expect_lifecycle_results(results, seen, id)
    expect(results).to eq([true, :kept, :synced, true, true, false])
    expect(seen[:calls]).to eq([[:async, [7, id, "refs/heads/mr#{id}", sha(:n), sha(:o)]]])
    expect(seen[:asked]).to all(eq(id))
    expect(seen[:log].string).to include("event=sync_started", "event=reset_enqueued")
    expect(seen[:events].map(&:first)).to include("sync_finished.approval_sync")
  end

  it "runs the coordinator lifecycle#{" under GC.stress" if stress}" do
    seen = configure_fresh_objects
    GC.start
    results = begin
      GC.stress = stress
      lifecycle(81, -> {})
    ensure
      GC.stress = false
    end
    expect_lifecycle_results(results, seen, 81)
  end

  it "runs the coordinator lifecycle with GC.compact between calls" do
    skip "GC.compact is not supported here" unless GC.respond_to?(:compact)

    seen = configure_fresh_objects
    results = lifecycle(82, -> { GC.compact })
    expect_lifecycle_results(results, seen, 82)
    expect(ApprovalSync.tracker.ping).to eq("PONG")
  end
end
