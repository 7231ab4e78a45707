# frozen_string_literal: true

require "spec_helper"
require "sidekiq/testing"
require_relative "../fixtures/ee/all"

# Requiring sidekiq/testing turns fake mode on for the whole process; the
# examples below ask for it themselves and leave other specs a real Sidekiq.
Sidekiq::Testing.disable!

# The EE-shaped services of docs/gitlab-integration.md (spec/fixtures/ee),
# run under both flag states with approval_sync's RSpec kit, as a host
# application's suite would run them.
RSpec.describe "docs/gitlab-integration.md examples" do
  let(:ref) { ApprovalSyncTest::REF }
  let(:push_a) { [rev(:aaa111), rev(:bbb222)] }
  let(:push_b) { [rev(:bbb222), rev(:ccc333)] }
  let(:worker) { approval_sync_worker_spy }
  let(:merge_request) do
    EEExample::Store.create(project_id: 7, target_project_id: 7, source_branch: "feature",
                            codeowners: { "app/a.rb" => "alice", "lib/b.rb" => "carol" })
  end

  around { |example| Sidekiq::Testing.fake! { example.run } }

  before do
    Sidekiq::Worker.clear_all
    EEExample::Store.clear
    EEExample::Repository.push(*push_a, ["app/a.rb"])
    EEExample::Repository.push(*push_b, ["lib/b.rb"])
    worker
  end

  after { EEExample::SyncCodeOwnerRules.midway = nil }

  # What Sidekiq would do with the reset jobs, without their delay.
  def run_reset_jobs
    worker.drain { |*args| EEExample::ResetApprovalsWorker.new.perform(*args) }
  end

  def push(oldrev, newrev)
    EEExample::RefreshService.new(project_id: 7, user_id: 9).execute(oldrev, newrev, ref)
  end

  def check
    EEExample::MergeabilityCheck.new(merge_request).status
  end

  def with_rules_built
    merge_request.code_owner_rules = merge_request.codeowners.dup
    merge_request.approvals = %w[alice bob carol]
  end

  approval_sync_flag_states do |enabled|
    describe "create flow: CreateService and SyncCodeOwnerRulesWorker" do
      let(:created) { EEExample::CreateService.new(project_id: 7, source_branch: "feature").execute }

      it "holds approvals until the worker built the rules, then leaves no key behind" do
        expect(EEExample::MergeabilityCheck.new(created).status).to eq(:approvals_syncing)
        expect(EEExample::SyncCodeOwnerRulesWorker.jobs.map { |job| job["args"] })
          .to eq([[created.id, { "finish_sync" => true }]])
        if enabled
          expect(created).to be_syncing_approvals.for("code_owner:create")
          expect(redis.exists?("mr_#{created.id}_cannot_merge")).to be(false)
        else
          expect(created).not_to be_syncing_approvals
          expect(redis.ttl("mr_#{created.id}_cannot_merge")).to be_between(295, 300)
        end

        EEExample::SyncCodeOwnerRulesWorker.drain
        expect(EEExample::MergeabilityCheck.new(created).status).to eq(:approved)
        expect(redis_keys).to be_empty
      end

      it "keeps approvals held for the retry when the sync job raises" do
        created
        EEExample::SyncCodeOwnerRules.midway = ->(_) { raise "database went away" }
        expect { EEExample::SyncCodeOwnerRulesWorker.drain }.to raise_error(RuntimeError, "database went away")
        expect(EEExample::MergeabilityCheck.new(created).status).to eq(:approvals_syncing)

        EEExample::SyncCodeOwnerRules.midway = nil
        EEExample::SyncCodeOwnerRulesWorker.new.perform(created.id, "finish_sync" => true)
        expect(EEExample::MergeabilityCheck.new(created).status).to eq(:approved)
        expect(redis_keys).to be_empty
      end
    end

    describe "push flow: RefreshService, ResetApprovalsWorker and ResetApprovalsService" do
      before { with_rules_built }

      it "schedules one reset per push with the push's revs and runs it" do
        push(*push_a)
        args = [7, 9, ref, push_a[1], push_a[0]]
        if enabled
          expect(worker).to have_enqueued_reset_approvals(*args).once
          expect(worker.delayed_args).to be_empty
        else
          expect(worker).to have_enqueued_reset_approvals(*args).with_delay(10).once
          expect(redis.ttl("mr_#{merge_request.id}_cannot_merge")).to be_between(14, 15)
        end
        expect(check).to eq(:approvals_syncing)

        expect(run_reset_jobs).to eq(1)
        expect(merge_request.approvals).to eq(%w[bob carol])
        expect(check).to eq(:not_approved)
        expect(redis_keys).to be_empty
      end

      it "under two rapid pushes, resets push A's owners only with the flag on" do
        push(*push_a)
        seen_midway = nil
        EEExample::SyncCodeOwnerRules.midway = lambda do |_|
          # Sidekiq picks up push A's reset while push B rebuilds the rules.
          run_reset_jobs
          seen_midway = check
        end
        push(*push_b)
        EEExample::SyncCodeOwnerRules.midway = nil
        run_reset_jobs

        if enabled
          expect(seen_midway).to eq(:approvals_syncing)
          expect(worker).to have_enqueued_reset_approvals(7, 9, ref, push_a[1], push_a[0]).twice
          expect(merge_request.approvals).to eq(%w[bob])
        else
          # The race the flag closes: A's reset read half-built rules and kept
          # alice's approval, and the check called the merge request settled.
          expect(seen_midway).not_to eq(:approvals_syncing)
          expect(merge_request.approvals).to eq(%w[alice bob])
        end
        expect(redis_keys).to be_empty
      end

      it "lets a reset with no approvals to remove end its entry" do
        merge_request.approvals = []
        push(*push_a)
        run_reset_jobs
        expect(check).to eq(:not_approved)
        expect(redis_keys).to be_empty
      end
    end

    describe "MergeabilityCheck" do
      it "counts a code-owner sync whose 15 s legacy flag is gone only with the flag on" do
        with_rules_built
        merge_request.approval_state.temporarily_unapprove!(15)
        merge_request.approval_sync.start_code_owner_sync!(oldrev: push_a[0], newrev: push_a[1])
        merge_request.approval_state.expire_unapproved_key!
        expect(check).to eq(enabled ? :approvals_syncing : :approved)
        merge_request.approval_sync.finish_code_owner_sync!(oldrev: push_a[0], newrev: push_a[1])
        expect(check).to eq(:approved)
      end

      it "honours the legacy flag set by a process without the gem" do
        with_rules_built
        redis.set("mr_#{merge_request.id}_cannot_merge", "true", ex: 15)
        expect(check).to eq(:approvals_syncing)
      end
    end
  end

  describe "flipping the flag mid-flight" do
    let(:coordinator) { merge_request.approval_sync }

    before { with_rules_built }

    it "turned off: readers ignore the markers, which expire; the sweep still runs the kept reset" do
      approval_sync_use_flag(true)
      start = ApprovalSync.tracker.now - 400_000
      ApprovalSync.tracker.set_clock(start)
      coordinator.start_code_owner_sync!(oldrev: push_b[0], newrev: push_b[1])
      expect(coordinator.schedule_reset_approvals!(project_id: 7, user_id: 9, ref: ref, newrev: push_a[1],
                                                   oldrev: push_a[0])).to eq(:kept)
      ApprovalSync.tracker.set_clock(nil)

      approval_sync_use_flag(false)
      expect(check).to eq(:approved)
      # A flag-off finish only deletes the legacy flag; the marker is left to its deadline.
      coordinator.finish_code_owner_sync!(oldrev: push_b[0], newrev: push_b[1])
      expect(worker.calls).to be_empty

      expect(ApprovalSync.sweep!).to include(due: [merge_request.id], enqueued: 1)
      expect(worker).to have_enqueued_reset_approvals(7, 9, ref, push_a[1], push_a[0]).once
      run_reset_jobs
      expect(merge_request.approvals).to eq(%w[bob carol])
      # Run by flag-off code, the reset did not end its entry: it stays queued,
      # stops counting after marker_ttl and expires after pending_ttl.
      expect(approval_sync_kept_resets(merge_request).map(&:state)).to eq([:queued])
      expect(merge_request).not_to have_pending_reset_approvals
    end

    it "turned on: a reset scheduled with the flag off runs coordinated" do
      approval_sync_use_flag(false)
      push(*push_a)
      expect(worker).to have_enqueued_reset_approvals.with_delay(10).once

      approval_sync_use_flag(true)
      coordinator.start_code_owner_sync!(oldrev: push_b[0], newrev: push_b[1])
      expect(run_reset_jobs).to eq(1)
      expect(merge_request.approvals).to eq(%w[alice bob carol])
      expect(merge_request).to have_pending_reset_approvals.count(1)

      coordinator.finish_code_owner_sync!(oldrev: push_b[0], newrev: push_b[1])
      run_reset_jobs
      expect(merge_request.approvals).to eq(%w[bob carol])
      redis.del("mr_#{merge_request.id}_cannot_merge")
      expect(redis_keys).to be_empty
    end
  end

  describe "EEExample::RedisSettings (configuration from the shared-state Redis)" do
    it "maps a URL, Sentinel and Cluster setup to Configuration attributes" do
      expect(EEExample::RedisSettings.from_shared_state(url: "rediss://:pw@redis.internal:6380/2",
                                                        ssl_params: { ca_file: "/etc/ca.pem" }))
        .to eq(redis_url: "rediss://:pw@redis.internal:6380/2", ca_file: "/etc/ca.pem")
      expect(EEExample::RedisSettings.from_shared_state(url: "redis://gitlab-redis", password: "pw",
                                                        sentinels: [{ host: "s1", port: 26_379 },
                                                                    { host: "s2", port: 26_380 }]))
        .to eq(sentinels: ["s1:26379", "s2:26380"], master_name: "gitlab-redis", password: "pw")
      expect(EEExample::RedisSettings.from_shared_state(cluster: [{ host: "c1", port: 7000 }], username: "app"))
        .to eq(cluster_nodes: ["c1:7000"], username: "app")
    end

    it "configures a working connection and the example reset worker" do
      EEExample::RedisSettings.configure(url: ApprovalSyncTest::Suite.redis_url)
      expect(ApprovalSync.config.worker).to eq(EEExample::ResetApprovalsWorker)
      expect(ApprovalSync.tracker.ping).to be_truthy
    end
  end
end
