# frozen_string_literal: true

require "spec_helper"

RSpec.describe ApprovalSync::ApprovalState do
  let(:project) { Object.new }
  let(:merge_request) { ApprovalSyncTest::FakeMergeRequest.new(42, project) }
  let(:state) { described_class.new(merge_request) }
  let(:worker) { approval_sync_worker_spy }
  let(:sync_a) { "code_owner:#{rev(:aaa111)}:#{rev(:bbb222)}" }
  let(:sync_b) { "code_owner:#{rev(:bbb222)}:#{rev(:ccc333)}" }
  let(:legacy) { ApprovalSyncTest::LEGACY }
  let(:markers) { ApprovalSyncTest::MARKERS }

  def server_ms
    seconds, micros = redis.time
    (seconds * 1000) + (micros / 1000)
  end

  approval_sync_flag_states do |enabled|
    describe "#temporarily_unapprove!" do
      it "sets only mr_42_cannot_merge to \"true\" for 15 s by default" do
        expect(state.temporarily_unapprove!).to be_nil
        expect(redis_keys).to eq([legacy])
        expect(redis.get(legacy)).to eq("true")
        expect(redis.ttl(legacy)).to be_between(14, 15)
        expect(log_output).to be_empty
      end

      it "takes the TTL in seconds (300 for the create flow)" do
        state.temporarily_unapprove!(300)
        expect(redis_keys).to eq([legacy])
        expect(redis.ttl(legacy)).to be_between(299, 300)
      end

      it "rejects a TTL that is not 1 to 86400 whole seconds and writes nothing" do
        [0, -1, 86_401, 2**64, "15", nil, 1.5].each do |ttl|
          expect { state.temporarily_unapprove!(ttl) }.to raise_error(bad_argument)
        end
        expect(redis_keys).to be_empty
      end
    end

    describe "#temporarily_unapproved?" do
      it "is false on a fresh merge request, and reading writes nothing" do
        expect(state.temporarily_unapproved?).to be(false)
        expect(redis_keys).to be_empty
        expect(log_output).to be_empty
      end

      it "is true while the legacy flag exists and false once it is deleted" do
        state.temporarily_unapprove!
        expect(state.temporarily_unapproved?).to be(true)
        state.expire_unapproved_key!
        expect(redis_keys).to be_empty
        expect(state.temporarily_unapproved?).to be(false)
      end

      it "sees a legacy flag that an old process set with a plain SET EX" do
        redis.set(legacy, "true", ex: 15)
        expect(state.temporarily_unapproved?).to be(true)
      end

      it "answers for a code-owner sync in progress without the legacy flag only with the flag on" do
        ApprovalSync::ApprovalRulesSyncCoordinator.new(42).tap do |co|
          # The sync is tracked by a process with the flag on whatever this context says.
          approval_sync_use_flag(true)
          co.start_code_owner_sync!(oldrev: rev(:aaa111), newrev: rev(:bbb222))
          approval_sync_use_flag(enabled)
        end
        expect(redis_keys).to eq([markers])
        expect(state.temporarily_unapproved?).to be(enabled)
      end
    end

    describe "#expire_unapproved_key!" do
      it "deletes the legacy flag and nothing else" do
        state.temporarily_unapprove!
        redis.set("mr_43_cannot_merge", "true", ex: 15)
        expect(state.expire_unapproved_key!).to be_nil
        expect(redis_keys).to eq(["mr_43_cannot_merge"])
      end

      it "leaves another push's sync marker in place (H3)" do
        state.start_approval_rules_sync!(sync_a)
        state.temporarily_unapprove!
        state.expire_unapproved_key!
        expect(redis_keys).to eq(enabled ? [markers] : [])
        expect(state.any_approval_rules_syncing?).to be(enabled)
        expect(state.temporarily_unapproved?).to be(enabled)
      end
    end

    describe "#start_approval_rules_sync!" do
      if enabled
        it "adds member#1 to the markers zset, scored by its deadline, with a TTL" do
          before_ms = server_ms
          expect(state.start_approval_rules_sync!(sync_a)).to be(true)
          expect(redis_keys).to eq([markers])
          expect(redis.type(markers)).to eq("zset")
          rows = redis.zrange(markers, 0, -1, with_scores: true)
          expect(rows.map(&:first)).to eq(["#{sync_a}#1"])
          expect(rows.first.last).to be_between(before_ms + 299_000, server_ms + 300_000)
          # The key outlives the deadline by one marker TTL, so a late call can log the expiry.
          expect(redis.pttl(markers)).to be_between(599_000, 600_000)
          expect(state).to be_syncing_approvals
          expect(state).to be_syncing_approvals.for(sync_a)
          expect(state).not_to be_syncing_approvals.for(sync_b)
          expect(log_output).to include("event=sync_started merge_request_id=42 member=#{sync_a} instances=1")
        end

        it "counts the same push twice: the first finish leaves the second tracked (H7)" do
          2.times { state.start_approval_rules_sync!(sync_a) }
          expect(redis.zrange(markers, 0, -1)).to eq(["#{sync_a}#1", "#{sync_a}#2"])
          expect(state.finish_approval_rules_sync!(sync_a)).to be(true)
          expect(state).to be_syncing_approvals.for(sync_a)
          expect(redis.zrange(markers, 0, -1)).to eq(["#{sync_a}#1"])
          expect(redis.pttl(markers)).to be > 0
          expect(state.finish_approval_rules_sync!(sync_a)).to be(true)
          expect(redis_keys).to be_empty
          expect(state).not_to be_syncing_approvals
        end

        it "tracks code_owner:create once however often a retried request starts it" do
          3.times { state.start_approval_rules_sync!("code_owner:create") }
          expect(redis.zrange(markers, 0, -1)).to eq(["code_owner:create#1"])
          expect(state.finish_approval_rules_sync!("code_owner:create")).to be(true)
          expect(redis_keys).to be_empty
        end

        it "tracks each push on its own and keeps the key's TTL one marker TTL past the latest deadline" do
          state.start_approval_rules_sync!(sync_a)
          state.start_approval_rules_sync!(sync_b)
          state.start_approval_rules_sync!("reset_approvals:#{rev(:aaa111)}:#{rev(:bbb222)}")
          expect(redis.zcard(markers)).to eq(3)
          state.finish_approval_rules_sync!(sync_a)
          expect(state).to be_syncing_approvals.for(sync_b)
          expect(redis.pttl(markers)).to be_between(1, 600_000)
        end
      else
        it "tracks nothing, writes nothing and answers false" do
          expect(state.start_approval_rules_sync!(sync_a)).to be(false)
          expect(redis_keys).to be_empty
          expect(state).not_to be_syncing_approvals
          expect(log_output).to be_empty
        end
      end

      it "rejects members outside code_owner:OLD:NEW, reset_approvals:OLD:NEW and code_owner:create" do
        bad = [nil, 42, "", "code_owner", "code_owner:#{rev(:aaa111)}", "other:#{rev(:aaa111)}:#{rev(:bbb222)}",
               "#{sync_a}:#{rev(:ccc333)}", "#{sync_a}\0", "code_owner:{x}:#{rev(:bbb222)}",
               "code_owner:#{"\xFF" * 40}:#{rev(:bbb222)}", "code_owner:#{"a" * 10_000_000}:#{rev(:bbb222)}"]
        bad.each do |member|
          %i[start_approval_rules_sync! finish_approval_rules_sync! approval_rules_syncing?].each do |method|
            expect { state.public_send(method, member) }
              .to raise_error(bad_argument), "#{method}(#{member.inspect[0, 60]})"
          end
        end
        expect(redis_keys).to be_empty
      end
    end

    describe "#finish_approval_rules_sync!" do
      it "answers false for a member that was never started and writes nothing" do
        expect(state.finish_approval_rules_sync!(sync_a)).to be(false)
        expect(redis_keys).to be_empty
      end

      it "ends the sync and leaves no key behind" do
        state.start_approval_rules_sync!(sync_a)
        expect(state.finish_approval_rules_sync!(sync_a)).to be(enabled)
        expect(redis_keys).to be_empty
        expect(state).not_to be_syncing_approvals
        expect(worker.calls).to be_empty
      end
    end

    describe "#any_approval_rules_syncing? and #approval_rules_syncing?" do
      it "are false with nothing tracked, and reading writes nothing" do
        expect(state.any_approval_rules_syncing?).to be(false)
        expect(state.approval_rules_syncing?(sync_a)).to be(false)
        expect(redis_keys).to be_empty
      end

      it "follow the markers with the flag on and stay false with it off" do
        state.start_approval_rules_sync!(sync_a)
        expect(state.any_approval_rules_syncing?).to be(enabled)
        expect(state.approval_rules_syncing?(sync_a)).to be(enabled)
        expect(state.approval_rules_syncing?(sync_b)).to be(false)
        expect(log_output.lines.size).to eq(enabled ? 1 : 0) # the start only: reads log nothing
      end

      it "never memoize: a second state object sees a sync started after the first read" do
        reader = described_class.new(merge_request)
        expect(reader.any_approval_rules_syncing?).to be(false)
        state.start_approval_rules_sync!(sync_a)
        expect(reader.any_approval_rules_syncing?).to be(enabled)
        state.finish_approval_rules_sync!(sync_a)
        expect(reader.any_approval_rules_syncing?).to be(false)
      end
    end

    it "asks the flag about the merge request object on every call that depends on it (H8)" do
      calls = {
        temporarily_unapproved?: [], start_approval_rules_sync!: [sync_a], approval_rules_syncing?: [sync_a],
        any_approval_rules_syncing?: [], finish_approval_rules_sync!: [sync_a]
      }
      calls.each do |method, args|
        approval_sync_flag.clear
        state.public_send(method, *args)
        expect(approval_sync_flag.asked_with).not_to be_empty, "#{method} did not ask the flag"
        expect(approval_sync_flag.asked_with).to all(be(merge_request)), "#{method} asked about something else"
      end
    end

    it "leaves merge request 43 untouched" do
      redis.set("mr_43_cannot_merge", "true", ex: 60)
      state.temporarily_unapprove!
      state.start_approval_rules_sync!(sync_a)
      state.finish_approval_rules_sync!(sync_a)
      state.expire_unapproved_key!
      expect(redis_keys).to eq(["mr_43_cannot_merge"])
      expect(described_class.new(43)).not_to be_syncing_approvals
    end
  end

  describe ".new" do
    it "accepts a positive Integer id or an object with #id, up to 2**63 - 1" do
      expect(described_class.new(42).merge_request_id).to eq(42)
      expect(described_class.new(merge_request).merge_request_id).to eq(42)
      expect(described_class.new((2**63) - 1).merge_request_id).to eq((2**63) - 1)
    end

    it "rejects nil, zero, negative, too large and non-Integer ids before touching Redis" do
      bad = ApprovalSyncTest::BAD_IDS
      ids = bad + bad.map { |id| ApprovalSyncTest::FakeMergeRequest.new(id, project) }
      ids.each do |id|
        expect { described_class.new(id) }
          .to raise_error(bad_argument), id.inspect
      end
      expect(redis_keys).to be_empty
    end
  end
end
