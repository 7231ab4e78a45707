# frozen_string_literal: true

require_relative "runtime_helper"

# C13: a thread waiting on Redis releases the GVL and can be interrupted.
RSpec.describe "Native calls and Ruby threads (C13)" do
  let(:id) { 4242 }
  let(:member_text) { member(:a1, :b1) }
  let(:state) { ApprovalSync::ApprovalState.new(id) }

  context "with Redis stalled by DEBUG SLEEP" do
    before(:all) { @server = debug_server }
    after(:all) { @server.stop }

    before do
      # A read timeout longer than the stall, so only the interrupt can end the call.
      use_redis(redis_url: @server.url, read_timeout: 5.0)
      @server.call("FLUSHALL")
      expect(ApprovalSync.tracker.ping).to eq("PONG")
    end

    after { @sleeper&.join }

    it "lets another Ruby thread run while one waits in the gem" do
      @sleeper = stall(@server, 1.5)
      ticks, took = ticks_during { expect(state.any_approval_rules_syncing?).to be(false) }
      expect(took).to be > 0.5
      # 10 ms per tick: a thread holding the GVL for the whole wait would allow ~0.
      expect(ticks).to be > (took * 100 * 0.3)
    end

    it "raises Timeout::Error within a second from Timeout.timeout(0.3)" do
      @sleeper = stall(@server, 2)
      took, error = timed_error { Timeout.timeout(0.3) { state.start_approval_rules_sync!(member_text) } }
      expect(error).to be_a(Timeout::Error)
      expect(took).to be < 1.0
    end

    it "lets Thread#kill end a blocked call within a second" do
      @sleeper = stall(@server, 2)
      blocked = Thread.new { state.temporarily_unapproved? }
      sleep 0.2
      took = elapsed do
        blocked.kill
        expect(blocked.join(1)).to eq(blocked)
      end
      expect(blocked).not_to be_alive
      expect(took).to be < 1.0
    end

    it "delivers Thread#raise to a blocked call within a second" do
      @sleeper = stall(@server, 2)
      blocked = Thread.new do
        state.temporarily_unapproved?
        :not_interrupted
      rescue IOError => e
        e.message
      end
      sleep 0.2
      took = elapsed do
        blocked.raise(IOError, "stop waiting")
        blocked.join(1)
      end
      expect(blocked.value).to eq("stop waiting")
      expect(took).to be < 1.0
    end

    it "drops the interrupted connection and answers the next call correctly" do
      old_ids = eventually { (ids = gem_connection_ids(@server)).size == 1 && ids }
      @sleeper = stall(@server, 1)
      # Interrupted while asking "is anything syncing?" (the answer would be no).
      _, error = timed_error { Timeout.timeout(0.2) { state.any_approval_rules_syncing? } }
      expect(error).to be_a(Timeout::Error)
      @sleeper.join
      # The next calls get their own replies, not the stale "no".
      expect(state.start_approval_rules_sync!(member_text)).to be(true)
      expect(state.any_approval_rules_syncing?).to be(true)
      expect(state.approval_rules_syncing?(member_text)).to be(true)
      expect(ApprovalSync::ApprovalState.new(id + 1).any_approval_rules_syncing?).to be(false)
      eventually { gem_connection_ids(@server).size == 1 }
      expect(gem_connection_ids(@server)).not_to eq(old_ids)
    end

    it "raises ApprovalSync::TimeoutError after the read timeout when nobody interrupts" do
      use_redis(redis_url: @server.url, read_timeout: 0.5)
      expect(ApprovalSync.tracker.ping).to eq("PONG")
      @sleeper = stall(@server, 2)
      took, error = timed_error { state.any_approval_rules_syncing? }
      expect(error).to be_a(ApprovalSync::TimeoutError)
      expect(took).to be_between(0.4, 1.0)
      @sleeper.join
      expect(state.any_approval_rules_syncing?).to be(false)
    end
  end

  context "with the native pause, which needs no server" do
    before do
      # Nobody listens here: pause must not connect at all.
      use_redis(redis_url: "redis://127.0.0.1:#{ApprovalSyncTest::RedisServers::Processes.free_port}")
    end

    let(:tracker) { ApprovalSync.tracker }

    it "sleeps past the read timeout and releases the GVL meanwhile" do
      ticks, took = ticks_during { expect(tracker.pause(1.2)).to be(true) }
      expect(took).to be >= 1.2
      expect(ticks).to be > 30
    end

    it "is interrupted by Timeout.timeout, Thread#kill and Thread#raise" do
      took, error = timed_error { Timeout.timeout(0.3) { tracker.pause(5) } }
      expect(error).to be_a(Timeout::Error)
      expect(took).to be < 1.0

      killed = Thread.new { tracker.pause(5) }
      sleep 0.1
      killed.kill
      expect(killed.join(1)).to eq(killed)

      raised = Thread.new do
        tracker.pause(5)
      rescue ArgumentError => e
        e.message
      end
      sleep 0.1
      raised.raise(ArgumentError, "enough")
      expect(raised.join(1)&.value).to eq("enough")
    end

    it "keeps working after many interrupts" do
      20.times do
        Timeout.timeout(0.02) { tracker.pause(1) }
      rescue Timeout::Error
        nil
      end
      expect(tracker.pause(0.05)).to be(true)
    end
  end
end
