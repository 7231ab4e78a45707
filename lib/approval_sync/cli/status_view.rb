# frozen_string_literal: true

require "json"

module ApprovalSync
  class CLI
    # The human view of {Snapshot}.
    class StatusView
      # @param snapshot [Snapshot]
      def initialize(snapshot)
        @snapshot = snapshot
      end

      # @return [String]
      def render
        [summary, markers, resets].join("\n\n")
      end

      private

      def summary
        s = @snapshot
        Table.pairs([
                      ["merge request", s.merge_request_id],
                      ["legacy flag", "#{s.legacy_key}  #{legacy_text}"],
                      ["blocks merge", "flag off: #{yes_no(s.blocks_merge_flag_off?)}, " \
                                       "flag on: #{yes_no(s.blocks_merge_flag_on?)}"]
                    ])
      end

      def legacy_text
        ttl = @snapshot.legacy_ttl_ms
        return "not set" if ttl.nil?
        return "set, no expiry" if ttl.negative?

        "set, expires in #{Table.duration(ttl)}"
      end

      def markers
        rows = @snapshot.markers.map do |m|
          [member_text(m.member), m.instance, @snapshot.live?(m) ? "live" : "expired",
           Table.time_left(m.deadline_ms - @snapshot.now_ms)]
        end
        section("sync markers", %w[MEMBER INSTANCE STATE EXPIRES], rows)
      end

      def resets
        rows = @snapshot.resets.map do |r|
          [r.id, r.state, Table.time_left(r.deadline_ms - @snapshot.now_ms), yes_no(r.dirty),
           Table.short(r.oldrev), Table.short(r.newrev), JSON.generate(r.args)]
        end
        section("kept resets", %w[ID STATE DEADLINE RERUN OLDREV NEWREV WORKER_ARGS], rows)
      end

      def section(title, headers, rows)
        return "#{title}: none" if rows.empty?

        "#{title} (#{rows.size})\n#{Table.render(headers, rows)}"
      end

      def member_text(member)
        member.gsub(/[0-9a-f]{13,}/) { |sha| Table.short(sha) }
      end

      def yes_no(value)
        value ? "yes" : "no"
      end
    end
  end
end
