# frozen_string_literal: true

require "fileutils"
require "optparse"
require "tmpdir"
require_relative "ee"
require_relative "scenario"
require_relative "fleet"
require_relative "report"

module RaceDemo
  # Runs the race demo: one Redis, a few Sidekiq processes, and the same
  # seeded pushes twice, flag off then flag on, each on fresh Redis state.
  class Runner
    ROOT = File.expand_path("..", __dir__)
    LEGACY_DELAY = ApprovalSync::ApprovalRulesSyncCoordinator::RESET_DELAY
    IDLE_TIMEOUT = 90

    LEGEND = [
      "missed: pushes whose range voids an approval that survived (ground truth: CODEOWNERS and the push ranges)",
      "during a sync / partial rules: reset runs that stood although the demo's rule rebuild was mid-flight / " \
      "the rules they read were not CODEOWNERS' full set",
      "re-runs: runs the gem set aside because a sync overlapped them, and ran again after it",
      "keys left: approval_sync:* and mr_*_cannot_merge after ApprovalSync.sweep!, as a cron would run it"
    ].freeze

    PHASES = {
      "off" => "flag off: legacy path, mr_{id}_cannot_merge for 15 s + perform_in(10 s, run as %<delay>s s)",
      "on" => "flag on: deterministic_sync true, syncs tracked, resets kept and gated by the coordinator"
    }.freeze

    class Failure < StandardError; end

    Options = Struct.new(:mrs, :seed, :legacy_delay, :processes, :concurrency, :keep_logs, keyword_init: true)

    def self.parse(argv)
      options = Options.new(mrs: 48, seed: 1, legacy_delay: 1.0, processes: 3,
                            concurrency: 5, keep_logs: false)
      option_parser(options).parse!(argv)
      raise OptionParser::InvalidArgument, "--mrs must be at least 1" unless options.mrs.positive?
      raise OptionParser::InvalidArgument, "--legacy-delay must be positive" unless options.legacy_delay.positive?
      raise OptionParser::InvalidArgument, "--processes must be at least 1" unless options.processes.positive?

      options
    end

    def self.option_parser(options)
      OptionParser.new do |parser|
        parser.banner = "usage: bin/race-demo [--mrs N] [--seed S] [--quick] [--legacy-delay SECONDS]"
        parser.on("--mrs N", Integer, "merge requests (default 48)") { |value| options.mrs = value }
        parser.on("--seed S", Integer, "random seed of the scenario (default 1)") { |value| options.seed = value }
        parser.on("--quick", "a small run for CI smoke tests (8 merge requests)") { options.mrs = 8 }
        parser.on("--legacy-delay SECONDS", Float,
                  "run the legacy 10 s delay as this many seconds, scaling all timings alike (default 1)") do |value|
          options.legacy_delay = value
        end
        parser.on("--processes N", Integer, "Sidekiq processes (default 3)") { |value| options.processes = value }
        parser.on("--keep-logs", "keep the Sidekiq logs after a successful run") { options.keep_logs = true }
      end
    end

    def initialize(options, out: $stdout)
      @options = options
      @out = out
      @scale = options.legacy_delay / LEGACY_DELAY
      @log_dir = Dir.mktmpdir("race-demo-")
    end

    # @return [Integer] exit status
    def run
      started = monotonic
      reports = DemoRedis.with do |url, label|
        @redis_label = label
        with_fleet(url) { %w[off on].map { |flag| phase(flag) } }
      end
      @out.puts
      LEGEND.each { |line| @out.puts line }
      @out.puts "wall time: #{format("%.1f", monotonic - started)} s"
      verdict(reports)
    rescue Interrupt
      @out.puts "\ninterrupted: Sidekiq and Redis stopped"
      130
    rescue Failure, SidekiqFleet::Error, DemoRedis::Error, ApprovalSync::Error => e
      @out.puts "race demo failed: #{e.message}"
      show_logs
      1
    ensure
      FileUtils.rm_rf(@log_dir) unless @keep_logs || @options.keep_logs
    end

    private

    def with_fleet(url)
      ENV["REDIS_URL"] = url
      configure_driver
      fleet = SidekiqFleet.new(count: @options.processes, concurrency: @options.concurrency, root: ROOT,
                               log_dir: @log_dir, env: fleet_env(url))
      print_config(url)
      booted = monotonic
      fleet.start.wait_ready
      wait_for_scheduler
      @out.puts "Sidekiq processes up and polling after #{format("%.1f", monotonic - booted)} s"
      yield
    ensure
      # A second Ctrl-C must not cut the cleanup short.
      previous = trap("INT", "IGNORE")
      fleet&.stop
      trap("INT", previous)
    end

    def fleet_env(url)
      { "REDIS_URL" => url, "DEMO_TIME_SCALE" => @scale.to_s, "DEMO_PARENT_PID" => Process.pid.to_s }
    end

    def configure_driver
      Sidekiq.configure_client do |config|
        config.redis = { url: Settings.redis_url, size: 4 }
        config.client_middleware { |chain| chain.add ThirdPush }
      end
      RaceDemo.configure_approval_sync
    end

    # Sidekiq's poller starts up to 5 s after boot; perform_in only fires
    # once one poller runs, so wait for a scheduled job to come through.
    def wait_for_scheduler
      token = rand(1 << 30).to_s
      SchedulerCanary.perform_in(0.2, token)
      wait_until("the Sidekiq scheduler to poll", 30) { DB.with { |redis| redis.get(SchedulerCanary::KEY) } == token }
    end

    def phase(flag)
      DB.with(&:flushdb)
      scenario = Scenario.new(mrs: @options.mrs, seed: @options.seed, scale: @scale)
      DB.with do |redis|
        scenario.load(redis)
        redis.set(Keys::FLAG, flag)
      end
      started = monotonic
      send_pushes(scenario, started)
      settle(scenario)
      report = DB.with { |redis| PhaseReport.measure(scenario, redis, flag:, elapsed: monotonic - started) }
      print_report(report)
      report
    end

    def send_pushes(scenario, started)
      scenario.timed_pushes.each do |push|
        delay = started + push.at - monotonic
        sleep(delay) if delay.positive?
        mr = scenario.merge_request(push.mr_id)
        PostReceiveWorker.perform_async(PROJECT_ID, push.user_id, push.changes(mr.ref))
      end
    end

    # Waits until every push and reset is done, runs the sweep as the cron
    # would, and waits again for whatever the sweep enqueued.
    def settle(scenario)
      wait_idle(scenario)
      swept = ApprovalSync.sweep!(limit: 10_000)
      wait_idle(scenario) if swept[:enqueued].positive?
    end

    def wait_idle(scenario)
      stable = 0
      wait_until("all pushes and resets to finish", IDLE_TIMEOUT + (scenario.duration * 2)) do
        stable = idle?(scenario) ? stable + 1 : 0
        stable >= 3
      end
    end

    def idle?(scenario)
      done, inflight, third, errors = DB.with do |redis|
        [redis.get(Keys::PUSHES_DONE).to_i, redis.get(Keys::INFLIGHT).to_i, redis.scard(Keys::THIRD_SENT),
         redis.lrange(Keys::ERRORS, 0, 0)]
      end
      raise Failure, "a job raised: #{errors.first}" if errors.any?

      done >= scenario.timed_pushes.size + third && inflight.zero? && Sidekiq::Queue.new("default").size.zero? &&
        Sidekiq::ScheduledSet.new.size.zero? && Sidekiq::RetrySet.new.size.zero?
    end

    def wait_until(what, timeout)
      deadline = monotonic + timeout
      until yield
        raise Failure, "timed out after #{timeout.round}s waiting for #{what}" if monotonic > deadline

        sleep 0.1
      end
    end

    def print_config(url)
      pushes = Scenario.new(mrs: @options.mrs, seed: @options.seed, scale: @scale)
      @out.puts "race demo: #{@options.mrs} merge requests, #{pushes.pushes.size} pushes " \
                "(2 each, a third on #{pushes.third_pushes} sent the moment push 2's reset is queued), " \
                "seed #{@options.seed}"
      @out.puts "redis #{ApprovalSync::Redaction.url(url)} (#{@redis_label}); sidekiq #{Sidekiq::VERSION}: " \
                "#{@options.processes} processes x #{@options.concurrency} threads"
      print_timings
    end

    def print_timings
      unless @scale == 1
        @out.puts "legacy delay #{@scale < 1 ? "shortened" : "lengthened"} from #{LEGACY_DELAY} s to " \
                  "#{fmt(@options.legacy_delay)} s; sync durations scaled by the same factor (x#{fmt(@scale)})"
      end
      gap = Scenario::PUSH_GAP
      @out.puts "per rule rebuild #{range(Scenario::RULE_SECONDS)} ms, one sync in " \
                "#{(1 / Scenario::SLOW_SYNC_SHARE).round} #{Scenario::SLOW_SYNC_FACTOR}x slower; " \
                "3-7 rules per MR; push 2 follows push 1 by #{ms(gap.begin)}-#{ms(gap.end)} ms; " \
                "a new MR every #{ms(Scenario::MR_SPACING)} ms"
      @out.puts "push flow: schedule reset, #{range(Scenario::PREP_SECONDS)} ms refresh work, sync; " \
                "reset: #{range(Scenario::DIFF_SECONDS)} ms diff, read rules, remove approvals"
    end

    def print_report(report)
      @out.puts
      @out.puts "#{format(PHASES.fetch(report.flag), delay: fmt(@options.legacy_delay))} " \
                "(#{format("%.1f", report.elapsed)} s)"
      @out.puts report.table
      report.notes.each { |line| @out.puts "  #{line}" }
    end

    def verdict(reports)
      off, on = reports
      problems = []
      problems << "flag on: faults in #{on.faults.join(", ")}" if on.faults.any?
      problems << "flag off: the race did not show (no reset missed or ran during a sync)" unless off.race_shown?
      if problems.empty?
        @out.puts "OK: flag off reproduces the race, flag on shows no fault"
        return 0
      end

      problems.each { |problem| @out.puts "FAIL: #{problem}" }
      show_logs
      1
    end

    def show_logs
      return if Dir.empty?(@log_dir)

      @keep_logs = true
      @out.puts "logs: #{@log_dir}"
    end

    def ms(seconds) = (seconds * @scale * 1000).round
    def range(seconds) = "#{ms(seconds.begin)}-#{ms(seconds.end)}"
    def fmt(value) = format("%g", value)
    def monotonic = Process.clock_gettime(Process::CLOCK_MONOTONIC)
  end
end
