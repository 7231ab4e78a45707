# frozen_string_literal: true

module ApprovalSyncBench
  # temporarily_unapproved? (idle) with 1, 2, 4, 8 threads in this process
  # and with 2 forked processes, with the CPU that redis-server, this process
  # and the machine used meanwhile, to show which one runs out first.
  class Scaling
    def initialize(measure, admin, settings, id)
      @measure = measure
      @cpu = CpuMeter.new(admin)
      @settings = settings
      @id = id
    end

    def run(sides, report, results)
      rows = @settings[:threads].flat_map do |threads|
        sides.map { |side| row("#{threads} thread#{"s" if threads > 1}", side) { threaded(side, threads) } }
      end
      rows += sides.map { |side| row("2 processes", side) { @measure.forked_ips(side, 2) { |own| call(own) } } }
      results[:scaling] = rows
      print(report, rows, sides)
    end

    private

    def call(side) = side.temporarily_unapproved?(@id)

    def threaded(side, threads)
      @measure.threaded_ips(side, threads, @settings[:batch]) { call(side) }
    end

    def row(mode, side)
      result = nil
      usage = @cpu.measure { result = yield }
      { mode: mode, side: side.name, ips: result[:ips], sd: result[:sd], redis_cpu: usage.redis_share,
        ruby_cpu: usage.ruby_share, machine_cores: usage.machine_cores }
    end

    def print(report, rows, sides)
      report.section("Scaling: temporarily_unapproved? idle (calls/s; CPU = share of one core, " \
                     "machine = busy cores of #{Etc.nprocessors})")
      base = sides.to_h { |side| [side.name, rows.find { |r| r[:side] == side.name }[:ips]] }
      report.table(["mode", "side", "calls/s", "x 1 thread", "redis CPU", "ruby CPU", "machine"],
                   rows.map { |r| cells(r, base[r[:side]]) })
    end

    def cells(row, base)
      [row[:mode], row[:side], Report.ops(row[:ips]), Report.ratio(row[:ips] / base), Report.pct(row[:redis_cpu]),
       Report.pct(row[:ruby_cpu]), format("%.2f", row[:machine_cores])]
    end
  end
end
