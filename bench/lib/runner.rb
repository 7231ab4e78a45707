# frozen_string_literal: true

require "etc"
require "json"
require "optparse"
require "rbconfig"

require_relative "ops"
require_relative "probes"
require_relative "judge"
require_relative "memory"
require_relative "report"
require_relative "scaling"
require_relative "timing"

module ApprovalSyncBench
  ROOT = File.expand_path("../..", __dir__)

  # bench/run: starts its own redis-server, measures the gem and the
  # reference on it in one run, prints the tables and the targets.
  class Runner
    PROFILES = {
      full: { samples: 5000, block: 250, warmup: 1.0, time: 2.0, batch: 256, threads: [1, 2, 4, 8],
              rss_ops: 1_000_000, rss_warm: 100_000, rss_every: 100_000, rss_threads: 4,
              memory_mrs: 1000, counted: 50 },
      quick: { samples: 40, block: 20, warmup: 0.02, time: 0.05, batch: 8, threads: [1, 2, 4, 8],
               rss_ops: 4000, rss_warm: 1000, rss_every: 1000, rss_threads: 4,
               memory_mrs: 10, counted: 3 }
    }.freeze

    def initialize(argv)
      @profile = :full
      @json = nil
      @compile = true
      @lib = File.join(ROOT, "lib")
      OptionParser.new do |o|
        o.banner = "Usage: bench/run [--quick] [--json FILE] [--no-compile] [--lib DIR]"
        o.on("--quick", "tiny counts (smoke run, no meaningful figures)") { @profile = :quick }
        o.on("--json FILE", "also write the results as JSON") { |file| @json = File.expand_path(file) }
        o.on("--no-compile", "use lib/approval_sync's extension as built") { @compile = false }
        o.on("--lib DIR", "load the gem from DIR instead (compare builds; implies --no-compile)") do |dir|
          @lib = File.expand_path(dir)
          @compile = false
        end
      end.parse!(argv)
      @settings = PROFILES.fetch(@profile)
      @report = Report.new
      @targets = Targets.new
      @results = { profile: @profile, command: "bench/run #{argv.join(" ")}".strip }
    end

    def run
      load_code
      @server = ApprovalSyncTest::RedisServers.standalone
      @admin = @server.client
      configure_gem
      @sides = [GemSide.new, ReferenceSide.new(@server.url)]
      @ids = Ids.new
      @measure = Measure.new(@ids, **@settings.slice(:samples, :block, :warmup, :time))
      sections
      0
    ensure
      @admin&.close
      @server&.stop
    end

    private

    def sections
      machine
      Timing.new(@measure, @admin).run(@sides, @report, @results)
      RoundTrips.new(@server, @admin, @settings, method(:next_id)).run(@sides, @report, @results)
      scaling
      memory
      judge
      @targets.print(@report)
      @results[:targets] = @targets.results.map(&:to_h)
      @results[:machine][:load_after] = load_average
      @report.line("\nload average at the end: #{load_average}")
      File.write(@json, JSON.pretty_generate(@results)) if @json
    end

    def load_code
      if @compile
        system(RbConfig.ruby, "-S", "rake", "compile", chdir: ROOT, out: $stderr) or
          abort "bench/run: `rake compile` failed"
      end
      $LOAD_PATH.unshift(@lib)
      require "approval_sync"
      require File.join(ROOT, "spec", "support", "redis_servers")
      require_relative "sides"
    end

    def configure_gem
      url = @server.url
      ApprovalSync.configure do |c|
        c.redis_url = url
        c.deterministic_sync = ->(_merge_request) { true }
        c.reset_approvals_worker = NoopWorker
        c.logger = nil
        # Eight threads on two shared cores can wait long for the I/O thread.
        c.read_timeout = 5.0
      end
    end

    def machine
      info = @admin.info("server")
      @results[:machine] = {
        nproc: Etc.nprocessors,
        cpu: File.read("/proc/cpuinfo")[/^model name\s*:\s*(.+)$/, 1],
        ruby: RUBY_DESCRIPTION,
        redis_rb: Redis::VERSION,
        redis_server: info["redis_version"],
        approval_sync: "#{ApprovalSync::VERSION} from #{@lib}",
        load_before: load_average,
        redis_pid: @server.pid
      }
      @report.section("Machine (#{@profile} run)")
      @results[:machine].each { |key, value| @report.line("#{key}: #{value}") }
      @report.line("redis-server: #{@server.url}, pid #{@server.pid}, no persistence")
    end

    def load_average = File.read("/proc/loadavg").split.first(3).join(" ")

    def scaling
      Scaling.new(@measure, @admin, @settings, next_id).run(@sides, @report, @results)
    end

    def memory
      Memory.new(@admin, @settings, method(:next_id)).run(@sides, @report, @results)
    end

    def next_id = @ids.next

    def judge
      Judge.new(@results, Timing.floor(@results)).run(@targets)
    end
  end
end
