# frozen_string_literal: true

require_relative "measure"

module ApprovalSyncBench
  # What is measured. `steps` is how many public calls (or block-wrapping
  # halves) the operation makes: the gem's target is one round trip each.
  module Ops
    # Options: prepare:, fresh:, companion: (see Op).
    def self.task(key, label, call, **options)
      Op.new(key: key, label: label, call: call, **options)
    end

    unapproved = ->(side, id) { side.temporarily_unapproved?(id) }
    start = ->(side, id) { side.start(id) }
    schedule = ->(side, id) { side.schedule(id) }
    start_and_schedule = ->(side, id) { side.kept(id) }

    # Timed for latency and throughput, gem against reference.
    TIMED = [
      task(:ping, "PING (the floor)", ->(side, _id) { side.ping }),
      task(:idle, "temporarily_unapproved? idle", unapproved),
      task(:busy, "temporarily_unapproved? 3 syncs", unapproved, prepare: ->(side, id) { side.make_busy(id) }),
      task(:start, "start sync", start, fresh: true),
      task(:finish_kept, "finish sync, 1 kept reset", ->(side, id) { side.finish(id) },
           prepare: start_and_schedule, fresh: true),
      task(:schedule, "schedule (enqueued)", schedule, fresh: true),
      task(:schedule_kept, "schedule (kept)", schedule, prepare: start, fresh: true),
      task(:push, "whole push", ->(side, id) { side.push(id) }),
      task(:kept_push, "push, reset kept", ->(side, id) { side.kept_push(id) }),
      task(:ping_mt, "PING, +1 idle thread", ->(side, _id) { side.ping }, companion: true),
      task(:idle_mt, "unapproved? idle, +1 idle thread", unapproved, companion: true),
      task(:push_mt, "whole push, +1 idle thread", ->(side, id) { side.push(id) }, companion: true)
    ].freeze

    # Counted for round trips only (with the timed ones).
    COUNTED = [
      task(:unapprove, "temporarily_unapprove!", ->(side, id) { side.temporarily_unapprove!(id) }, fresh: true),
      task(:expire, "expire_unapproved_key!", ->(side, id) { side.expire_unapproved_key!(id) },
           prepare: ->(side, id) { side.temporarily_unapprove!(id) }, fresh: true),
      task(:syncing, "approval_rules_syncing?", ->(side, id) { side.syncing?(id) }, prepare: start),
      task(:any_syncing, "any_approval_rules_syncing?", ->(side, id) { side.any_syncing?(id) }, prepare: start),
      task(:finish, "finish sync, nothing kept", ->(side, id) { side.finish(id) }, prepare: start, fresh: true),
      task(:sync, "sync_code_owners! { }", ->(side, id) { side.sync(id) { nil } }, fresh: true),
      task(:reset, "reset_approvals! { } (worker)", ->(side, id) { side.reset(id) { nil } },
           prepare: schedule, fresh: true),
      task(:clear, "clear!", ->(side, id) { side.clear!(id) }, prepare: start_and_schedule, fresh: true)
    ].freeze

    STEPS = Hash.new(1).merge(sync: 2, reset: 2, push: 5, kept_push: 5).freeze

    ALL = (TIMED.reject(&:companion) + COUNTED).freeze

    def self.[](key)
      ALL.find { |task| task.key == key } or raise KeyError, key.to_s
    end
  end
end
