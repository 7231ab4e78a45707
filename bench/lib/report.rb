# frozen_string_literal: true

module ApprovalSyncBench
  # Plain-text tables on stdout, as they go into docs/benchmarks.md.
  class Report
    def initialize(out = $stdout)
      @out = out
    end

    def section(title)
      @out.puts
      @out.puts "== #{title}"
      @out.flush
    end

    def line(text = "")
      @out.puts text
      @out.flush
    end

    # Text columns (the first, and those in `left`) left-aligned, figures right-aligned.
    def table(header, rows, left: [])
      cells = [header, *rows].map { |row| row.map(&:to_s) }
      widths = header.each_index.map { |i| cells.map { |row| row[i].size }.max }
      left = [0, *left]
      @out.puts format_row(cells.first, widths, left)
      @out.puts widths.map { |w| "-" * w }.join("  ")
      cells.drop(1).each { |row| @out.puts format_row(row, widths, left) }
      @out.flush
    end

    def format_row(row, widths, left)
      row.each_with_index.map { |cell, i| left.include?(i) ? cell.ljust(widths[i]) : cell.rjust(widths[i]) }
         .join("  ").rstrip
    end

    def self.us(value) = value.nil? ? "-" : format("%.1f", value)
    def self.ops(value) = value.nil? ? "-" : value.round.to_s.reverse.scan(/\d{1,3}/).join(",").reverse
    def self.ratio(value) = value.nil? || !value.finite? ? "-" : format("%.2fx", value)
    def self.pct(value) = format("%.0f%%", value * 100)
  end

  # The issue's targets, each judged MET or MISSED on the measured value.
  class Targets
    Result = Struct.new(:name, :met, :value, keyword_init: true) do
      def to_h = { name: name, met: met, value: value }
    end

    # RSS growth over the million calls that still counts as noise.
    RSS_NOISE_KIB = 2048
    # A Redis that uses this much of one core is saturated.
    SATURATED = 0.9

    attr_reader :results

    def initialize
      @results = []
    end

    def check(name, met, value)
      @results << Result.new(name: name, met: met ? true : false, value: value)
    end

    def print(report)
      report.section("Targets")
      report.table(%w[target result measured], @results.map { |r| [r.name, r.met ? "MET" : "MISSED", r.value] },
                   left: [1, 2])
    end
  end
end
