# frozen_string_literal: true

require_relative "runtime_helper"
require "socket"

# C10, C11, C08: Redis faults end in a typed error within the timeouts, the
# gem recovers on its own, and a lost script cache changes nothing.
RSpec.describe "Redis faults" do
  let(:state) { ApprovalSync::ApprovalState.new(42) }
  let(:co) { ApprovalSync::ApprovalRulesSyncCoordinator.new(42) }

  describe "no hang (C10)" do
    def expect_typed_failure_within(limit, &)
      took, error = timed_error(&)
      expect(error).to be_a(ApprovalSync::TimeoutError).or be_a(ApprovalSync::ConnectionError)
      expect(took).to be < limit
      error
    end

    it "fails fast on a loopback port nobody listens on" do
      use_redis(redis_url: "redis://127.0.0.1:#{ApprovalSyncTest::RedisServers::Processes.free_port}",
                connect_timeout: 0.5)
      error = expect_typed_failure_within(1.0) { state.temporarily_unapproved? }
      expect(error).to be_a(ApprovalSync::ConnectionError)
    end

    it "gives up on a listener that accepts but never answers" do
      server = TCPServer.new("127.0.0.1", 0)
      held = []
      acceptor = Thread.new { loop { held << server.accept } }
      use_redis(redis_url: "redis://127.0.0.1:#{server.addr[1]}", connect_timeout: 0.5, read_timeout: 0.5)
      expect_typed_failure_within(1.0) { state.start_approval_rules_sync!(member(:a, :b)) }
      expect_typed_failure_within(1.0) { state.temporarily_unapproved? }
    ensure
      acceptor&.kill
      held&.each(&:close)
      server&.close
    end

    it "gives up on a listener whose accept queue is full" do
      listener = Socket.new(:INET, :STREAM)
      listener.bind(Addrinfo.tcp("127.0.0.1", 0))
      listener.listen(0)
      port = listener.local_address.ip_port
      # Fill the queue; from then on the kernel drops new SYNs (never accepted).
      fillers = Array.new(4) do
        socket = Socket.new(:INET, :STREAM)
        socket.connect_nonblock(Addrinfo.tcp("127.0.0.1", port), exception: false)
        socket
      end
      use_redis(redis_url: "redis://127.0.0.1:#{port}", connect_timeout: 0.5, read_timeout: 0.5)
      expect_typed_failure_within(1.0) { state.temporarily_unapproved? }
    ensure
      fillers&.each(&:close)
      listener&.close
    end

    context "with a server stalled by DEBUG SLEEP" do
      before(:all) { @server = debug_server }
      after(:all) { @server.stop }
      after { @sleeper&.join }

      it "times out mid-command after the default 1 s read timeout" do
        use_redis(redis_url: @server.url)
        expect(ApprovalSync.config.read_timeout).to eq(1.0)
        expect(ApprovalSync.tracker.ping).to eq("PONG")
        @sleeper = stall(@server, 2.5)
        took, error = timed_error { state.start_approval_rules_sync!(member(:a, :b)) }
        expect(error).to be_a(ApprovalSync::TimeoutError)
        expect(took).to be_between(0.9, 1.5)
      end

      it "times out while a connection is being set up, after the configured connect timeout" do
        use_redis(redis_url: @server.url, connect_timeout: 0.4, read_timeout: 3.0)
        @sleeper = stall(@server, 2)
        took, error = timed_error { state.temporarily_unapproved? }
        expect(error).to be_a(ApprovalSync::TimeoutError).or be_a(ApprovalSync::ConnectionError)
        expect(took).to be < 0.9
        @sleeper.join
        expect(state.temporarily_unapproved?).to be(false)
      end

      it "honours a read timeout set with ApprovalSync.configure" do
        use_redis(redis_url: @server.url, read_timeout: 0.3)
        ApprovalSync.tracker.ping
        @sleeper = stall(@server, 1.5)
        took, error = timed_error { co.schedule_reset_approvals!(**reset_args(42, :a, :b)) }
        expect(error).to be_a(ApprovalSync::TimeoutError)
        expect(took).to be_between(0.25, 0.8)
      end
    end
  end

  describe "restart and killed connections (C11)" do
    before(:all) { @server = ApprovalSyncTest::RedisServers.standalone }
    after(:all) { @server.stop }

    before { use_redis(redis_url: @server.url) }

    # The first call after a fault may fail with a typed error; the next must work.
    def calls_after_fault
      outcomes = Array.new(3) do |n|
        state.start_approval_rules_sync!(member(:r, :"s#{n}"))
        :ok
      rescue ApprovalSync::ConnectionError => e
        e.class
      end
      expect(outcomes.drop(1)).to eq(%i[ok ok])
      expect(outcomes.first).to eq(:ok).or eq(ApprovalSync::ConnectionError)
      outcomes.first
    end

    it "recovers from three restarts of the server on the same port" do
      firsts = Array.new(3) do
        expect(state.any_approval_rules_syncing?).to be(false).or be(true)
        @server.restart
        calls_after_fault
      end
      expect(firsts.size).to eq(3)
      expect(state.any_approval_rules_syncing?).to be(true)
    end

    it "recovers from three CLIENT KILLs of its connection" do
      3.times do
        state.any_approval_rules_syncing?
        ids = gem_connection_ids(@server)
        expect(ids.size).to eq(1)
        @server.call("CLIENT", "KILL", "ID", ids.first)
        calls_after_fault
        expect(gem_connection_ids(@server)).not_to eq(ids)
      end
    end
  end

  describe "lost script cache (C08)" do
    include_context "with a standalone server"

    it "runs every script again after SCRIPT FLUSH and applies each effect once" do
      text = member(:a, :b)
      state.start_approval_rules_sync!(text)
      state.start_approval_rules_sync!(text)
      @server.call("SCRIPT", "FLUSH")
      expect(co.schedule_reset_approvals!(**reset_args(42, :a, :b))).to eq(:kept)
      @server.call("SCRIPT", "FLUSH")
      expect(state.finish_approval_rules_sync!(text)).to be(true)
      # One of two instances finished: the finish ran once, not twice.
      expect(state.approval_rules_syncing?(text)).to be(true)
      expect(ApprovalSyncTest::Runtime::RecordingWorker.calls).to eq([])
      @server.call("SCRIPT", "FLUSH")
      expect(state.finish_approval_rules_sync!(text)).to be(true)
      expect(state.approval_rules_syncing?(text)).to be(false)
      expect(ApprovalSyncTest::Runtime::RecordingWorker.calls.size).to eq(1)
      @server.call("SCRIPT", "FLUSH")
      expect(state.finish_approval_rules_sync!(text)).to be(false)
      expect(ApprovalSyncTest::Runtime::RecordingWorker.calls.size).to eq(1)
    end
  end
end
