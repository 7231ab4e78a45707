# frozen_string_literal: true

require "json"

module ApprovalSync
  class CLI
    # What Redis holds for one merge request, read in one step by
    # `Native::Tracker#snapshot` and turned into plain values. Reading it
    # writes nothing: markers past their deadline and kept resets that are
    # due are shown as they are, not purged or enqueued.
    class Snapshot
      # Entry states as the scripts store them.
      STATES = { "w" => "waiting", "q" => "enqueued", "r" => "running" }.freeze
      # state|deadline|dirty|oldrev|newrev|args; the args are last because
      # their JSON may hold a `|`.
      ENTRY = /\A([wqr])\|(\d+)\|([01])\|([0-9a-fA-F]*)\|([0-9a-fA-F]*)\|(.*)\z/m
      # A marker's member with the instance counter the scripts append.
      MEMBER = /\A(.+)#(\d+)\z/

      # One tracked sync.
      # @!attribute member [String] e.g. `code_owner:OLDREV:NEWREV`
      # @!attribute instance [Integer] which start of that member (1 for the first)
      # @!attribute deadline_ms [Integer] Redis time (ms) after which the marker no longer counts
      Marker = Struct.new(:member, :instance, :deadline_ms)

      # One push's kept reset.
      # @!attribute id [Integer] push order within the merge request
      # @!attribute state [String] waiting, enqueued or running
      # @!attribute deadline_ms [Integer] Redis time (ms) the entry's current state lasts until
      # @!attribute dirty [Boolean] a code-owner sync overlapped its run, so it runs again
      # @!attribute oldrev [String, nil]
      # @!attribute newrev [String]
      # @!attribute args [Array] the reset worker's arguments
      KeptReset = Struct.new(:id, :state, :deadline_ms, :dirty, :oldrev, :newrev, :args)

      # @return [Integer]
      attr_reader :merge_request_id
      # @return [Integer] Redis server time, ms
      attr_reader :now_ms
      # @return [Integer, nil] ms left on the legacy flag; nil when it is not set, -1 when it never expires
      attr_reader :legacy_ttl_ms
      # @return [Array<Marker>]
      attr_reader :markers
      # @return [Array<KeptReset>] oldest push first
      attr_reader :resets

      # Reads the merge request's state.
      # @param tracker [Native::Tracker]
      # @param merge_request_id [Integer]
      # @return [Snapshot]
      # @raise [ProtocolError] when Redis holds an entry this version cannot read
      def self.read(tracker, merge_request_id)
        new(merge_request_id, *tracker.snapshot(merge_request_id))
      end

      # @param merge_request_id [Integer]
      # @param now_ms [Integer]
      # @param legacy_ttl_ms [Integer, nil]
      # @param markers [Array<Array(String, Integer)>] member#n and deadline
      # @param entries [Array<Array(Integer, String)>] entry id and raw entry
      # @raise [ProtocolError] for a marker or entry of an unknown shape
      def initialize(merge_request_id, now_ms, legacy_ttl_ms, markers, entries)
        @merge_request_id = merge_request_id
        @now_ms = now_ms
        @legacy_ttl_ms = legacy_ttl_ms
        @markers = markers.map { |member, deadline| parse_marker(member, deadline) }
        @resets = entries.map { |id, raw| parse_entry(id, raw) }.sort_by(&:id)
      end

      # @return [String] GitLab's key for the legacy flag
      def legacy_key
        "mr_#{merge_request_id}_cannot_merge"
      end

      # @return [Boolean]
      def legacy?
        !legacy_ttl_ms.nil?
      end

      # @param marker [Marker]
      # @return [Boolean] whether the marker still counts
      def live?(marker)
        marker.deadline_ms > now_ms
      end

      # @param reset [KeptReset]
      # @return [Boolean] whether the reset still keeps approvals from counting (flag on)
      def blocking?(reset)
        reset.state == "waiting" || reset.deadline_ms > now_ms
      end

      # What `temporarily_unapproved?` answers with the flag off: the legacy flag.
      # @return [Boolean]
      def blocks_merge_flag_off?
        legacy?
      end

      # What `temporarily_unapproved?` answers with the flag on.
      # @return [Boolean]
      def blocks_merge_flag_on?
        legacy? || markers.any? { |m| live?(m) } || resets.any? { |r| blocking?(r) }
      end

      # @return [Hash] the snapshot as JSON-ready values, times in ms
      def to_h
        {
          merge_request_id: merge_request_id,
          now_ms: now_ms,
          legacy_flag: { key: legacy_key, set: legacy?, ttl_ms: legacy_ttl_ms },
          blocks_merge: { flag_off: blocks_merge_flag_off?, flag_on: blocks_merge_flag_on? },
          markers: markers.map { |m| marker_hash(m) },
          kept_resets: resets.map { |r| reset_hash(r) }
        }
      end

      private

      def marker_hash(marker)
        marker.to_h.merge(expires_in_ms: marker.deadline_ms - now_ms, live: live?(marker))
      end

      def reset_hash(reset)
        reset.to_h.merge(deadline_in_ms: reset.deadline_ms - now_ms, blocking: blocking?(reset))
      end

      def parse_marker(raw, deadline)
        match = MEMBER.match(raw) or raise ProtocolError, "marker #{raw[0, 120].inspect} has no instance number"
        Marker.new(match[1], Integer(match[2], 10), Integer(deadline))
      end

      def parse_entry(id, raw)
        match = ENTRY.match(raw) or raise ProtocolError, "kept reset #{id} is not an entry: #{raw[0, 120].inspect}"
        state, deadline, dirty, oldrev, newrev, args = match.captures
        KeptReset.new(Integer(id), STATES.fetch(state), Integer(deadline, 10), dirty == "1",
                      oldrev.empty? ? nil : oldrev, newrev, parse_args(id, args))
      end

      def parse_args(id, args)
        JSON.parse(args)
      rescue JSON::ParserError => e
        raise ProtocolError, "kept reset #{id} has worker args that are not JSON: #{e.message[0, 120]}"
      end
    end
  end
end
