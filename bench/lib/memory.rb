# frozen_string_literal: true

module ApprovalSyncBench
  # Redis memory per merge request, keys left after whole lifecycles, and
  # this process's RSS over a million gem calls.
  class Memory
    STATES = {
      sync: ["1 sync tracked", ->(side, id) { side.start(id) }],
      kept: ["1 sync + 1 kept reset", ->(side, id) { side.kept(id) }]
    }.freeze

    def initialize(admin, settings, next_id)
      @admin = admin
      @settings = settings
      @next_id = next_id
    end

    def run(sides, report, results)
      per_mr = STATES.to_h { |key, (_, setup)| [key, sides.to_h { |side| [side.name, footprint(side, &setup)] }] }
      left = sides.to_h { |side| [side.name, leftovers(side)] }
      rss = rss_growth(sides.find { |side| side.name == "gem" })
      results[:memory] = { per_merge_request: per_mr, leftovers: left, rss: rss }
      print_footprint(report, per_mr, sides)
      print_leftovers(report, left)
      print_rss(report, rss)
    end

    private

    def fresh_id = @next_id.call

    def footprint(side, &setup)
      @admin.flushdb
      count = @settings[:memory_mrs]
      before = used_memory
      ids = Array.new(count) { fresh_id.tap { |id| setup.call(side, id) } }
      keys = @admin.keys("*")
      bytes = keys.sum { |key| @admin.call("MEMORY", "USAGE", key, "SAMPLES", "0").to_i }
      { bytes: bytes.fdiv(count), used_memory: (used_memory - before).fdiv(count), keys: keys.size.fdiv(count),
        **key_names(keys, ids.first) }
    ensure
      @admin.flushdb
    end

    # One merge request's keys with its id as {id}, and keys no merge request owns.
    def key_names(keys, id)
      { names: keys.select { |k| k.include?(id.to_s) }.map { |k| k.sub(id.to_s, "{id}") }.sort,
        shared: keys.grep_v(/\d{7}/).sort }
    end

    def used_memory = @admin.info("memory")["used_memory"].to_i

    # Every flow run to its end: push, push with a kept reset, the create
    # flow, the legacy flag, a cleared merge request, a reset scheduled
    # inside sync_code_owners!.
    def leftovers(side)
      @admin.flushdb
      jobs = NoopWorker.jobs
      side.push(fresh_id)
      side.kept_push(fresh_id)
      create_flow(side, fresh_id)
      legacy_flag(side, fresh_id)
      cleared(side, fresh_id)
      nested(side, fresh_id)
      { keys: @admin.keys("*"), jobs: NoopWorker.jobs - jobs }
    ensure
      @admin.flushdb
    end

    def create_flow(side, id)
      side.start(id, nil, nil)
      side.finish(id, nil, nil)
    end

    def legacy_flag(side, id)
      side.temporarily_unapprove!(id)
      side.expire_unapproved_key!(id)
    end

    def cleared(side, id)
      side.start(id)
      side.schedule(id)
      side.clear!(id)
      side.finish(id)
    end

    def nested(side, id)
      side.sync(id) { side.schedule(id) }
      side.reset(id) { nil }
    end

    # Half the calls on an idle merge request, half on one with three syncs;
    # a fresh busy one per chunk so no marker reaches its TTL.
    def rss_growth(side)
      pool = Pool.new(@settings[:rss_threads])
      idle = fresh_id
      pool_chunk(pool, side, idle, @settings[:rss_warm])
      GC.start
      samples = [[0, Rss.kib]]
      started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
      (@settings[:rss_ops] / @settings[:rss_every]).times do |i|
        pool_chunk(pool, side, idle, @settings[:rss_every])
        samples << [(i + 1) * @settings[:rss_every], Rss.kib]
      end
      rss_result(samples, Process.clock_gettime(Process::CLOCK_MONOTONIC) - started)
    ensure
      pool&.stop
    end

    def rss_result(samples, seconds)
      GC.start
      { ops: @settings[:rss_ops], threads: @settings[:rss_threads], seconds: seconds, start_kib: samples.first.last,
        end_kib: Rss.kib, max_kib: samples.map(&:last).max, samples: samples }
    end

    def pool_chunk(pool, side, idle, count)
      busy = fresh_id
      side.make_busy(busy)
      pool.run(count / 2) { side.temporarily_unapproved?(idle) }
      pool.run(count - (count / 2)) { side.temporarily_unapproved?(busy) }
    end

    def print_footprint(report, per_mr, sides)
      report.section("Redis memory per merge request (#{@settings[:memory_mrs]} merge requests)")
      rows = STATES.flat_map do |key, (label, _)|
        sides.map do |side|
          m = per_mr[key][side.name]
          [label, side.name, m[:bytes].round, m[:used_memory].round, format("%.2f", m[:keys]),
           (m[:names] + m[:shared]).join(" ")]
        end
      end
      report.table(["state", "side", "MEMORY USAGE B", "used_memory B", "keys", "key names"], rows, left: [1, 5])
    end

    def print_leftovers(report, left)
      report.section("Keys left after whole lifecycles (6 merge requests, every flow run to its end)")
      report.table(%w[side keys resets-handed-out names],
                   left.map { |name, l| [name, l[:keys].size, l[:jobs], l[:keys].first(5).join(" ")] }, left: [3])
    end

    def print_rss(report, rss)
      report.section("RSS over #{Report.ops(rss[:ops])} gem calls (temporarily_unapproved?, " \
                     "#{rss[:threads]} threads, #{format("%.1f", rss[:seconds])} s)")
      report.line(rss[:samples].map { |ops, kib| "#{Report.ops(ops)}: #{kib} KiB" }.join(", "))
      report.line("start #{rss[:start_kib]} KiB, end #{rss[:end_kib]} KiB (after GC), growth " \
                  "#{rss[:end_kib] - rss[:start_kib]} KiB, max #{rss[:max_kib]} KiB")
    end
  end
end
