# frozen_string_literal: true

require_relative "runtime_helper"

# Sentinel with one replica: a failover in the middle of a sync. The gem
# follows the new master: the old one, now a replica, answers READONLY (it ran
# none of the script's writes), and the gem asks the sentinels again and
# repeats the call there, so once the failover is over no call fails.
RSpec.describe "Redis Sentinel", :slow do
  before(:all) { @setup = ApprovalSyncTest::RedisServers.sentinel }
  after(:all) { @setup&.stop }

  let(:worker) { ApprovalSyncTest::Runtime::RecordingWorker }

  before do
    use_redis(sentinels: @setup.sentinels, master_name: @setup.master_name)
    @setup.master.call("FLUSHALL")
  end

  # Runs the call; a typed connection error counts as one failure.
  def tolerant(failures)
    yield
  rescue ApprovalSync::ConnectionError => e
    failures << e
    yield
  end

  it "finds the master through the sentinel" do
    expect(lifecycle_mismatches(60, 1)).to eq(0)
    expect(gem_connections(@setup.master).size).to eq(1)
    expect(gem_connections(@setup.replica)).to eq([])
  end

  it "follows a failover in the middle of a sync; the finish enqueues exactly once" do
    id = 61
    state = ApprovalSync::ApprovalState.new(id)
    co = ApprovalSync::ApprovalRulesSyncCoordinator.new(id)
    expect(state.start_approval_rules_sync!(member(:o, :n))).to be(true)
    expect(co.schedule_reset_approvals!(**reset_args(id, :o, :n))).to eq(:kept)
    old_port = @setup.master.port
    # Writes reach the replica before it is promoted.
    @setup.master.call("WAIT", 1, 2000)
    expect(@setup.failover!).not_to eq(old_port)

    failures = []
    expect(tolerant(failures) { state.approval_rules_syncing?(member(:o, :n)) }).to be(true)
    expect(tolerant(failures) { state.finish_approval_rules_sync!(member(:o, :n)) }).to be(true)
    expect(failures).to eq([])
    expect(worker.calls).to eq([[:async, [7, id, "refs/heads/mr#{id}", sha(:n), sha(:o)]]])
    expect(co.reset_approvals!(**reset_args(id, :o, :n)) { :reset }).to be(true)
    expect(state.any_approval_rules_syncing?).to be(false)
    expect(worker.calls.size).to eq(1)
    # The gem now talks to the new master only.
    expect(gem_connections(@setup.master).size).to eq(1)
  end
end
