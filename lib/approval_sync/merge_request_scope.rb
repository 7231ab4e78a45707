# frozen_string_literal: true

module ApprovalSync
  # What ApprovalState and the coordinator share: the merge request they were
  # built with, its checked id, and the flag asked for that merge request on
  # every call (H8: readers and writers resolve it for the same object).
  module MergeRequestScope
    # @return [Integer] the merge request id
    attr_reader :merge_request_id

    # @param merge_request [#id, Integer] a merge request, or its positive id
    # @raise [TypeError, ArgumentError] for anything else
    def initialize(merge_request)
      @merge_request = merge_request
      @merge_request_id = Validate.merge_request_id(merge_request)
    end

    # @return [Boolean] the flag for this merge request, never cached
    def deterministic?
      ApprovalSync.deterministic?(@merge_request)
    end

    private

    def tracker
      ApprovalSync.tracker
    end
  end
end
