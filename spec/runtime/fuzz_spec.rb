# frozen_string_literal: true

require_relative "runtime_helper"

# C12: bad input never reaches Redis, never panics, never kills the process:
# each call raises ArgumentError, TypeError or an ApprovalSync::Error, a bare
# rescue catches it, and not one key changes.
RSpec.describe "Bad input to every public method (C12)" do
  bad_ids = [-1, 0, 2**64, "42", nil, 1.5, :"42", Object.new].freeze
  bad_revs = [
    "", "a" * 10_000_000, ("\xFF".b * 40).force_encoding("UTF-8"), "#{"a" * 20}\0#{"b" * 19}",
    "#{"a" * 20}:#{"b" * 19}", "{#{"a" * 38}}", "g" * 40, nil, 42, 1.5, :abcdef0
  ].freeze
  bad_refs = ["", "a" * 2000, "refs/heads/\0x", ("\xFF".b * 4).force_encoding("UTF-8"), nil, 42].freeze
  bad_members = [
    "", "code_owner", "code_owner:", "code_owner:#{"a" * 40}", "other:create", "code_owner:create:x",
    "code_owner:#{"a" * 40}:#{"b" * 40}\0", "code_owner:{#{"a" * 38}}:#{"b" * 40}", nil, 42,
    "code_owner:#{"a" * 10_000_000}:#{"b" * 40}"
  ].freeze
  good = "a" * 40
  args = { project_id: 7, user_id: 9, ref: "refs/heads/main", newrev: good, oldrev: "b" * 40 }.freeze

  calls = []
  add = ->(label, &call) { calls << [label, call] }
  state = -> { ApprovalSync::ApprovalState.new(42) }
  co = -> { ApprovalSync::ApprovalRulesSyncCoordinator.new(42) }
  ran = -> { raise "ran" }

  bad_ids.each do |id|
    add.call("ApprovalState.new(#{id.inspect})") { ApprovalSync::ApprovalState.new(id) }
    add.call("Coordinator.new(#{id.inspect})") { ApprovalSync::ApprovalRulesSyncCoordinator.new(id) }
    add.call("temporarily_unapprove!(#{id.inspect})") { state.call.temporarily_unapprove!(id) }
    add.call("sweep!(limit: #{id.inspect})") { ApprovalSync.sweep!(limit: id) }
    %i[project_id user_id].each do |name|
      add.call("schedule_reset_approvals!(#{name}: #{id.inspect})") do
        co.call.schedule_reset_approvals!(**args, name => id)
      end
      add.call("reset_approvals!(#{name}: #{id.inspect})") { co.call.reset_approvals!(**args, name => id, &ran) }
    end
  end
  bad_members.each do |text|
    %i[start_approval_rules_sync! finish_approval_rules_sync! approval_rules_syncing?].each do |name|
      add.call("#{name}(#{text.inspect[0, 60]})") { state.call.public_send(name, text) }
    end
  end
  bad_revs.each do |rev|
    label = rev.inspect[0, 60]
    %i[oldrev newrev].each do |side|
      revs = { oldrev: good, newrev: good, side => rev }
      add.call("sync_code_owners!(#{side}: #{label})") { co.call.sync_code_owners!(**revs, &ran) }
      add.call("start_code_owner_sync!(#{side}: #{label})") { co.call.start_code_owner_sync!(**revs) }
      add.call("finish_code_owner_sync!(#{side}: #{label})") { co.call.finish_code_owner_sync!(**revs) }
      next if side == :oldrev && rev.nil? # a nil oldrev is allowed for resets

      add.call("schedule_reset_approvals!(#{side}: #{label})") do
        co.call.schedule_reset_approvals!(**args, side => rev)
      end
      add.call("reset_approvals!(#{side}: #{label})") { co.call.reset_approvals!(**args, side => rev, &ran) }
    end
  end
  bad_refs.each do |ref|
    add.call("schedule_reset_approvals!(ref: #{ref.inspect[0, 40]})") do
      co.call.schedule_reset_approvals!(**args, ref:)
    end
    add.call("reset_approvals!(ref: #{ref.inspect[0, 40]})") { co.call.reset_approvals!(**args, ref:, &ran) }
  end
  add.call("sync_code_owners! without a block") { co.call.sync_code_owners!(oldrev: good, newrev: good) }
  add.call("sweep!(dry_run: 'yes', limit: 0)") { ApprovalSync.sweep!(limit: 0, dry_run: "yes") }

  # Settings that cannot work: the first call after configure raises.
  bad_settings = {
    redis_url: [42, "", "nonsense://127.0.0.1", "redis://127.0.0.1:notaport", "unix://"],
    connect_timeout: [-1, 0, "abc", Float::NAN, Float::INFINITY, 1e300],
    read_timeout: [-0.5, 0, "1s"],
    marker_ttl: [-1, 0],
    pending_ttl: [10],
    cluster_nodes: ["127.0.0.1:1", [], [42]],
    sentinels: [["127.0.0.1:1"]],
    db: ["zero", 1.5],
    ca_file: ["/nonexistent/ca.pem"],
    cert_file: ["/nonexistent/client.pem"]
  }
  bad_settings.each do |name, values|
    values.each do |value|
      add.call("configure #{name} = #{value.inspect[0, 40]}") do
        ApprovalSync.configure { |c| c.public_send(:"#{name}=", value) }
        state.call.any_approval_rules_syncing?
      end
    end
  end

  before(:all) { @server = ApprovalSyncTest::RedisServers.standalone }
  after(:all) { @server.stop }

  # Keys and values, to prove nothing was written.
  def dump
    @server.call("KEYS", "*").sort.map { |key| [key, @server.call("DUMP", key)] }
  end

  wrong_types = [
    ["a clean database", []],
    ["tracking keys of the wrong type", [
      %w[HSET mr_42_cannot_merge f v], %w[SET approval_sync:{mr_42_cannot_merge}:markers x],
      %w[LPUSH approval_sync:{mr_42_cannot_merge}:resets x], %w[SET approval_sync:due x]
    ]]
  ]
  wrong_types.each do |setting, commands|
    it "rejects #{calls.size} bad calls with typed errors on #{setting}, writing nothing" do
      use_redis(redis_url: @server.url)
      @server.call("FLUSHALL")
      commands.each { |command| @server.call(*command) }
      # A live merge request of another id, so "nothing changed" covers real state too.
      ApprovalSync::ApprovalState.new(7).start_approval_rules_sync!("code_owner:create")
      before = dump
      failures = calls.filter_map do |label, call|
        use_redis(redis_url: @server.url) if label.start_with?("configure")
        begin
          call.call
          "#{label}: no error"
        rescue => e # rubocop:disable Style/RescueStandardError -- a bare rescue must catch each one
          next if [ArgumentError, TypeError, ApprovalSync::Error].any? { |klass| e.is_a?(klass) } && e.message != "ran"

          "#{label}: #{e.class}: #{e.message[0, 100]}"
        end
      end
      expect(failures).to eq([])
      expect(dump).to eq(before)
      expect(ApprovalSyncTest::Runtime::RecordingWorker.calls).to eq([])
    end
  end

  it "keeps the native tracker alive through bad values it gets directly" do
    use_redis(redis_url: @server.url)
    tracker = ApprovalSync.tracker
    native = [
      -> { tracker.start(-1, "code_owner:create") }, -> { tracker.start(2**64, "code_owner:create") },
      -> { tracker.start(1, "nonsense") }, -> { tracker.status("1", nil) },
      -> { tracker.schedule(1, "", "", "[]") }, -> { tracker.schedule(1, nil, "a" * 40, "") },
      -> { tracker.schedule(1, nil, "a" * 40, "x" * 100_000) }, -> { tracker.restore(1, [-1]) },
      -> { tracker.reset_finish(1, 2**64, 0, true) }, -> { tracker.index_due(-5) },
      -> { tracker.legacy_set(1, 0) }, -> { tracker.pause(-1) }, -> { tracker.set_clock(-1) }
    ]
    before = dump
    errors = native.map do |call|
      call.call
      nil
    rescue => e # rubocop:disable Style/RescueStandardError -- a bare rescue must catch each one
      e.class
    end
    # RangeError is Ruby's own for an Integer that does not fit the native type.
    expect(errors.compact).to all(satisfy do |klass|
                                    [ArgumentError, TypeError, RangeError,
                                     ApprovalSync::Error].any? do |k|
                                      klass <= k
                                    end
                                  end)
    expect(dump).to eq(before)
    expect(tracker.ping).to eq("PONG")
  end

  it "rejects a NaN pause with ArgumentError instead of a panic" do
    # NaN survives clamp, and Duration::from_secs_f64 would panic on it.
    use_redis(redis_url: @server.url)
    expect { ApprovalSync.tracker.pause(Float::NAN) }.to raise_error(ArgumentError)
  end
end
