# frozen_string_literal: true

require_relative "runtime_helper"

# C09 and threads: one multiplexed connection per process, shared by its
# threads; a forked child opens its own and never touches the parent's.
RSpec.describe "Threads and forks (C09)", :slow do
  include_context "with a standalone server"

  it "shares one connection among 8 threads hammering distinct merge requests, every reply right" do
    ApprovalSync.tracker.ping
    threads = Array.new(8) do |t|
      Thread.new { Array.new(150) { |round| lifecycle_mismatches(1000 + t, round) }.sum }
    end
    expect(threads.map(&:value)).to eq([0] * 8)
    expect(gem_connections(@server).size).to eq(1)
    # Every reset was enqueued once: 8 threads x 150 rounds.
    expect(ApprovalSyncTest::Runtime::RecordingWorker.calls.count { |kind, _| kind == :async }).to eq(8 * 150)
    expect(@server.call("KEYS", "*")).to eq([])
  end

  it "lets 8 forked children work on their own connections while the parent keeps its own" do
    state = ApprovalSync::ApprovalState.new(1)
    expect(state.start_approval_rules_sync!(member(:p1, :p2))).to be(true)
    parent_ids = gem_connection_ids(@server)
    expect(parent_ids.size).to eq(1)

    children = Array.new(8) { |n| fork_child(2000 + n) }
    # Each child reports after its loop and waits to be released, so all
    # connections are open at the same time for counting.
    results = children.map { |child| child[:reader].gets.to_s.split.map(&:to_i) }
    connections = gem_connection_ids(@server)
    children.each { |child| child[:release].puts("go") }
    statuses = children.map { |child| Process.wait2(child[:pid]).last }

    expect(results.map(&:first)).to eq([0] * 8)               # zero mismatched replies
    expect(results.map(&:last)).to eq([2000] * 8)             # every round ran
    expect(statuses).to all(be_success)
    expect(connections.size).to eq(9)                         # one per process
    expect(connections).to include(*parent_ids)               # the parent's, untouched
    # The parent still works on its original connection.
    expect(state.approval_rules_syncing?(member(:p1, :p2))).to be(true)
    expect(state.finish_approval_rules_sync!(member(:p1, :p2))).to be(true)
    expect(gem_connection_ids(@server)).to eq(parent_ids)
  end

  def fork_child(id)
    reader, writer = IO.pipe
    release_reader, release = IO.pipe
    pid = fork do
      reader.close
      release.close
      mismatches = (1..2000).sum { |round| child_round(id, round) }
      writer.puts("#{mismatches} 2000")
      release_reader.gets
      exit!(mismatches.zero? ? 0 : 1)
    rescue Exception => e # rubocop:disable Lint/RescueException -- report anything, never run the parent's at_exit
      writer.puts("-1 #{e.class}")
      exit!(2)
    end
    writer.close
    release_reader.close
    { pid:, reader:, release: }
  end

  # start, check, finish on the child's own merge request.
  def child_round(id, round)
    state = ApprovalSync::ApprovalState.new(id)
    text = member(:"c#{round}", :"d#{round}")
    ok = state.start_approval_rules_sync!(text) &&
         state.approval_rules_syncing?(text) &&
         state.finish_approval_rules_sync!(text) &&
         !state.approval_rules_syncing?(text)
    ok ? 0 : 1
  end
end
