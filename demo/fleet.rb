# frozen_string_literal: true

require "English"
require "sidekiq/api"
require_relative "ee"

module RaceDemo
  # The demo's Sidekiq processes: started from the Debian binary, each in its
  # own process group (a Ctrl-C in the terminal reaches only the driver, which
  # then stops them), logging into the run's temp dir.
  class SidekiqFleet
    BINARY = "sidekiq"
    STOP_WAIT = 10

    class Error < StandardError; end

    attr_reader :logs

    def initialize(count:, concurrency:, root:, log_dir:, env:)
      @count = count
      @concurrency = concurrency
      @root = root
      @log_dir = log_dir
      @env = env
      @pids = []
      @logs = []
    end

    def start
      @count.times do |index|
        log = File.join(@log_dir, "sidekiq-#{index + 1}.log")
        command = [BINARY, "-r", "./demo/sidekiq_boot.rb", "-c", @concurrency.to_s, "-q", "default", "-t", "5"]
        begin
          @pids << Process.spawn(@env, *command, chdir: @root, pgroup: true, in: File::NULL, %i[out err] => [log, "w"])
        rescue SystemCallError => e
          raise Error, "cannot start #{BINARY} (apt-get install ruby-sidekiq): #{e.message}"
        end
        @logs << log
      end
      self
    end

    # Waits until every process has registered with Sidekiq.
    def wait_ready(timeout: 60)
      deadline = monotonic + timeout
      loop do
        ensure_alive
        registered = Sidekiq::ProcessSet.new(false).map { |process| process["pid"] }
        return self if (@pids - registered).empty?
        raise Error, "Sidekiq did not come up within #{timeout}s" if monotonic > deadline

        sleep 0.1
      end
    end

    def ensure_alive
      @pids.each do |pid|
        next unless Process.waitpid(pid, Process::WNOHANG)

        @pids.delete(pid)
        raise Error, "Sidekiq process #{pid} exited (#{$CHILD_STATUS})"
      end
    end

    # TERM, wait, then KILL whatever is left. Safe to call more than once.
    def stop
      @pids.each { |pid| signal("TERM", pid) }
      deadline = monotonic + STOP_WAIT
      @pids.each { |pid| reap(pid, deadline) }
      @pids.clear
    end

    private

    def reap(pid, deadline)
      until Process.waitpid(pid, Process::WNOHANG)
        if monotonic > deadline
          signal("KILL", -pid)
          Process.waitpid(pid)
          return
        end
        sleep 0.05
      end
    rescue Errno::ECHILD
      nil
    end

    def signal(name, pid)
      Process.kill(name, pid)
    rescue Errno::ESRCH
      nil
    end

    def monotonic = Process.clock_gettime(Process::CLOCK_MONOTONIC)
  end

  # The Redis the demo runs on: its own redis-server on a free loopback port
  # (the test suite's launcher), or REDIS_URL's database if it is empty.
  module DemoRedis
    class Error < StandardError; end

    module_function

    # @yieldparam url [String]
    # @yieldparam label [String] where it came from, for the output
    def with(&)
      url = ENV.fetch("REDIS_URL", nil)
      url ? with_given(url, &) : with_own(&)
    end

    def with_own
      require_relative "../spec/support/redis_servers"
      begin
        server = ApprovalSyncTest::RedisServers.standalone
      rescue ApprovalSyncTest::RedisServers::Error => e
        raise Error, "cannot start redis-server: #{e.message}"
      end
      begin
        yield server.url, "own redis-server, stopped at the end"
      ensure
        server.stop
      end
    end

    def with_given(url)
      size = call(url, &:dbsize)
      unless size.zero?
        raise Error, "REDIS_URL #{ApprovalSync::Redaction.url(url)} holds #{size} keys; the demo flushes its " \
                     "database between phases, so point it at an empty one (e.g. .../15)"
      end

      begin
        yield url, "REDIS_URL, database emptied at the end"
      ensure
        call(url, &:flushdb)
      end
    end

    def call(url)
      redis = Redis.new(url:)
      yield redis
    ensure
      redis&.close
    end
  end
end
