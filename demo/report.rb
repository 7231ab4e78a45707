# frozen_string_literal: true

require "json"
require "set"
require_relative "ee"

module RaceDemo
  # What one phase did, measured from the demo's own rows: the runs the reset
  # worker recorded, the approvals left, and the gem's keys left in Redis.
  # "Missed" comes from the scenario's ground truth alone.
  class PhaseReport
    COLUMNS = {
      pushes: "pushes", expected: "resets expected", missed: "resets missed", during_sync: "ran during a sync",
      partial: "ran on partial rules", duplicates: "duplicate resets", never_ran: "never ran",
      keys_left: "keys left", reruns: "re-runs (info)"
    }.freeze
    # Columns and checks that must be zero with the flag on.
    FAULTS = %i[missed during_sync partial duplicates never_ran keys_left over_removed errors pushes_lost].freeze

    attr_reader :flag, :elapsed, :counts, :details

    # @param details [Hash] :keys (left in Redis), :errors (job errors), :events (gem event counts)
    def initialize(flag:, elapsed:, counts:, details:)
      @flag = flag
      @elapsed = elapsed
      @counts = counts
      @details = details
    end

    def self.measure(scenario, redis, flag:, elapsed:)
      runs = redis.lrange(Keys::RUNS, 0, -1).map { |raw| JSON.parse(raw) }
      details = { keys: leftover_keys(redis), errors: redis.lrange(Keys::ERRORS, 0, -1),
                  events: redis.hgetall(Keys::EVENTS) }
      counts = run_counts(scenario, runs)
               .merge(approval_counts(scenario, redis))
               .merge(keys_left: details[:keys].size, errors: details[:errors].size,
                      pushes_lost: scenario.pushes.size - redis.get(Keys::PUSHES_DONE).to_i)
      new(flag:, elapsed:, counts:, details:)
    end

    # A run counts when the gem let its result stand: with the flag on, a run
    # that a sync overlapped is settled as `reset_rerun` and runs again, so
    # only that later run counts. Everything else counts, conservatively.
    def self.run_counts(scenario, runs)
      counted, reruns = runs.partition { |run| run["outcome"] != "reset_rerun" }
      per_push = counted.group_by { |run| "#{run["mr"]}:#{run["oldrev"]}:#{run["newrev"]}" }
      pushes = scenario.pushes
      {
        pushes: pushes.size, expected: pushes.size, reruns: reruns.size,
        during_sync: counted.count { |run| run["during_sync"] }, partial: counted.count { |run| run["partial"] },
        duplicates: per_push.sum { |_key, list| list.size - 1 },
        never_ran: pushes.count { |push| !per_push.key?(push.key) }
      }
    end

    # A push's reset is missed when an approval its range voids survived.
    def self.approval_counts(scenario, redis)
      missed = 0
      over_removed = 0
      scenario.merge_requests.each do |mr|
        left = redis.hkeys(Keys.approvals(mr.id)).to_set(&:to_i)
        voided = mr.pushes.map { |push| scenario.expected_removals(push) }
        missed += voided.count { |users| users.intersect?(left) }
        over_removed += (mr.approvers.to_set - voided.reduce(Set.new, :|) - left).size
      end
      { missed:, over_removed: }
    end

    # The gem's keys after the sweep, as a cron would have run it.
    def self.leftover_keys(redis)
      %w[approval_sync:* mr_*_cannot_merge].flat_map { |match| redis.scan_each(match:).to_a }.uniq.sort
    end

    def faults = FAULTS.select { |name| counts.fetch(name).positive? }

    # Flag off reproduces GitLab's race when a reset ran into a sync.
    def race_shown? = counts.fetch(:missed).positive? || counts.fetch(:during_sync).positive?

    def table
      header = "| #{COLUMNS.values.join(" | ")} |"
      rule = "|#{COLUMNS.values.map { |title| "#{"-" * (title.size + 1)}:" }.join("|")}|"
      row = "| #{COLUMNS.map { |name, title| counts.fetch(name).to_s.rjust(title.size) }.join(" | ")} |"
      [header, rule, row].join("\n")
    end

    def notes
      events = details[:events].sort.map { |name, count| "#{name}=#{count}" }
      keys = details[:keys]
      lines = [
        ("gem events: #{events.join(" ")}" if events.any?),
        ("keys left: #{keys.first(5).join(", ")}#{" ..." if keys.size > 5}" if keys.any?),
        *details[:errors].first(3).map { |raw| "job error: #{raw}" }
      ]
      (lines + count_notes).compact
    end

    COUNT_NOTES = { over_removed: "approvals removed that should have stayed",
                    pushes_lost: "pushes whose PostReceive never completed" }.freeze

    def count_notes
      COUNT_NOTES.filter_map { |name, text| "#{text}: #{counts[name]}" if counts[name].positive? }
    end
  end
end
