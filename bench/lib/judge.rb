# frozen_string_literal: true

module ApprovalSyncBench
  # Turns the results into the issue's targets.
  class Judge
    SPEEDUP = 2.0
    NEAR_FLOOR = 1.3
    THREAD_GAIN = 2.5
    HEADLINE = %i[idle busy push].freeze

    def initialize(results, floor)
      @results = results
      @floor = floor
    end

    def run(targets)
      one_round_trip(targets)
      HEADLINE.each do |key|
        speedup(targets, key)
        near_floor(targets, key)
      end
      threads(targets)
      rss(targets)
      leftovers(targets)
    end

    private

    def label(key) = Ops[key].label

    def one_round_trip(targets)
      off = Ops::ALL.filter_map do |task|
        seen = @results[:round_trips][task.key]["gem"][:round_trips]
        "#{task.label}: #{seen.round(2)} for #{Ops::STEPS[task.key]} step(s)" unless seen == Ops::STEPS[task.key]
      end
      targets.check("one round trip per public call", off.empty?,
                    off.empty? ? "all #{Ops::ALL.size} operations" : off.join("; "))
    end

    def speedup(targets, key)
      gem, ref = @results[:throughput][key].values_at("gem", "reference").map { |v| v[:ips] }
      targets.check("#{label(key)}: >= #{SPEEDUP}x reference calls/s", gem >= SPEEDUP * ref,
                    "#{Report.ratio(gem / ref)} (#{Report.ops(gem)} vs #{Report.ops(ref)})")
    end

    # The floor of a call making n round trips is n plain round trips.
    def near_floor(targets, key)
      p50 = @results[:latency][key]["gem"][:p50]
      floor = @floor * Ops::STEPS[key]
      targets.check("#{label(key)}: p50 <= #{NEAR_FLOOR}x floor", p50 <= NEAR_FLOOR * floor,
                    "#{Report.ratio(p50 / floor)} (#{Report.us(p50)} µs vs #{Report.us(floor)} µs)")
    end

    # Met when four threads gain enough, or when Redis ran out of CPU at
    # four threads or fewer (then more threads cannot help).
    def threads(targets)
      rows = @results[:scaling].select { |r| r[:side] == "gem" && r[:mode].include?("thread") }
      by_mode = rows.to_h { |r| [r[:mode], r] }
      four = by_mode.fetch("4 threads")
      gain = four[:ips] / by_mode.fetch("1 thread")[:ips]
      saturated = rows.find { |r| r[:redis_cpu] >= Targets::SATURATED }
      met = gain >= THREAD_GAIN || (saturated && saturated[:mode].to_i <= 4)
      targets.check("4 threads >= #{THREAD_GAIN}x 1 thread (until Redis saturates)", met,
                    thread_note(gain, four, saturated))
    end

    def thread_note(gain, four, saturated)
      note = "#{Report.ratio(gain)}; at 4 threads redis-server used #{Report.pct(four[:redis_cpu])} of a core, " \
             "the machine #{format("%.2f", four[:machine_cores])} of #{Etc.nprocessors} cores"
      saturated ? "#{note}; Redis saturated at #{saturated[:mode]}" : note
    end

    def rss(targets)
      rss = @results[:memory][:rss]
      growth = rss[:end_kib] - rss[:start_kib]
      targets.check("RSS growth over #{Report.ops(rss[:ops])} calls <= #{Targets::RSS_NOISE_KIB} KiB",
                    growth <= Targets::RSS_NOISE_KIB, "#{growth} KiB (#{rss[:start_kib]} -> #{rss[:end_kib]} KiB)")
    end

    def leftovers(targets)
      left = @results[:memory][:leftovers]["gem"][:keys]
      targets.check("zero keys left after lifecycles", left.empty?,
                    left.empty? ? "0 keys" : "#{left.size} keys: #{left.first(3).join(" ")}")
    end
  end
end
