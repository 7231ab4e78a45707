# frozen_string_literal: true

require "spec_helper"
require "json"
require "open3"
require "socket"
require "tempfile"
require "yaml"

module ApprovalSyncTest
  # The command as a checkout runs it.
  COMMAND = [RbConfig.ruby, "-I", File.expand_path("../lib", __dir__),
             File.expand_path("../exe/approval-sync", __dir__)].freeze

  # What one run of the command printed and returned.
  CommandResult = Struct.new(:out, :err, :code, :seconds) do
    def json
      JSON.parse(out)
    end
  end
end

# Runs the real command, `ruby -Ilib exe/approval-sync ...`, in a child
# process against the suite's redis-server; state is set up through the Ruby API.
RSpec.describe "exe/approval-sync" do
  let(:url) { ApprovalSyncTest::Suite.redis_url }
  let(:worker) { approval_sync_worker_spy }
  let(:state) { ApprovalSync::ApprovalState.new(42) }
  let(:coordinator) { ApprovalSync::ApprovalRulesSyncCoordinator.new(42) }
  let(:tracker) { ApprovalSync.tracker }
  let(:reset_args) { [7, 9, ApprovalSyncTest::REF, rev(:ccc333), rev(:bbb222)] }

  # Runs the command with REDIS_URL pointing at the suite's server unless
  # `env` says otherwise; kills it after 20 s so a hang fails the example.
  def approval_sync(*args, env: {})
    started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    out, err, status = Open3.popen3({ "REDIS_URL" => url }.merge(env), *ApprovalSyncTest::COMMAND, *args,
                                    chdir: File.expand_path("..", __dir__)) { |*streams| collect(args, *streams) }
    ApprovalSyncTest::CommandResult.new(out, err, status.exitstatus,
                                        Process.clock_gettime(Process::CLOCK_MONOTONIC) - started)
  end

  def collect(args, stdin, out, err, wait)
    stdin.close
    readers = [out, err].map { |io| Thread.new { io.read } }
    unless wait.join(20)
      Process.kill("KILL", wait.pid)
      raise "approval-sync #{args.join(" ")} hung"
    end
    [readers[0].value, readers[1].value, wait.value]
  end

  # Writes through the Ruby API as if at `ms` (Redis time), so deadlines lie in the past.
  def at_ms(milliseconds)
    tracker.set_clock(milliseconds)
    yield
  ensure
    tracker.set_clock(nil)
  end

  def member(from, to)
    "code_owner:#{rev(from)}:#{rev(to)}"
  end

  # Every key with its full content, to prove a command wrote nothing.
  def dump
    redis.keys("*").sort.to_h do |key|
      value = case redis.type(key)
              when "zset" then redis.zrange(key, 0, -1, with_scores: true)
              when "hash" then redis.hgetall(key)
              when "list" then redis.lrange(key, 0, -1)
              else redis.get(key)
              end
      [key, value]
    end
  end

  # A kept reset whose only sync died 400 s ago: its marker is past its
  # deadline and the reset is due for the sweep.
  def stranded_reset
    at_ms(tracker.now - 400_000) do
      coordinator.start_code_owner_sync!(oldrev: rev(:aaa111), newrev: rev(:bbb222))
      expect(coordinator.schedule_reset_approvals!(project_id: 7, user_id: 9, ref: ApprovalSyncTest::REF,
                                                   newrev: rev(:ccc333), oldrev: rev(:bbb222))).to eq(:kept)
    end
  end

  def one_line_error(result, type)
    expect(result.err.lines.size).to eq(1), "expected one line on stderr, got #{result.err.inspect}"
    expect(result.err).to start_with("approval-sync: #{type}: ")
  end

  before do
    approval_sync_use_flag(true)
    worker
  end

  describe "--version and --help" do
    it "prints the version and exits 0" do
      result = approval_sync("--version")
      expect([result.code, result.out.strip, result.err]).to eq([0, "approval-sync #{ApprovalSync::VERSION}", ""])
    end

    it "lists the commands, the options and the exit codes" do
      result = approval_sync("--help")
      expect(result.code).to eq(0)
      expect(result.out).to include("status MR_ID", "sweep", "clear MR_ID --yes", "--json", "--config FILE",
                                    "--redis-url URL", "--require FILE", "--dry-run", "--limit N", "Exit codes")
    end
  end

  describe "usage errors (exit 2, nothing done)" do
    it "rejects an unknown command, a missing one, a bad MR_ID and misplaced options" do
      [
        [%w[frobnicate], /unknown command "frobnicate"/],
        [[], /no command given/],
        [%w[status], /status takes one MR_ID/],
        [%w[status 0], /MR_ID must be a merge request id/],
        [%w[status 42abc], /MR_ID must be a merge request id/],
        [%w[status 42 --yes], /--yes does not apply to status/],
        [%w[sweep 42], /sweep takes no arguments/],
        [%w[sweep --limit 0], /--limit must be between 1 and 10000/],
        [%w[status 42 --bogus], /invalid option: --bogus/]
      ].each do |args, message|
        result = approval_sync(*args)
        expect(result.code).to eq(2), "#{args.inspect}: #{result.err}"
        expect(result.out).to be_empty
        one_line_error(result, "UsageError")
        expect(result.err).to match(message)
      end
    end

    it "answers a usage error with a JSON object on stdout under --json" do
      result = approval_sync("nope", "--json")
      expect(result.code).to eq(2)
      expect(result.json).to eq("error" => { "type" => "UsageError",
                                             "message" => "unknown command \"nope\" (see approval-sync --help)" },
                                "exit_code" => 2)
    end
  end

  describe "status" do
    it "shows an untouched merge request as empty, and reading writes nothing" do
      result = approval_sync("status", "42")
      expect(result.code).to eq(0), result.err
      expect(result.out).to include("legacy flag    mr_42_cannot_merge  not set",
                                    "blocks merge   flag off: no, flag on: no",
                                    "sync markers: none", "kept resets: none")
      expect(redis_keys).to be_empty
    end

    it "shows the legacy flag with its TTL, markers with their instance and time left, and kept resets" do
      state.temporarily_unapprove!(15)
      coordinator.start_code_owner_sync!(oldrev: rev(:aaa111), newrev: rev(:bbb222))
      coordinator.start_code_owner_sync!(oldrev: rev(:aaa111), newrev: rev(:bbb222))
      coordinator.start_code_owner_sync!(oldrev: rev(:bbb222), newrev: rev(:ccc333))
      coordinator.schedule_reset_approvals!(project_id: 7, user_id: 9, ref: ApprovalSyncTest::REF,
                                            newrev: rev(:ccc333), oldrev: rev(:bbb222))

      result = approval_sync("status", "42")
      expect(result.code).to eq(0), result.err
      lines = result.out.lines.map(&:rstrip)
      expect(lines[0..2]).to match([
                                     "merge request  42",
                                     /\Alegacy flag    mr_42_cannot_merge  set, expires in 1[45]\.\ds\z/,
                                     "blocks merge   flag off: yes, flag on: yes"
                                   ])
      expect(lines).to include("sync markers (3)", "MEMBER                                INSTANCE  STATE  EXPIRES",
                               "kept resets (1)")
      expect(lines).to include(match(/\Acode_owner:aaa111000000:bbb222000000  1         live   4m5\ds\z/),
                               match(/\Acode_owner:aaa111000000:bbb222000000  2         live   4m5\ds\z/),
                               match(/\Acode_owner:bbb222000000:ccc333000000  1         live   4m5\ds\z/))
      expect(lines.last).to match(/\A\d+ +waiting +4m5\ds +no +bbb222000000 +ccc333000000 +\[7,9,/)
      expect(lines.last).to end_with(JSON.generate(reset_args))
      expect(worker.calls).to be_empty
    end

    it "gives every value with --json, revs in full and times in ms" do
      state.temporarily_unapprove!(15)
      coordinator.start_code_owner_sync!(oldrev: rev(:aaa111), newrev: rev(:bbb222))
      coordinator.schedule_reset_approvals!(project_id: 7, user_id: 9, ref: ApprovalSyncTest::REF,
                                            newrev: rev(:ccc333), oldrev: rev(:bbb222))

      status = approval_sync("status", "42", "--json")
      expect(status.code).to eq(0), status.err
      json = status.json
      now = json.fetch("now_ms")
      expect(json).to include("merge_request_id" => 42, "blocks_merge" => { "flag_off" => true, "flag_on" => true })
      expect(json["legacy_flag"]).to include("key" => "mr_42_cannot_merge", "set" => true,
                                             "ttl_ms" => be_between(10_000, 15_000))
      expect(json["markers"]).to match([a_hash_including("member" => member(:aaa111, :bbb222), "instance" => 1,
                                                         "live" => true,
                                                         "expires_in_ms" => be_between(290_000, 300_000))])
      expect(json["markers"][0]["deadline_ms"] - now).to eq(json["markers"][0]["expires_in_ms"])
      expect(json["kept_resets"]).to match([a_hash_including("state" => "waiting", "dirty" => false, "blocking" => true,
                                                             "oldrev" => rev(:bbb222), "newrev" => rev(:ccc333),
                                                             "args" => reset_args)])
    end

    it "names the enqueued and running states of a reset" do
      coordinator.schedule_reset_approvals!(project_id: 7, user_id: 9, ref: ApprovalSyncTest::REF,
                                            newrev: rev(:ccc333), oldrev: rev(:bbb222))
      expect(worker).to have_enqueued_reset_approvals(*reset_args).once
      expect(approval_sync("status", "42", "--json").json["kept_resets"].map { |r| r["state"] }).to eq(["enqueued"])

      seen = nil
      ran = coordinator.reset_approvals!(project_id: 7, user_id: 9, ref: ApprovalSyncTest::REF,
                                         newrev: rev(:ccc333), oldrev: rev(:bbb222)) do
        seen = approval_sync("status", "42", "--json").json["kept_resets"].map { |r| r["state"] }
      end
      expect(ran).to be(true)
      expect(seen).to eq(["running"])
      expect(approval_sync("status", "42", "--json").json["kept_resets"]).to be_empty
    end

    it "shows a dead sync's marker as expired and its due reset as waiting, without purging or enqueuing" do
      stranded_reset
      before = dump
      result = approval_sync("status", "42")
      expect(result.code).to eq(0), result.err
      expect(result.out).to match(/code_owner:aaa111000000:bbb222000000  1 +expired +passed 1m4\ds ago/)
      expect(result.out).to match(/waiting +passed 1m4\ds ago/)
      expect(result.out).to include("blocks merge   flag off: no, flag on: yes")
      expect(dump).to eq(before)
      expect(worker.calls).to be_empty
      # The Ruby API's read path would have enqueued it: the command did not.
      expect(state.temporarily_unapproved?).to be(true)
      expect(worker).to have_enqueued_reset_approvals(*reset_args).once
    end

    it "reports a key of the wrong type as a typed error naming the key (exit 1)" do
      redis.set(ApprovalSyncTest::MARKERS, "oops")
      result = approval_sync("status", "42")
      expect(result.code).to eq(1)
      one_line_error(result, "ApprovalSync::WrongTypeError")
      expect(result.err).to include(ApprovalSyncTest::MARKERS)
    end

    it "reports a kept-reset entry it cannot read as an error (exit 1)" do
      redis.hset(ApprovalSyncTest::RESETS, "5", "garbage")
      result = approval_sync("status", "42")
      expect(result.code).to eq(1)
      expect(result.err).to match(/\Aapproval-sync: ApprovalSync::\w+Error: .*5/)
      expect(result.err.lines.size).to eq(1)
    end
  end

  describe "sweep" do
    it "lists what is due with --dry-run and changes nothing" do
      stranded_reset
      before = dump
      result = approval_sync("sweep", "--dry-run", "--json")
      expect(result.code).to eq(0), result.err
      expect(result.json).to eq("due" => [42], "enqueued" => 0, "waiting" => 0, "failed" => [], "dry_run" => true)
      expect(approval_sync("sweep", "--dry-run").out.strip).to eq("dry run: 1 merge request(s) due: 42")
      expect(dump).to eq(before)
    end

    it "refuses to sweep without a loadable reset worker (exit 2) and leaves the reset waiting" do
      stranded_reset
      result = approval_sync("sweep")
      expect(result.code).to eq(2)
      one_line_error(result, "ApprovalSync::ConfigurationError")
      expect(result.err).to include("MergeRequestResetApprovalsWorker", "--require FILE", "cron worker")
      expect(kept(42).map(&:state)).to eq([:waiting])
    end

    it "enqueues the stranded reset into Sidekiq with the worker loaded by --require" do
      stranded_reset
      config = Tempfile.create(["approval_sync", ".yml"])
      config.write({ "reset_approvals_worker" => "EEExample::ResetApprovalsWorker" }.to_yaml)
      config.close
      result = approval_sync("sweep", "--require", "spec/fixtures/ee/all.rb", "--config", config.path, "--json")
      expect(result.code).to eq(0), result.err
      expect(result.json).to eq("due" => [42], "enqueued" => 1, "waiting" => 0, "failed" => [], "dry_run" => false)

      jobs = redis.lrange("queue:default", 0, -1).map { |job| JSON.parse(job) }
      expect(jobs.map { |job| [job["class"], job["args"]] }).to eq([["EEExample::ResetApprovalsWorker", reset_args]])
      expect(kept(42).map(&:state)).to eq([:queued])
      expect(approval_sync("sweep", "--dry-run", "--json").json["due"]).to be_empty
    ensure
      File.unlink(config.path) if config
    end
  end

  describe "clear" do
    before do
      state.temporarily_unapprove!(15)
      coordinator.start_code_owner_sync!(oldrev: rev(:aaa111), newrev: rev(:bbb222))
      coordinator.schedule_reset_approvals!(project_id: 7, user_id: 9, ref: ApprovalSyncTest::REF,
                                            newrev: rev(:ccc333), oldrev: rev(:bbb222))
    end

    it "refuses without --yes (exit 2) and changes nothing" do
      before = dump
      result = approval_sync("clear", "42")
      expect(result.code).to eq(2)
      one_line_error(result, "UsageError")
      expect(result.err).to include("--yes", "merge request 42")
      expect(dump).to eq(before)
    end

    it "drops markers and kept resets with --yes, and leaves the legacy flag to expire" do
      result = approval_sync("clear", "42", "--yes", "--json")
      expect(result.code).to eq(0), result.err
      expect(result.json).to eq("merge_request_id" => 42, "kept_resets_dropped" => 1, "markers_dropped" => 1,
                                "legacy_flag_deleted" => false)
      expect(redis_keys).to eq([ApprovalSyncTest::LEGACY])
      expect(state.temporarily_unapproved?).to be(true)
      coordinator.finish_code_owner_sync!(oldrev: rev(:aaa111), newrev: rev(:bbb222))
      expect(worker.calls).to be_empty
    end

    it "also deletes the legacy flag with --legacy" do
      result = approval_sync("clear", "42", "--yes", "--legacy")
      expect(result.code).to eq(0), result.err
      expect(result.out.strip).to eq("cleared merge request 42: 1 marker(s) and 1 kept reset(s) dropped, " \
                                     "legacy flag deleted")
      expect(redis_keys).to be_empty
      expect(state.temporarily_unapproved?).to be(false)
    end

    it "clears a merge request whose kept resets hold a damaged entry (the way to repair it)" do
      redis.hset("approval_sync:{mr_42_cannot_merge}:resets", "77", "not an entry")
      expect(approval_sync("status", "42").code).to eq(1)
      result = approval_sync("clear", "42", "--yes")
      expect(result.code).to eq(0), result.err
      expect(result.out.strip).to eq("cleared merge request 42: its markers (state was damaged) and " \
                                     "2 kept reset(s) dropped, legacy flag left to expire")
      expect(redis_keys).to eq([ApprovalSyncTest::LEGACY])
    end
  end

  describe "configuration" do
    let(:dead_url) { "redis://admin:hunter2@127.0.0.1:#{ApprovalSyncTest::RedisServers::Processes.free_port}/0" }

    it "reads a YAML --config file and lets --redis-url override REDIS_URL" do
      state.temporarily_unapprove!(15)
      Tempfile.create(["approval_sync", ".yml"]) do |file|
        file.write({ "redis_url" => url, "connect_timeout" => 0.5 }.to_yaml)
        file.close
        from_file = approval_sync("status", "42", "--config", file.path, "--json", env: { "REDIS_URL" => dead_url })
        expect(from_file.code).to eq(0), from_file.err
        expect(from_file.json.dig("legacy_flag", "set")).to be(true)
      end
      from_option = approval_sync("status", "42", "--redis-url", url, "--json", env: { "REDIS_URL" => dead_url })
      expect(from_option.json.dig("legacy_flag", "set")).to be(true)
    end

    it "rejects an unknown key and a file that is not a mapping (exit 2)" do
      Tempfile.create(["approval_sync", ".yml"]) do |file|
        file.write("redis_url: #{url}\nhost: nope\n")
        file.close
        result = approval_sync("status", "42", "--config", file.path)
        expect(result.code).to eq(2)
        expect(result.err).to include('unknown key "host"', "redis_url")
        File.write(file.path, "- just a list\n")
        expect(approval_sync("status", "42", "--config", file.path).code).to eq(2)
      end
    end

    it "fails on a dead Redis within 2 s: exit 1, one typed line, no password" do
      result = approval_sync("status", "42", env: { "REDIS_URL" => dead_url })
      expect(result.code).to eq(1)
      one_line_error(result, "ApprovalSync::ConnectionError")
      expect(result.seconds).to be < 2.5 # the Ruby start-up included
      expect(result.out + result.err).not_to include("hunter2")
    end

    it "times out on a server that never answers: exit 1, TimeoutError, within the timeout" do
      server = TCPServer.new("127.0.0.1", 0)
      held = []
      acceptor = Thread.new { loop { held << server.accept } }
      silent = "redis://:s3cret@127.0.0.1:#{server.addr[1]}/0"
      result = approval_sync("status", "42", "--json", "--timeout", "0.5", env: { "REDIS_URL" => silent })
      expect(result.code).to eq(1)
      one_line_error(result, "ApprovalSync::TimeoutError")
      expect(result.json.dig("error", "type")).to eq("ApprovalSync::TimeoutError")
      expect(result.seconds).to be < 2.5
      expect(result.out + result.err).not_to include("s3cret")
    ensure
      acceptor&.kill
      held&.each(&:close)
      server&.close
    end

    it "never prints a password from --config, even in a configuration error" do
      Tempfile.create(["approval_sync", ".yml"]) do |file|
        file.write({ "redis_url" => "redis://:pa55word@[::1", "password" => "pa55word" }.to_yaml)
        file.close
        result = approval_sync("status", "42", "--config", file.path, "--json")
        expect(result.code).to eq(2)
        one_line_error(result, "ApprovalSync::ConfigurationError")
        expect(result.out + result.err).not_to include("pa55word")
      end
    end
  end
end
