# frozen_string_literal: true

# The fail-closed sweep, part of the ApprovalSync module.
module ApprovalSync
  class << self
    # Enqueues kept resets whose syncs died without finishing. Meant for a
    # cron worker, every minute. One ZRANGEBYSCORE when there is nothing to do;
    # otherwise one drain and one index update per merge request, at most
    # `limit` merge requests per call.
    #
    # A merge request whose keys are damaged (a key of the wrong type, an
    # entry that cannot be read) is logged as `sweep_failed`, skipped and put
    # off by one marker TTL in the index, so it cannot hold back the others;
    # it comes back until someone repairs or clears it. Any other error (Redis
    # unreachable, busy, out of memory) stops the sweep with that error.
    # @param limit [Integer] merge requests looked at, 1 to 10000
    # @param dry_run [Boolean] report what is due without enqueuing
    # @return [Hash{Symbol => Object}] :due (ids looked at), :enqueued, :waiting, :failed (ids skipped)
    def sweep!(limit: 100, dry_run: false)
      raise TypeError, "limit must be an Integer" unless limit.is_a?(Integer)
      raise ArgumentError, "limit must be between 1 and 10000" unless limit.between?(1, 10_000)

      due = tracker.index_due(limit)
      result = { due: due.map(&:first), enqueued: 0, waiting: 0, failed: [] }
      return result if dry_run

      due.each { |id, score| sweep_guarded(id, score, result) }
      result
    end

    private

    def sweep_guarded(id, score, result)
      sweep_one(id, score, result)
    rescue WrongTypeError, ProtocolError => e
      raise unless damaged?(e)

      result[:failed] << id
      Events.emit(:sweep_failed, merge_request_id: id, error: e.class.name, message: e.message)
      put_off(id, score)
    end

    # Errors that say this merge request's keys are damaged, not that Redis
    # cannot serve: a key of another type, an entry our scripts cannot read.
    def damaged?(error)
      error.is_a?(WrongTypeError) || error.message.include?("ASCORRUPT")
    end

    # Moves a damaged merge request one marker TTL later in the index, unless
    # a newer schedule moved it meanwhile.
    def put_off(id, score)
      tracker.index_settle(id, score, tracker.now + (config.marker_ttl * 1000).to_i)
    rescue Error => e
      Events.emit(:index_failed, merge_request_id: id, message: e.message)
    end

    def sweep_one(id, score, result)
      # One step: the drain revives what died, hands out what is due, moves
      # the index entry to the next time something may need recovery, and
      # drops it when nothing is behind it any more.
      _, left, _, jobs, expired, index_error = tracker.sweep_drain(id, score)
      Jobs.notes(id, expired, index_error)
      result[:enqueued] += Jobs.enqueue(id, jobs, event: :reset_recovered, raise_on_failure: false)
      result[:waiting] += left
    end
  end
end
