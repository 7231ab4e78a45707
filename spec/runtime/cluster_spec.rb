# frozen_string_literal: true

require_relative "runtime_helper"

# C07: a 3-master Redis Cluster. Each script's keys share one slot; a slot
# moving under a sync (MOVED, ASK, TRYAGAIN) is invisible to the caller.
RSpec.describe "Redis Cluster (C07)", :slow do
  before(:all) { @cluster = ApprovalSyncTest::RedisServers.cluster(masters: 3) }
  after(:all) { @cluster&.stop }

  let(:worker) { ApprovalSyncTest::Runtime::RecordingWorker }

  before do
    use_redis(cluster_nodes: @cluster.nodes)
    @cluster.servers.each { |server| server.call("FLUSHALL") }
  end

  def keys_of(id)
    ["mr_#{id}_cannot_merge", "approval_sync:{mr_#{id}_cannot_merge}:markers",
     "approval_sync:{mr_#{id}_cannot_merge}:resets"]
  end

  def slot_of(id)
    @cluster.key_slot("mr_#{id}_cannot_merge")
  end

  # Another master than the one serving the slot now.
  def other_master(slot)
    ([0, 1, 2] - [@cluster.node_for_slot(slot)]).first
  end

  # Every key of the merge request that exists, for MIGRATE.
  def existing_keys(id)
    owner = @cluster.servers.fetch(@cluster.node_for_slot(slot_of(id)))
    keys_of(id).select { |key| owner.call("EXISTS", key) == 1 }
  end

  # A live sync with one push's reset kept behind it: [state, coordinator, slot].
  def sync_with_kept_reset(id)
    state = ApprovalSync::ApprovalState.new(id)
    co = ApprovalSync::ApprovalRulesSyncCoordinator.new(id)
    expect(state.start_approval_rules_sync!(member(:o, :n))).to be(true)
    expect(co.schedule_reset_approvals!(**reset_args(id, :o, :n))).to eq(:kept)
    [state, co, slot_of(id)]
  end

  # Ends the slot's migration from another thread while the caller waits.
  def finish_move_later(slot)
    Thread.new do
      sleep 0.3
      @cluster.finish_move_slot(slot)
    end
  end

  it "keeps every key one script touches in the merge request's slot" do
    [1, 42, 4242, 2**40, (2**63) - 1].each do |id|
      slots = keys_of(id).map { |key| @cluster.key_slot(key) }
      expect(slots.uniq).to eq([slot_of(id)])
    end
  end

  it "runs whole lifecycles on merge requests spread over all masters, without CROSSSLOT" do
    ids = (1..30).to_a
    expect(ids.map { |id| @cluster.node_for_slot(slot_of(id)) }.uniq.sort).to eq([0, 1, 2])
    expect(ids.sum { |id| lifecycle_mismatches(id, 1) }).to eq(0)
    expect(worker.calls.size).to eq(ids.size)
  end

  it "follows a slot moved to another master in the middle of a sync; one enqueue follows" do
    id = 42
    co = ApprovalSync::ApprovalRulesSyncCoordinator.new(id)
    state = ApprovalSync::ApprovalState.new(id)
    slot = slot_of(id)
    from = @cluster.node_for_slot(slot)
    expect(state.start_approval_rules_sync!(member(:o, :n))).to be(true)
    expect(co.schedule_reset_approvals!(**reset_args(id, :o, :n))).to eq(:kept)
    @cluster.move_slot(slot, other_master(slot))
    expect(@cluster.node_for_slot(slot)).not_to eq(from)
    expect(state.approval_rules_syncing?(member(:o, :n))).to be(true)
    expect(state.finish_approval_rules_sync!(member(:o, :n))).to be(true)
    expect(worker.calls).to eq([[:async, [7, id, "refs/heads/mr#{id}", sha(:n), sha(:o)]]])
    expect(co.reset_approvals!(**reset_args(id, :o, :n)) { :reset }).to be(true)
    expect(state.any_approval_rules_syncing?).to be(false)
    expect(worker.calls.size).to eq(1)
  end

  it "follows ASK while the slot is migrating with all its keys moved" do
    id = 43
    state, co, slot = sync_with_kept_reset(id)
    target = other_master(slot)
    @cluster.begin_move_slot(slot, target, keys: existing_keys(id))
    # A single-key command on a key the source does not have: ASK, then the target.
    state.temporarily_unapprove!(60)
    importing = @cluster.servers[target]
    importing.call("ASKING") # the importing node answers MOVED without it
    expect(importing.call("TTL", keys_of(id).first)).to be_between(1, 60)
    # Scripts touch the absent legacy key too, which the target answers with
    # TRYAGAIN until the migration ends; the call waits it out.
    finisher = finish_move_later(slot)
    expect(state.finish_approval_rules_sync!(member(:o, :n))).to be(true)
    finisher.join
    expect(worker.calls.size).to eq(1)
    expect(co.reset_approvals!(**reset_args(id, :o, :n)) { :reset }).to be(true)
    expect(state.any_approval_rules_syncing?).to be(false)
  end

  it "waits out TRYAGAIN while the slot's keys are half moved, within the read timeout" do
    id = 44
    state, _co, slot = sync_with_kept_reset(id)
    moved = existing_keys(id)
    expect(moved.size).to be >= 2
    moved = moved.first(1)
    @cluster.begin_move_slot(slot, other_master(slot), keys: moved)
    finisher = finish_move_later(slot)
    took = elapsed { expect(state.finish_approval_rules_sync!(member(:o, :n))).to be(true) }
    finisher.join
    expect(took).to be < 1.0
    expect(worker.calls.size).to eq(1)
  end

  it "sweeps kept resets of a sync that died, with the sweep index in its own slot" do
    expect(@cluster.key_slot("approval_sync:due")).not_to eq(slot_of(45))
    co = ApprovalSync::ApprovalRulesSyncCoordinator.new(45)
    ApprovalSync::ApprovalState.new(45).start_approval_rules_sync!(member(:o, :n))
    expect(co.schedule_reset_approvals!(**reset_args(45, :o, :n))).to eq(:kept)
    expect(ApprovalSync.sweep!).to include(enqueued: 0)
    # The sync never finishes: past marker_ttl the sweep enqueues its reset.
    ApprovalSync.tracker.set_clock(ApprovalSync.tracker.now + ((ApprovalSync.config.marker_ttl + 1) * 1000))
    expect(ApprovalSync.sweep!).to include(due: [45], enqueued: 1)
    expect(worker.calls).to eq([[:async, [7, 45, "refs/heads/mr45", sha(:n), sha(:o)]]])
  end
end
