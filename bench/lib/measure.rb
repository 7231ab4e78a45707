# frozen_string_literal: true

require "English"
require "benchmark/ips"
require "json"

module ApprovalSyncBench
  # One measured operation. `call` is timed; `prepare` (untimed) sets up the
  # merge request first. With `fresh`, every call gets a merge request of its
  # own (writes that would pile up on one, or need one prepared each time);
  # otherwise all calls of a side share one prepared merge request.
  # With `companion`, a second Ruby thread sleeps meanwhile, as in any
  # threaded server: Ruby then skips its per-call helper thread for an
  # unblocking function (see docs/benchmarks.md).
  Op = Struct.new(:key, :label, :call, :prepare, :fresh, :companion, keyword_init: true) do
    # benchmark-ips can only time calls back to back: a per-call setup that
    # talks to Redis would be timed with them.
    def ips? = !(fresh && prepare)
  end

  # Merge request ids never used before in this run.
  class Ids
    def initialize(start = 1_000_000)
      @next = start
      @lock = Mutex.new
    end

    def next = @lock.synchronize { @next += 1 }
  end

  # Latency from per-call clock samples; throughput from benchmark-ips.
  class Measure
    def initialize(ids, samples:, block:, warmup:, time:)
      @ids = ids
      @samples = samples
      @block = block
      @warmup = warmup
      @time = time
    end

    # Per-call latency in µs, the sides taking turns in blocks so that
    # machine noise lands on both alike.
    def latency(task, sides)
      fixed = fixed_ids(task, sides)
      times = sides.to_h { |side| [side.name, []] }
      sides.each { |side| run_block(task, side, fixed[side.name], [], [@block / 4, 5].max) }
      (@samples.to_f / @block).ceil.times do
        sides.each { |side| run_block(task, side, fixed[side.name], times[side.name], @block) }
      end
      times.transform_values { |list| summary(list) }
    end

    # Calls per second of each side, single thread.
    def ips(task, sides)
      fixed = fixed_ids(task, sides)
      report = Benchmark.ips(warmup: @warmup, time: @time, quiet: true) do |x|
        sides.each do |side|
          id = fixed[side.name]
          x.report(side.name) { task.call.call(side, task.fresh ? @ids.next : id) }
        end
      end
      report.entries.to_h { |entry| [entry.label, { ips: entry.ips, sd: entry.ips_sd }] }
    end

    # Calls per second with `threads` Ruby threads in this process; each
    # benchmark-ips iteration is a batch of `batch` calls shared out to them.
    def threaded_ips(side, threads, batch, &)
      pool = Pool.new(threads)
      report = Benchmark.ips(warmup: @warmup, time: @time, quiet: true) do |x|
        x.report(side.name) { pool.run(batch, &) }
      end
      entry = report.entries.first
      { ips: entry.ips * batch, sd: entry.ips_sd * batch }
    ensure
      pool&.stop
    end

    # Calls per second summed over `count` forked processes running at once,
    # each with its own connection.
    def forked_ips(side, count, &)
      children = Array.new(count) { spawn_child(side, &) }
      results = children.map do |pid, reader|
        text = reader.read
        reader.close
        Process.wait(pid)
        raise "benchmark child #{pid} failed: #{$CHILD_STATUS}" unless $CHILD_STATUS.success?

        JSON.parse(text)
      end
      { ips: results.sum { |r| r["ips"] }, sd: Math.sqrt(results.sum { |r| r["sd"]**2 }) }
    end

    def summary(list)
      sorted = list.sort
      {
        n: sorted.size,
        p50: percentile(sorted, 0.50) * 1e6,
        p99: percentile(sorted, 0.99) * 1e6,
        mean: sorted.sum / sorted.size * 1e6
      }
    end

    private

    def fixed_ids(task, sides)
      return {} if task.fresh

      sides.to_h do |side|
        id = @ids.next
        task.prepare&.call(side, id)
        [side.name, id]
      end
    end

    def run_block(task, side, fixed, out, count)
      count.times do
        id = fixed || @ids.next
        task.prepare&.call(side, id) if task.fresh
        started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
        task.call.call(side, id)
        out << (Process.clock_gettime(Process::CLOCK_MONOTONIC) - started)
      end
    end

    def percentile(sorted, fraction)
      sorted[((sorted.size - 1) * fraction).round]
    end

    def spawn_child(side)
      reader, writer = IO.pipe
      pid = fork do
        reader.close
        own = side.fork_safe
        entry = Benchmark.ips(warmup: @warmup, time: @time, quiet: true) do |x|
          x.report(side.name) { yield own }
        end.entries.first
        writer.write(JSON.generate(ips: entry.ips, sd: entry.ips_sd))
        writer.close
        exit!(0)
      end
      writer.close
      [pid, reader]
    end
  end

  # Long-lived worker threads, so a measurement does not time thread start.
  class Pool
    def initialize(size)
      @size = size
      @jobs = Queue.new
      @done = Queue.new
      @threads = Array.new(size) { Thread.new { work } }
    end

    # Runs the block `total` times, spread evenly over the threads.
    def run(total, &block)
      share, extra = total.divmod(@size)
      @size.times { |i| @jobs << [share + (i < extra ? 1 : 0), block] }
      @size.times do
        error = @done.pop
        raise error if error
      end
    end

    def stop
      @size.times { @jobs << nil }
      @threads.each(&:join)
    end

    private

    def work
      while (job = @jobs.pop)
        count, block = job
        begin
          count.times { block.call }
          @done << nil
        rescue StandardError => e
          @done << e
        end
      end
    end
  end
end
