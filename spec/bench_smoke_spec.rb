# frozen_string_literal: true

require "fileutils"
require "json"
require "open3"
require "rbconfig"
require "tmpdir"

# A smoke run of bench/run with tiny counts: the benchmark must keep working
# as the gem changes. It checks what the run did, never how fast: timings
# from a few dozen calls mean nothing.
RSpec.describe "bench/run --quick", :slow do
  root = File.expand_path("..", __dir__)

  before(:context) do
    @dir = Dir.mktmpdir("bench-smoke-")
    json = File.join(@dir, "bench.json")
    command = [RbConfig.ruby, File.join(root, "bench", "run"), "--quick", "--no-compile", "--json", json]
    Open3.popen2e(*command, chdir: root) do |stdin, out, waiter|
      stdin.close
      reader = Thread.new { out.read }
      unless waiter.join(180)
        Process.kill("KILL", waiter.pid)
        raise "bench/run --quick hung:\n#{reader.value}"
      end
      @output = reader.value
      @status = waiter.value
    end
    @results = File.exist?(json) ? JSON.parse(File.read(json), symbolize_names: true) : {}
  end

  after(:context) { FileUtils.rm_rf(@dir) }

  let(:results) { @results }

  it "exits successfully and prints every section" do
    expect(@status).to be_success, @output
    ["Latency, single thread", "Throughput, single thread", "Round trips per call", "Scaling:",
     "Redis memory per merge request", "Keys left after whole lifecycles", "RSS over", "Targets"].each do |title|
      expect(@output).to include("== #{title}")
    end
  end

  it "judges every target of the issue as MET or MISSED" do
    expect(results[:targets].size).to eq(10)
    expect(results[:targets].map { |t| t[:met] }).to all(be(true).or(be(false)))
    results[:targets].each { |t| expect(@output).to match(/#{Regexp.escape(t[:name])}\s+(MET|MISSED)/) }
  end

  it "times every operation on both sides" do
    results[:latency].each_value do |sides|
      expect(sides.keys).to contain_exactly(:gem, :reference)
      sides.each_value { |s| expect(s).to include(n: be >= 40, p50: be_positive, p99: be_positive) }
    end
    results[:throughput].each_value do |sides|
      sides.each_value { |s| expect(s[:ips]).to be_positive }
    end
  end

  it "counts round trips on the server: one script for the gem's read, three commands for the reference's" do
    idle = results[:round_trips][:idle]
    expect(idle[:gem][:round_trips]).to eq(1)
    expect(idle[:gem][:names]).to include(evalsha: 1)
    expect(idle[:reference]).to include(round_trips: 3, names: { exists: 3 })
  end

  it "runs every lifecycle to its end: resets handed out, no keys left by the gem" do
    left = results[:memory][:leftovers]
    expect(left[:gem]).to eq(keys: [], jobs: 3)
    expect(left[:reference][:jobs]).to eq(3)
  end

  it "measures threads, processes and memory" do
    expect(results[:scaling].map { |r| r[:mode] }.uniq)
      .to eq(["1 thread", "2 threads", "4 threads", "8 threads", "2 processes"])
    expect(results[:scaling]).to all(include(ips: be_positive))
    footprint = results[:memory][:per_merge_request]
    expect(footprint.dig(:kept, :gem, :keys)).to be_positive
    expect(results[:memory][:rss]).to include(ops: 4000, start_kib: be_positive, end_kib: be_positive)
  end

  it "stops the redis-server it started" do
    pid = results[:machine][:redis_pid]
    expect(pid).to be_a(Integer)
    expect { Process.kill(0, pid) }.to raise_error(Errno::ESRCH)
  end
end

RSpec.describe "bench/script_time --quick", :slow do
  it "times every script of a push on the server and leaves no key" do
    root = File.expand_path("..", __dir__)
    out, status = Open3.capture2e(RbConfig.ruby, File.join(root, "bench", "script_time"), "--quick",
                                  chdir: root, stdin_data: "")
    expect(status).to be_success, out
    ["status, idle", "start", "status, 1 sync", "finish", "schedule", "reset_begin", "reset_finish"].each do |label|
      expect(out).to match(/^#{Regexp.escape(label)}\s+\d+\.\d\d µs/)
    end
  end
end
