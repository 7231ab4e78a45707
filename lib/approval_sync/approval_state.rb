# frozen_string_literal: true

module ApprovalSync
  # Per-merge-request approval state in Redis: GitLab's legacy
  # "temporarily unapproved" flag and, with the flag
  # `deterministic_approval_rules_sync` on, the markers of syncs in progress.
  #
  # With the flag off every method does exactly what GitLab EE did before:
  # the key `mr_{id}_cannot_merge`, SET with EX, EXISTS and DEL, and the sync
  # tracking methods do nothing. The flag is asked for this merge request on
  # every call, never cached.
  class ApprovalState
    # TTL of the legacy flag set on push, in seconds.
    DEFAULT_TTL = 15

    include MergeRequestScope

    # Sets the legacy flag for `ttl` seconds (the same in both flag states).
    # @param ttl [Integer] seconds, 1 to 86400
    # @return [void]
    def temporarily_unapprove!(ttl = DEFAULT_TTL)
      tracker.legacy_set(merge_request_id, Validate.ttl(ttl))
      nil
    end

    # Whether approvals must not count yet. Flag off: the legacy flag exists.
    # Flag on: the legacy flag exists, or a sync or a kept reset is in progress.
    # One round trip either way.
    # @return [Boolean]
    def temporarily_unapproved?
      return tracker.legacy_exists(merge_request_id) unless deterministic?

      legacy, markers, resets, = read
      legacy || markers.positive? || resets.positive?
    end

    # Deletes the legacy flag. It never removes another push's sync marker.
    # @return [void]
    def expire_unapproved_key!
      tracker.legacy_delete(merge_request_id)
      nil
    end

    # Tracks one sync. The same member started twice needs two finishes,
    # except `code_owner:create`, which a retried request may start again.
    # @param member [String] `code_owner:OLD:NEW`, `reset_approvals:OLD:NEW` or `code_owner:create`
    # @return [Boolean] true when tracked, false with the flag off
    def start_approval_rules_sync!(member)
      member = Validate.member(member)
      return false unless deterministic?

      start_tracked(member)
    end

    # @api private
    # Tracks one instance of a checked member without asking the flag (the
    # caller asked it once for the whole call).
    # @return [true]
    def start_tracked(member)
      _, count, = outcome(tracker.start(merge_request_id, member))
      Events.emit(:sync_started, merge_request_id: merge_request_id, member: member, instances: count)
      true
    end

    # Ends one tracked instance of `member`. When it was the last code-owner
    # sync, the kept resets are enqueued.
    # @param member [String]
    # @return [Boolean] true when an instance was tracked, false otherwise or with the flag off
    # @raise [EnqueueError] when the worker could not be reached (the resets are kept)
    def finish_approval_rules_sync!(member)
      member = Validate.member(member)
      return false unless deterministic?

      finish_tracked(member)
    end

    # @api private
    # Ends one tracked instance of a checked member without asking the flag:
    # a sync started with the flag on is finished whatever the flag says now.
    # @return [Boolean] true when an instance was tracked
    def finish_tracked(member)
      _, found, = outcome(tracker.finish(merge_request_id, member), enqueue: true)
      Events.emit(:sync_finished, merge_request_id: merge_request_id, member: member, found: found == 1)
      found == 1
    end

    # @param member [String]
    # @return [Boolean] whether `member` is live (flag off: false)
    def approval_rules_syncing?(member)
      member = Validate.member(member)
      return false unless deterministic?

      read(member)[3]
    end

    # @return [Boolean] whether any sync or kept reset is in progress (flag off: false)
    def any_approval_rules_syncing?
      return false unless deterministic?

      _, markers, resets, = read
      markers.positive? || resets.positive?
    end

    private

    # One status read; enqueues resets that were due (lazy recovery).
    def read(member = nil)
      legacy, markers, resets, hit, jobs, expired, index_error = tracker.status(merge_request_id, member)
      Jobs.notes(merge_request_id, expired, index_error)
      Jobs.enqueue(merge_request_id, jobs, event: :reset_recovered, raise_on_failure: false)
      [legacy, markers, resets, hit]
    end

    def outcome(result, enqueue: false)
      code, value, due_at, jobs, expired, index_error = result
      Jobs.notes(merge_request_id, expired, index_error)
      Jobs.enqueue(merge_request_id, jobs) if enqueue
      [code, value, due_at, jobs]
    end
  end
end
