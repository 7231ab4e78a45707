# frozen_string_literal: true

module ApprovalSyncBench
  # Latency samples for every timed operation; benchmark-ips where calls can
  # run back to back, else the mean of the samples.
  class Timing
    def initialize(measure, admin)
      @measure = measure
      @admin = admin
    end

    def run(sides, report, results)
      @results = results
      latency = results[:latency] = {}
      throughput = results[:throughput] = {}
      Ops::TIMED.each do |task|
        with_companion(task.companion) do
          @admin.flushdb
          latency[task.key] = @measure.latency(task, sides)
          @admin.flushdb
          throughput[task.key] = throughput(task, sides)
        end
      end
      @admin.flushdb
      print_latency(report)
      print_throughput(report)
    end

    # The cheaper of the two plain round trips.
    def self.floor(results)
      results[:latency][:ping].values.map { |side| side[:p50] }.min
    end

    private

    def with_companion(wanted)
      companion = Thread.new { sleep } if wanted
      yield
    ensure
      companion&.kill&.join
    end

    def throughput(task, sides)
      return @measure.ips(task, sides).transform_values { |v| v.merge(source: "ips") } if task.ips?

      @results[:latency][task.key].transform_values { |v| { ips: 1e6 / v[:mean], sd: nil, source: "samples" } }
    end

    def pair(section, task) = @results[section][task.key].values_at("gem", "reference")

    def print_latency(report)
      floor = Timing.floor(@results)
      report.section("Latency, single thread (µs; floor = lower PING p50 = #{Report.us(floor)} µs)")
      rows = Ops::TIMED.map do |task|
        gem, ref = pair(:latency, task)
        [task.label, *[gem, ref].flat_map { |side| [Report.us(side[:p50]), Report.us(side[:p99])] },
         Report.ratio(gem[:p50] / ref[:p50]), Report.ratio(gem[:p50] / floor)]
      end
      report.table(["operation", "gem p50", "gem p99", "ref p50", "ref p99", "gem/ref p50", "gem p50/floor"], rows)
    end

    def print_throughput(report)
      report.section("Throughput, single thread (calls/s; benchmark-ips unless marked)")
      rows = Ops::TIMED.map do |task|
        gem, ref = pair(:throughput, task)
        [task.label, Report.ops(gem[:ips]), Report.ops(ref[:ips]), Report.ratio(gem[:ips] / ref[:ips]),
         gem[:source] == "ips" ? "ips" : "1/mean of samples"]
      end
      report.table(["operation", "gem", "reference", "gem/ref", "source"], rows)
    end
  end

  # Requests the server received per call (MONITOR), and the commands it ran
  # for them, those inside scripts included.
  class RoundTrips
    def initialize(server, admin, settings, next_id)
      @server = server
      @admin = admin
      @count = settings[:counted]
      @next_id = next_id
    end

    def run(sides, report, results)
      monitor = Monitor.new(@server)
      results[:round_trips] = Ops::ALL.to_h do |task|
        [task.key, sides.to_h { |side| [side.name, count_calls(monitor, task, side)] }]
      end
      print(report, results[:round_trips])
    ensure
      monitor&.close
    end

    private

    def prepared(task, side)
      id = @next_id.call
      task.prepare&.call(side, id)
      id
    end

    def count_calls(monitor, task, side)
      @admin.flushdb
      # The first call of a script also loads it (NOSCRIPT, SCRIPT LOAD).
      task.call.call(side, prepared(task, side))
      shared = prepared(task, side) unless task.fresh
      ids = Array.new(@count) { shared || prepared(task, side) }
      count = monitor.count { ids.each { |id| task.call.call(side, id) } }
      { round_trips: count.round_trips.fdiv(@count), commands: count.commands.fdiv(@count),
        names: count.names.transform_values { |v| v.fdiv(@count) } }
    ensure
      @admin.flushdb
    end

    def print(report, counts)
      report.section("Round trips per call, counted by the server (MONITOR; MULTI..EXEC = 1, EVALSHA = 1)")
      rows = Ops::ALL.map do |task|
        sides = counts[task.key].values_at("gem", "reference")
        [task.label, Ops::STEPS[task.key], *%i[round_trips commands].flat_map { |k| sides.map { |s| fmt(s[k]) } }]
      end
      report.table(["operation", "steps", "gem RT", "ref RT", "gem cmds", "ref cmds"], rows)
      report.line("(cmds = every command the server ran, those inside scripts and transactions included)")
      names = counts[:idle]["gem"][:names].map { |k, v| "#{k} #{fmt(v)}" }.join(", ")
      report.line("gem temporarily_unapproved? idle runs: #{names}")
    end

    def fmt(value) = (value % 1).zero? ? value.to_i.to_s : format("%.2f", value)
  end
end
