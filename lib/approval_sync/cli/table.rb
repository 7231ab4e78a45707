# frozen_string_literal: true

module ApprovalSync
  class CLI
    # Plain-text layout for people: aligned columns and short durations.
    module Table
      # Columns are separated by this; wide enough to read, narrow for terminals.
      GAP = "  "

      module_function

      # @param headers [Array<String>]
      # @param rows [Array<Array<#to_s>>]
      # @return [String] the lines, each column padded to its widest cell; the last is not padded
      def render(headers, rows)
        cells = [headers, *rows].map { |row| row.map(&:to_s) }
        widths = headers.each_index.map { |i| cells.map { |row| row[i].length }.max }
        cells.map { |row| line(row, widths) }.join("\n")
      end

      # @param pairs [Array<Array(String, #to_s)>] label and value
      # @return [String] `label  value` lines with the values aligned
      def pairs(pairs)
        width = pairs.map { |label, _| label.length }.max
        pairs.map { |label, value| "#{label.ljust(width)}#{GAP}#{value}" }.join("\n")
      end

      # @param milliseconds [Integer]
      # @return [String] e.g. `14.9s`, `4m59s`, `1h00m`
      def duration(milliseconds)
        seconds = milliseconds / 1000.0
        return format("%.1fs", seconds) if seconds < 60

        whole = seconds.floor
        return format("%<m>dm%<s>02ds", m: whole / 60, s: whole % 60) if whole < 3600

        format("%<h>dh%<m>02dm", h: whole / 3600, m: (whole % 3600) / 60)
      end

      # @param milliseconds [Integer] time left; zero or less means gone by
      # @return [String]
      def time_left(milliseconds)
        milliseconds.positive? ? duration(milliseconds) : "passed #{duration(-milliseconds)} ago"
      end

      # @param rev [String, nil]
      # @return [String] the first 12 hex digits, or `-`
      def short(rev)
        rev.nil? || rev.empty? ? "-" : rev[0, 12]
      end

      # @return [String]
      def line(row, widths)
        padded = row.each_with_index.map { |cell, i| i == row.size - 1 ? cell : cell.ljust(widths[i]) }
        padded.join(GAP).rstrip
      end
    end
  end
end
