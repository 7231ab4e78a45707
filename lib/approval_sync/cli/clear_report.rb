# frozen_string_literal: true

module ApprovalSync
  class CLI
    # What `clear` reports: the state read before clearing. A merge request
    # with a damaged entry cannot be read in full, and clearing is how it is
    # repaired, so then only the legacy flag is read and the markers go
    # uncounted.
    class ClearReport
      # @param tracker [Native::Tracker]
      # @param id [Integer]
      def initialize(tracker, id)
        @id = id
        @before = begin
          Snapshot.read(tracker, id)
        rescue ProtocolError => e
          raise unless e.message.include?("ASCORRUPT")

          nil
        end
        @legacy = @before ? @before.legacy? : tracker.legacy_exists(id)
      end

      # @return [Hash] what was dropped; markers_dropped is nil when uncounted
      def result(dropped, legacy_deleted:)
        { merge_request_id: @id, kept_resets_dropped: dropped, markers_dropped: @before&.markers&.size,
          legacy_flag_deleted: legacy_deleted && @legacy }
      end

      # @return [String] one line for people
      def text(result)
        legacy = if result[:legacy_flag_deleted] then "legacy flag deleted"
                 elsif @legacy then "legacy flag left to expire"
                 else
                   "no legacy flag"
                 end
        markers = result[:markers_dropped] ? "#{result[:markers_dropped]} marker(s)" : "its markers (state was damaged)"
        "cleared merge request #{@id}: #{markers} and #{result[:kept_resets_dropped]} kept reset(s) dropped, #{legacy}"
      end
    end
  end
end
