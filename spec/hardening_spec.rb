# frozen_string_literal: true

require "spec_helper"

# Findings of a review that tried to break the gem, each kept as a test.
RSpec.describe "Hardening" do
  include ApprovalSyncTest::SpecHelpers

  let(:worker) { approval_sync_worker_spy }
  let(:push) { { oldrev: rev(:aaa111), newrev: rev(:bbb222) } }

  before { worker }

  it "finishes a sync even when the flag lookup fails after it started" do
    calls = 0
    ApprovalSync.configure do |config|
      config.deterministic_sync = lambda { |_|
        calls += 1
        raise "flag store down" if calls > 1

        true
      }
    end
    coordinator = ApprovalSync::ApprovalRulesSyncCoordinator.new(42)

    expect { coordinator.sync_code_owners!(**push) { raise ArgumentError, "sync failed" } }
      .to raise_error(ArgumentError, "sync failed")
    expect(redis_keys).to be_empty
  end

  it "rejects a flag that cannot be called, keeping the one in force" do
    ApprovalSync.configure { |config| config.deterministic_sync = ->(_) { true } }

    expect { ApprovalSync.configure { |config| config.deterministic_sync = "yes" } }
      .to raise_error(ApprovalSync::ConfigurationError, /deterministic_sync must answer #call/)
    expect(ApprovalSync.deterministic?(42)).to be(true)
  end

  it "answers odd objects and encodings with ArgumentError or TypeError, writing nothing" do
    ApprovalSync.configure { |config| config.deterministic_sync = ->(_) { true } }
    uninspectable = Object.new
    def uninspectable.inspect = raise("no")
    calls = [
      -> { ApprovalSync::ApprovalState.new(BasicObject.new) },
      -> { ApprovalSync::ApprovalState.new(uninspectable) },
      -> { ApprovalSync::ApprovalState.new(42).start_approval_rules_sync!("code_owner:create".encode("UTF-16LE")) },
      lambda {
        ApprovalSync::ApprovalRulesSyncCoordinator.new(42)
                                                  .schedule_reset_approvals!(project_id: 7, user_id: 9, ref: "\xFF".b,
                                                                             newrev: rev(:bbb222))
      },
      -> { ApprovalSync::ApprovalState.new(42).temporarily_unapprove!(BasicObject.new) }
    ]
    calls.each do |call|
      expect(&call).to(raise_error { |e| expect([ArgumentError, TypeError]).to include(e.class) })
    end
    expect(redis_keys).to be_empty
  end

  it "never shows a password, even one holding '/', ':' or '@', nor one in a node list" do
    ApprovalSync.configure do |config|
      config.redis_url = "redis://user:pa/ss:w@rd@127.0.0.1:1/0"
      config.sentinels = ["redis://:s3cr@t@127.0.0.1:2"]
      config.cluster_nodes = ["redis://:n0de/pw@127.0.0.1:3"]
    end
    shown = ApprovalSync.config.inspect
    expect(shown).not_to include("pa/ss", "w@rd", "s3cr", "n0de")
    expect(shown).to include("redis://user:***@127.0.0.1:1/0")
  end

  it "drops an index member that is no merge request id instead of failing every sweep" do
    redis.zadd(ApprovalSyncTest::DUE, 1, "not-an-id")
    redis.zadd(ApprovalSyncTest::DUE, 1, "-5")
    expect(ApprovalSync.sweep!).to eq(due: [], enqueued: 0, waiting: 0, failed: [])
    expect(redis.zcard(ApprovalSyncTest::DUE)).to eq(0)
  end
end
