# frozen_string_literal: true

require "etc"
require "redis"
require "securerandom"
require "socket"

module ApprovalSyncBench
  # Counts what reaches the server, from the server's own MONITOR feed:
  # round trips (top-level requests, a MULTI ... EXEC block counting as one,
  # an EVALSHA as one) and every command run, those inside scripts included.
  class Monitor
    LINE = /\A\+\d+\.\d+ \[\d+ (?<source>[^\]]+)\] "(?<command>[^"]*)"/
    Count = Struct.new(:round_trips, :commands, :names, keyword_init: true)

    def initialize(server)
      @admin = server.client
      @socket = TCPSocket.new(server.host, server.port)
      @socket.write("MONITOR\r\n")
      reply = @socket.gets
      raise "MONITOR refused: #{reply.inspect}" unless reply&.start_with?("+OK")
    end

    # Runs the block and returns what the server saw while it ran.
    def count
      token = SecureRandom.hex(8)
      mark("#{token}-begin")
      yield
      mark("#{token}-end")
      tally(lines_between("#{token}-begin", "#{token}-end"))
    end

    def close
      @socket.close
      @admin.close
    end

    private

    def mark(text)
      @admin.echo(text)
    end

    def lines_between(first, last)
      loop { break if next_line.include?(first) }
      lines = []
      loop do
        line = next_line
        return lines if line.include?(last)

        lines << line
      end
    end

    def next_line
      @socket.gets || raise("MONITOR feed closed")
    end

    def tally(lines)
      round_trips = 0
      names = Hash.new(0)
      in_multi = false
      lines.each do |line|
        match = LINE.match(line) or next
        command = match[:command].downcase
        names[command] += 1
        next if match[:source] == "lua"

        if command == "exec"
          in_multi = false
        elsif !in_multi
          round_trips += 1
          in_multi = command == "multi"
        end
      end
      Count.new(round_trips: round_trips, commands: names.values.sum, names: names)
    end
  end

  # CPU time of the redis-server (from INFO cpu), of this process (threads
  # included) and of the whole machine (/proc/stat), over a block.
  class CpuMeter
    Usage = Struct.new(:wall, :redis, :ruby, :machine, keyword_init: true) do
      # Busy fraction of one core, e.g. 0.95 = 95 % of a core.
      def redis_share = redis / wall
      def ruby_share = ruby / wall
      # Busy cores, out of nproc.
      def machine_cores = machine / wall
    end

    def initialize(admin)
      @admin = admin
    end

    def measure
      before = snapshot
      yield
      after = snapshot
      Usage.new(wall: after[0] - before[0], redis: after[1] - before[1], ruby: after[2] - before[2],
                machine: after[3] - before[3])
    end

    private

    def snapshot
      cpu = @admin.info("cpu")
      [clock, cpu["used_cpu_user"].to_f + cpu["used_cpu_sys"].to_f,
       Process.clock_gettime(Process::CLOCK_PROCESS_CPUTIME_ID) + children_cpu, machine_busy]
    end

    def clock = Process.clock_gettime(Process::CLOCK_MONOTONIC)

    def children_cpu
      times = Process.times
      times.cutime + times.cstime
    end

    # Busy seconds of all cores: user, nice, system, irq, softirq, steal.
    def machine_busy
      fields = File.read("/proc/stat").lines.first.split.drop(1).map(&:to_i)
      busy = fields.values_at(0, 1, 2, 5, 6, 7).compact.sum
      busy.to_f / Etc.sysconf(Etc::SC_CLK_TCK)
    end
  end

  # Resident set size of this process, from /proc/self/status.
  module Rss
    module_function

    def kib
      File.read("/proc/self/status")[/^VmRSS:\s+(\d+)/, 1].to_i
    end
  end
end
