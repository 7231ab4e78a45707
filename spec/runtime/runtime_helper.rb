# frozen_string_literal: true

require_relative "../spec_helper"
require "digest"
require "timeout"

module ApprovalSyncTest
  # Shared by the runtime specs (threads, forks, faults, topologies), which
  # start their own servers because they restart, stall or reshape them.
  module Runtime
    # A reset worker that records every call; safe across threads.
    class RecordingWorker
      @calls = []
      @lock = Mutex.new

      class << self
        def perform_async(*args)
          @lock.synchronize { @calls << [:async, args] }
          "jid"
        end

        def perform_in(delay, *args)
          @lock.synchronize { @calls << [:in, delay, args] }
          "jid"
        end

        def calls
          @lock.synchronize { @calls.dup }
        end

        def clear!
          @lock.synchronize { @calls.clear }
        end
      end
    end

    # Example helpers.
    module Helpers
      def monotonic
        Process.clock_gettime(Process::CLOCK_MONOTONIC)
      end

      # Seconds the block took; the block's error, if any, is left to the caller.
      def elapsed
        start = monotonic
        yield
        monotonic - start
      end

      # [seconds, the exception raised or nil].
      def timed_error
        start = monotonic
        begin
          yield
          [monotonic - start, nil]
        rescue Exception => e # rubocop:disable Lint/RescueException -- Timeout and kill are the point
          [monotonic - start, e]
        end
      end

      # Counts the 10 ms ticks of another thread while the block runs.
      # @return [Array(Integer, Float)] ticks and seconds
      def ticks_during(&)
        ticks = 0
        ticker = Thread.new do
          loop do
            ticks += 1
            sleep 0.01
          end
        end
        took = elapsed(&)
        [ticks, took]
      ensure
        ticker&.kill
      end

      # The ApprovalSync::Error the block raised, or nil.
      def gem_error
        yield
        nil
      rescue ApprovalSync::Error => e
        e
      end

      # Points the gem at a server with the flag on and the recording worker.
      def use_redis(**settings)
        # Closes the previous tracker's connection now rather than at its GC,
        # so connection counts on a server see only the current one.
        ApprovalSync.instance_variable_get(:@tracker)&.discard
        ApprovalSync.reset!
        # Trackers of earlier examples (and of the kit's cleanup) close their
        # connections when collected.
        GC.start
        RecordingWorker.clear!
        ApprovalSync.configure do |c|
          c.redis_url = nil
          settings.each { |name, value| c.public_send(:"#{name}=", value) }
          c.deterministic_sync = ->(_merge_request) { true }
          c.reset_approvals_worker = RecordingWorker
        end
      end

      # The gem's connections on a server: it names them with CLIENT SETNAME.
      def gem_connections(server)
        server.call("CLIENT", "LIST").lines.select { |line| line.include?(" name=approval_sync ") }
      end

      def gem_connection_ids(server)
        gem_connections(server).map { |line| line[/\bid=(\d+)/, 1].to_i }
      end

      # A redis-server with DEBUG enabled, for DEBUG SLEEP.
      def debug_server(**options)
        RedisServers::Server.new(extra_config: [%w[enable-debug-command yes]], **options).start
      end

      # Blocks the whole server for `seconds` from a raw connection of its own.
      def stall(server, seconds)
        thread = Thread.new do
          raw = server.client(timeout: seconds + 5)
          raw.call("DEBUG", "SLEEP", seconds.to_s)
        ensure
          raw&.close
        end
        # DEBUG SLEEP holds the event loop; wait until a PING no longer answers.
        probe = server.client(timeout: 0.05, reconnect_attempts: 0)
        30.times do
          probe.ping
          sleep 0.01
        rescue Redis::BaseError
          break
        end
        probe.close
        thread
      end

      # A 40-hex-digit SHA standing for `name`.
      def sha(name)
        Digest::SHA1.hexdigest(name.to_s)
      end

      def member(old, new)
        "code_owner:#{sha(old)}:#{sha(new)}"
      end

      def reset_args(id, old, new)
        { project_id: 7, user_id: id, ref: "refs/heads/mr#{id}", newrev: sha(new), oldrev: sha(old) }
      end

      # One merge request's whole flow with checks on every reply; returns the
      # number of replies that were not what the protocol says.
      def lifecycle_mismatches(id, round)
        old = "a#{round}"
        new = "b#{round}"
        state = ApprovalSync::ApprovalState.new(id)
        co = ApprovalSync::ApprovalRulesSyncCoordinator.new(id)
        mismatches = 0
        mismatches += 1 unless state.start_approval_rules_sync!(member(old, new)) == true
        mismatches += 1 unless state.approval_rules_syncing?(member(old, new)) == true
        mismatches += 1 unless co.schedule_reset_approvals!(**reset_args(id, old, new)) == :kept
        mismatches += 1 unless state.finish_approval_rules_sync!(member(old, new)) == true
        mismatches += 1 unless state.approval_rules_syncing?(member(old, new)) == false
        mismatches + (co.reset_approvals!(**reset_args(id, old, new)) { :reset } == true ? 0 : 1)
      end
    end
  end
end

# One plain redis-server for the group, flushed before each example.
RSpec.shared_context "with a standalone server" do
  before(:all) { @server = ApprovalSyncTest::RedisServers.standalone }
  after(:all) { @server.stop }

  before do
    use_redis(redis_url: @server.url)
    @server.call("FLUSHALL")
  end
end

RSpec.configure do |config|
  # Only the runtime specs: these helpers would shadow other files' lets.
  config.include ApprovalSyncTest::Runtime::Helpers, file_path: %r{spec/runtime/}
  # The next example's reset! only forgets the tracker; close its connection now.
  config.after { ApprovalSync.instance_variable_get(:@tracker)&.discard }
end
