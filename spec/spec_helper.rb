# frozen_string_literal: true

require "logger"
require "rbconfig"
require "stringio"

lib = File.expand_path("../lib", __dir__)
$LOAD_PATH.unshift(lib) unless $LOAD_PATH.include?(lib)

native = File.join(lib, "approval_sync", "approval_sync.#{RbConfig::CONFIG["DLEXT"]}")
unless File.exist?(native)
  abort "approval_sync: #{native} is missing. Build the native extension first: run `rake compile` " \
        "in #{File.dirname(lib)}."
end

require "approval_sync"
require "approval_sync/rspec"
require "redis"
require_relative "support/redis_servers"

module ApprovalSyncTest
  # The one Redis the whole run uses: REDIS_URL when set (a throwaway
  # database: every example flushes it), else a redis-server of our own.
  module Suite
    class << self
      # @return [String]
      def redis_url
        @redis_url ||= ENV.fetch("REDIS_URL") { (@server = RedisServers.standalone).url }
      end

      # @return [void]
      def stop
        @server&.stop
        @server = nil
      end
    end
  end

  # The keys of merge request 42 and the sweep's index, as the brief names them.
  LEGACY = "mr_42_cannot_merge"
  MARKERS = "approval_sync:{mr_42_cannot_merge}:markers"
  RESETS = "approval_sync:{mr_42_cannot_merge}:resets"
  DUE = "approval_sync:due"
  REF = "refs/heads/feature"

  # What callers pass where an id belongs, and what they must not.
  BAD_IDS = [nil, 0, -1, 2**64, "42", 4.2, :"42"].freeze
  # Strings and non-Strings a rev must never be (each raises, nothing written).
  BAD_REVS = [
    nil, 42, :aaa111, "", "aaa111:bbb222", "aaa111\0", "aaa111{}", ("\xFF".b * 40).force_encoding("UTF-8"),
    "a" * 10_000_000, "g" * 40
  ].freeze

  # A merge request as the host application has it: the flag is asked with it.
  FakeMergeRequest = Struct.new(:id, :project)

  # Example helpers of the project's own specs.
  module SpecHelpers
    # 40-hex-digit SHAs: rev(:aaa111) => "aaa111" followed by 34 zeros.
    def rev(name)
      name.to_s.ljust(40, "0")
    end

    # A redis-rb connection to the suite's server, closed after the example.
    def redis
      @redis ||= Redis.new(url: ApprovalSyncTest::Suite.redis_url)
    end

    # Every key in the database, sorted.
    def redis_keys
      redis.keys("*").sort
    end

    # What the gem logged during this example.
    def log_output
      @approval_sync_log.string
    end

    # The resets hash of a merge request, entries decoded by the kit.
    def kept(id)
      approval_sync_kept_resets(id)
    end

    # ArgumentError or TypeError: what every bad argument raises.
    def bad_argument
      an_instance_of(ArgumentError).or(an_instance_of(TypeError))
    end

    # Waits up to `timeout` seconds for the block to return truthy.
    def eventually(timeout: 3, interval: 0.02)
      deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + timeout
      loop do
        result = yield
        return result if result
        raise "condition not met within #{timeout}s" if Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline

        sleep interval
      end
    end
  end
end

RSpec.configure do |config|
  config.include ApprovalSyncTest::SpecHelpers
  config.filter_run_when_matching :focus
  config.order = :random
  Kernel.srand config.seed
  config.expect_with(:rspec) { |expectations| expectations.include_chain_clauses_in_custom_matcher_descriptions = true }
  config.mock_with(:rspec) { |mocks| mocks.verify_partial_doubles = true }

  config.before(:suite) { ApprovalSyncTest::Suite.redis_url }
  config.after(:suite) { ApprovalSyncTest::Suite.stop }

  config.before do
    @approval_sync_log = StringIO.new
    ApprovalSync.reset!
    ApprovalSync.configure do |settings|
      settings.redis_url = ApprovalSyncTest::Suite.redis_url
      settings.logger = Logger.new(@approval_sync_log)
    end
    redis.flushdb
  end

  config.after do
    redis.flushdb
    @redis&.close
  end
end
