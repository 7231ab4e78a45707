# frozen_string_literal: true

require "json"

module ApprovalSync
  # Orders code-owner rule syncs and approval resets of one merge request.
  #
  # Flag on (`deterministic_approval_rules_sync` for this merge request): a
  # reset never runs while a code-owner sync of the merge request is in
  # progress. A reset scheduled during a sync is kept in Redis and enqueued
  # with `perform_async` when the last sync finishes, once per push, in push
  # order. A reset that a sync overlapped runs again after it.
  #
  # Flag off: GitLab EE's behaviour before the flag, call for call.
  class ApprovalRulesSyncCoordinator
    # Legacy flag TTL for a create-flow sync, in seconds.
    CREATE_TTL = 300
    # Legacy flag TTL set when a push schedules a reset, in seconds.
    PUSH_TTL = 15
    # Legacy delay of the reset worker, in seconds.
    RESET_DELAY = 10

    include MergeRequestScope

    # @param merge_request [#id, Integer] a merge request, or its positive id
    # @raise [TypeError, ArgumentError] for anything else
    def initialize(merge_request)
      super
      @state = ApprovalState.new(merge_request)
    end

    # Runs a code-owner sync of one push between start and finish. The finish
    # runs also when the block raises; the block's error is then re-raised.
    # Flag off: only runs the block.
    # @param oldrev [String] the push's old SHA
    # @param newrev [String] the push's new SHA
    # @yield the sync itself
    # @return [Object] the block's value
    def sync_code_owners!(oldrev:, newrev:)
      raise ArgumentError, "sync_code_owners! needs a block" unless block_given?

      member = "code_owner:#{Validate.rev(oldrev, "oldrev")}:#{Validate.rev(newrev, "newrev")}"
      return yield unless deterministic?

      @state.start_tracked(member)
      completed = false
      begin
        result = yield
        completed = true
      ensure
        # An ensure, not a rescue: Thread#kill and Timeout unwind without an
        # exception a rescue clause could see, and must finish the sync too.
        finish_quietly(member) unless completed
      end
      # The flag was decided at the start: a sync started is always finished.
      @state.finish_tracked(member)
      result
    end

    # Starts a code-owner sync in one process (the create flow's web request)
    # that another finishes (the sync worker). Flag off: sets the legacy flag
    # for {CREATE_TTL} seconds.
    # @param oldrev [String, nil]
    # @param newrev [String, nil] both or neither; neither means `code_owner:create`
    # @return [void]
    def start_code_owner_sync!(oldrev: nil, newrev: nil)
      member = code_owner_member(oldrev, newrev)
      return @state.temporarily_unapprove!(CREATE_TTL) unless deterministic?

      @state.start_tracked(member)
      nil
    end

    # Finishes what {#start_code_owner_sync!} started; enqueues the kept
    # resets when it was the last sync. Flag off: deletes the legacy flag.
    # @param oldrev [String, nil]
    # @param newrev [String, nil]
    # @return [void]
    # @raise [EnqueueError] when the worker could not be reached (the resets are kept)
    def finish_code_owner_sync!(oldrev: nil, newrev: nil)
      member = code_owner_member(oldrev, newrev)
      return @state.expire_unapproved_key! unless deterministic?

      @state.finish_tracked(member)
      nil
    end

    # Schedules the approval reset of one push. Flag on: enqueued now with
    # `perform_async` when no code-owner sync runs, else kept until the last
    # one finishes. Flag off: the legacy flag for {PUSH_TTL} seconds, then
    # `perform_in(RESET_DELAY, project_id, user_id, ref, newrev[, oldrev])`.
    # @param project_id [Integer]
    # @param user_id [Integer]
    # @param ref [String]
    # @param newrev [String]
    # @param oldrev [String, nil]
    # @return [Symbol] :enqueued, :kept, or :delayed (flag off)
    # @raise [EnqueueError] when the worker could not be reached (the reset is kept)
    def schedule_reset_approvals!(project_id:, user_id:, ref:, newrev:, oldrev: nil)
      args = self.class.reset_args(project_id, user_id, ref, newrev, oldrev)
      unless deterministic?
        @state.temporarily_unapprove!(PUSH_TTL)
        ApprovalSync.config.worker.perform_in(RESET_DELAY, *args)
        return :delayed
      end

      schedule_tracked(args)
    end

    # Schedules one push's reset for every open merge request of the pushed
    # branch, call for call as EE's push flow does: for the merge requests
    # with the flag off, the legacy flag on each and ONE delayed job for the
    # push; for those with the flag on, each reset kept or enqueued on its own.
    # The flag is asked once per merge request. Everything is validated first.
    # @param merge_requests [Array<#id, Integer>]
    # @param (see #schedule_reset_approvals!)
    # @return [Hash{Integer => Symbol}] merge request id => :enqueued, :kept or :delayed
    # rubocop:disable Metrics/ParameterLists -- the worker's own keywords, plus the merge requests
    def self.schedule_reset_approvals_for_push!(merge_requests, project_id:, user_id:, ref:, newrev:, oldrev: nil)
      args = reset_args(project_id, user_id, ref, newrev, oldrev)
      coordinators = Array(merge_requests).map { |merge_request| new(merge_request) }
      tracked, legacy = coordinators.partition(&:deterministic?)

      results = {}
      legacy.each do |coordinator|
        coordinator.state.temporarily_unapprove!(PUSH_TTL)
        results[coordinator.merge_request_id] = :delayed
      end
      ApprovalSync.config.worker.perform_in(RESET_DELAY, *args) unless legacy.empty?
      tracked.each { |coordinator| results[coordinator.merge_request_id] = coordinator.schedule_tracked(args) }
      results
    end
    # rubocop:enable Metrics/ParameterLists

    # The worker's arguments, checked: project_id, user_id, ref, newrev[, oldrev].
    # @return [Array]
    # @raise [TypeError, ArgumentError]
    def self.reset_args(project_id, user_id, ref, newrev, oldrev)
      args = [Validate.positive_id(project_id, "project_id"), Validate.positive_id(user_id, "user_id"),
              Validate.ref(ref), Validate.rev(newrev, "newrev")]
      args << Validate.rev(oldrev, "oldrev") unless oldrev.nil?
      args
    end

    # @api private
    # @return [ApprovalState] the state object this coordinator writes through
    attr_reader :state

    # @api private
    # The flag-on half of {#schedule_reset_approvals!}, for checked args.
    # @return [Symbol] :enqueued or :kept
    def schedule_tracked(args)
      code, _, _, jobs, expired, index_error = tracker.schedule(merge_request_id, args[4], args[3], JSON.generate(args))
      Jobs.notes(merge_request_id, expired, index_error)
      return kept(args) if code == "kept"

      Jobs.enqueue(merge_request_id, jobs)
      :enqueued
    end

    # Runs one push's reset for this merge request, from the reset worker,
    # with the same arguments it was scheduled with. Flag on: runs the block
    # only while no code-owner sync is in progress; if one is, or one starts
    # before the block ends, the reset is kept and runs again after the sync.
    # The reset's marker is always finished, also when the block raises.
    # Flag off: runs the block.
    # @param (see #schedule_reset_approvals!)
    # @yield the reset itself
    # @return [Boolean] true when the block ran, false when the reset waits for a sync
    def reset_approvals!(project_id:, user_id:, ref:, newrev:, oldrev: nil, &block)
      raise ArgumentError, "reset_approvals! needs a block" unless block_given?

      args = self.class.reset_args(project_id, user_id, ref, newrev, oldrev)
      unless deterministic?
        yield
        return true
      end

      code, entry, token, _, expired, index_error = tracker.reset_begin(merge_request_id, oldrev, newrev,
                                                                        JSON.generate(args))
      Jobs.notes(merge_request_id, expired, index_error)
      return waiting(args) if code == "wait"

      run_reset([entry, token], args, &block)
    end

    # Forgets the merge request's sync markers and kept resets, for a merged
    # or closed merge request. A sync that finishes afterwards enqueues nothing.
    # Works in both flag states; the legacy flag is left to expire.
    # @return [Integer] kept resets dropped
    def clear!
      _, dropped, _, _, _, index_error = tracker.clear(merge_request_id)
      Events.emit(:resets_cleared, merge_request_id: merge_request_id, dropped: dropped)
      Jobs.notes(merge_request_id, [], index_error)
      dropped
    end

    private

    def code_owner_member(oldrev, newrev)
      revs = Validate.rev_pair(oldrev, newrev)
      revs ? "code_owner:#{revs.join(":")}" : "code_owner:create"
    end

    def kept(args)
      Events.emit(:reset_kept, merge_request_id: merge_request_id, args: args)
      :kept
    end

    def waiting(args)
      Events.emit(:reset_waiting, merge_request_id: merge_request_id, args: args)
      false
    end

    # run: the entry id and the run's token, as reset_begin answered them.
    def run_reset(run, args)
      completed = false
      begin
        yield
        completed = true
      ensure
        settle_reset(run, args, completed)
      end
      true
    end

    def settle_reset((entry, token), args, completed)
      code, _, _, jobs, expired, index_error = tracker.reset_finish(merge_request_id, entry, token, completed)
      Jobs.notes(merge_request_id, expired, index_error)
      event = { "done" => :reset_done, "rerun" => :reset_rerun, "dropped" => :reset_dropped }.fetch(code, :reset_gone)
      Events.emit(event, merge_request_id: merge_request_id, args: args)
      Jobs.enqueue(merge_request_id, jobs, event: :reset_rerun_enqueued)
    end

    # The block's own error is the one to raise; a failing finish is logged
    # (its marker then expires by its deadline).
    def finish_quietly(member)
      @state.finish_tracked(member)
    rescue StandardError => e
      Events.emit(:sync_finish_failed, merge_request_id: merge_request_id, member: member, error: e.class.name)
    end
  end
end
