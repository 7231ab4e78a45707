# frozen_string_literal: true

require "json"
require "redis"

module ApprovalSyncBench
  # The peer the gem is measured against: the same operations done the way a
  # Rails app typically does them with redis-rb 4.8, one command (or one
  # MULTI) per step and each check in its own round trip. It follows the
  # description in shared/docs/gitlab-behaviour.md section 3 (one tracking set
  # per kind, a pending list of JSON entries drained in a MULTI, a 5 minute
  # safety TTL). It is a benchmark peer only, with that design's known races
  # left in; nothing in the gem uses it.
  module Reference
    # Safety TTL of the tracking sets and the pending list, in seconds.
    SYNC_TTL = 300
    # TTL of the legacy flag when a push schedules a reset, in seconds.
    PUSH_TTL = 15
    # Tracking sets, one per kind of sync.
    KINDS = %i[code_owner reset_approvals].freeze

    # Per-merge-request state: the legacy flag and the tracking sets.
    class State
      def initialize(redis, merge_request_id)
        @redis = redis
        @id = merge_request_id
      end

      def legacy_key
        "mr_#{@id}_cannot_merge"
      end

      def syncing_key(kind)
        "mr_#{@id}_#{kind}_syncing"
      end

      def pending_key
        "mr_#{@id}_pending_reset_approvals"
      end

      def temporarily_unapprove!(ttl = PUSH_TTL)
        @redis.set(legacy_key, "true", ex: ttl)
      end

      # The legacy flag, then each set in turn, each a separate round trip.
      def temporarily_unapproved?
        @redis.exists?(legacy_key) || any_approval_rules_syncing?
      end

      def any_approval_rules_syncing?
        KINDS.any? { |kind| syncing?(kind) }
      end

      def syncing?(kind)
        key = syncing_key(kind)
        @redis.exists?(key) && @redis.scard(key).positive?
      end

      def approval_rules_syncing?(kind, member)
        @redis.sismember(syncing_key(kind), member)
      end

      def start_approval_rules_sync!(kind, member)
        key = syncing_key(kind)
        @redis.multi do |tx|
          tx.sadd?(key, member)
          tx.expire(key, SYNC_TTL)
        end
      end

      def finish_approval_rules_sync!(kind, member)
        @redis.srem?(syncing_key(kind), member)
      end

      # Flag on: the legacy flag and both sets go at once.
      def expire_unapproved_key!
        @redis.del(legacy_key, *KINDS.map { |kind| syncing_key(kind) })
      end
    end

    # Push and create flows: track, keep resets while a code-owner sync runs,
    # hand them to the worker when the last one ends.
    class Coordinator
      def initialize(redis, merge_request_id, worker)
        @redis = redis
        @worker = worker
        @state = State.new(redis, merge_request_id)
      end

      attr_reader :state

      def sync_code_owners!(oldrev:, newrev:)
        start_code_owner_sync!(oldrev: oldrev, newrev: newrev)
        yield
      ensure
        finish_code_owner_sync!(oldrev: oldrev, newrev: newrev)
      end

      def start_code_owner_sync!(oldrev: nil, newrev: nil)
        @state.start_approval_rules_sync!(:code_owner, member(oldrev, newrev))
      end

      def finish_code_owner_sync!(oldrev: nil, newrev: nil)
        @state.finish_approval_rules_sync!(:code_owner, member(oldrev, newrev))
        enqueue_pending unless @state.syncing?(:code_owner)
      end

      # Tracks the reset, then either enqueues it or stores it; after storing
      # it checks again, since the sync may have ended in between.
      def schedule_reset_approvals!(project_id:, user_id:, ref:, newrev:, oldrev: nil)
        args = [project_id, user_id, ref, newrev, oldrev].compact
        @state.start_approval_rules_sync!(:reset_approvals, member(oldrev, newrev))
        return enqueue(args) unless @state.syncing?(:code_owner)

        @redis.multi do |tx|
          tx.rpush(@state.pending_key, JSON.generate(args))
          tx.expire(@state.pending_key, SYNC_TTL)
        end
        enqueue_pending unless @state.syncing?(:code_owner)
        :kept
      end

      # Worker side: the reset runs, then its tracking member goes.
      def reset_approvals!(newrev:, oldrev: nil, **)
        yield
        true
      ensure
        @state.finish_approval_rules_sync!(:reset_approvals, member(oldrev, newrev))
      end

      def clear!
        @redis.del(@state.pending_key, *KINDS.map { |kind| @state.syncing_key(kind) })
      end

      private

      def member(oldrev, newrev)
        oldrev || newrev ? "#{oldrev}:#{newrev}" : "create"
      end

      def enqueue(args)
        @worker.perform_async(*args)
        :enqueued
      end

      def enqueue_pending
        entries, = @redis.multi do |tx|
          tx.lrange(@state.pending_key, 0, -1)
          tx.del(@state.pending_key)
        end
        entries.each { |entry| @worker.perform_async(*JSON.parse(entry)) }
      end
    end
  end
end
