# frozen_string_literal: true

require "json"

module ApprovalSync
  # Hands kept resets to the reset worker. Redis already marked them enqueued;
  # if perform_async raises, the ones not yet sent go back to waiting, so a
  # later call or the sweep sends them, once each.
  module Jobs
    module_function

    # @param merge_request_id [Integer]
    # @param jobs [Array<Array(Integer, String)>] entry ids and worker args (JSON)
    # @param event [Symbol] what to log for each enqueued job
    # @param raise_on_failure [Boolean] false on read paths, which must answer anyway
    # @return [Integer] jobs enqueued
    # @raise [EnqueueError] when perform_async raised and raise_on_failure is true
    def enqueue(merge_request_id, jobs, event: :reset_enqueued, raise_on_failure: true)
      return 0 if jobs.empty?

      jobs.each_with_index do |(entry, args), index|
        # Resolved per job inside the rescue: a worker constant that does not
        # load must put the resets back like any other enqueue failure.
        send_one(ApprovalSync.config.worker, merge_request_id, entry, args, event)
      rescue StandardError => e
        put_back(merge_request_id, jobs.drop(index), e)
        if raise_on_failure
          raise EnqueueError,
                "perform_async failed, #{jobs.size - index} reset(s) kept for a later call: #{e.message}"
        end

        return index
      end
      jobs.size
    end

    # @return [void]
    def send_one(worker, merge_request_id, entry, args, event)
      params = JSON.parse(args)
      worker.perform_async(*params)
      Events.emit(event, merge_request_id: merge_request_id, entry: entry, args: params)
    end

    # @return [void]
    def put_back(merge_request_id, unsent, error)
      *, index_error = ApprovalSync.tracker.restore(merge_request_id, unsent.map(&:first))
      notes(merge_request_id, [], index_error)
      Events.emit(:enqueue_failed, merge_request_id: merge_request_id, kept: unsent.size, error: error.class.name,
                                   message: error.message)
    rescue Error => e
      # Redis failed too: the entries stay marked enqueued until pending_ttl.
      Events.emit(:enqueue_failed, merge_request_id: merge_request_id, kept: 0, lost: unsent.size,
                                   error: e.class.name, message: e.message)
    end

    # Logs the markers a script found past their deadline, and a failed
    # update of the sweep's index (the step itself took effect).
    # @param merge_request_id [Integer]
    # @param expired [Array<String>] members as stored (`member#instance`)
    # @param index_error [String, nil]
    # @return [void]
    def notes(merge_request_id, expired, index_error = nil)
      expired.each do |member|
        Events.emit(:marker_expired, merge_request_id: merge_request_id, member: member.sub(/#\d+\z/, ""))
      end
      return unless index_error

      Events.emit(:index_failed, merge_request_id: merge_request_id, message: index_error)
    end
  end
end
