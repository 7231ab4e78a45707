# frozen_string_literal: true

require_relative "../reference"

module ApprovalSyncBench
  # Stands in for the reset worker: Sidekiq's own cost stays out of the
  # figures, the same for both sides. It counts, so a run can prove the
  # resets really were handed out.
  module NoopWorker
    @jobs = 0
    @lock = Mutex.new

    class << self
      def perform_async(*_args)
        @lock.synchronize { @jobs += 1 }
        nil
      end

      def perform_in(_delay, *_args)
        perform_async
      end

      def jobs
        @lock.synchronize { @jobs }
      end
    end
  end

  # One push's arguments, the same for both sides.
  module Push
    OLDREV = "a" * 40
    NEWREV = "b" * 40
    # Revs of the three syncs kept in progress for the "busy" read.
    BUSY = Array.new(3) { |i| [i.to_s * 40, (i + 3).to_s * 40] }.freeze

    module_function

    def args(oldrev = OLDREV, newrev = NEWREV)
      { project_id: 7, user_id: 9, ref: "refs/heads/feature", newrev: newrev, oldrev: oldrev }
    end
  end

  # The public operations, called the way an application calls them: a new
  # state or coordinator object per call. Both sides answer the same
  # messages, so every measurement runs the same code for each.
  class Side
    attr_reader :name

    def initialize(name)
      @name = name
    end

    def temporarily_unapproved?(id) = state(id).temporarily_unapproved?
    def temporarily_unapprove!(id) = state(id).temporarily_unapprove!
    def expire_unapproved_key!(id) = state(id).expire_unapproved_key!

    def start(id, old = Push::OLDREV, new = Push::NEWREV)
      coordinator(id).start_code_owner_sync!(oldrev: old, newrev: new)
    end

    def finish(id, old = Push::OLDREV, new = Push::NEWREV)
      coordinator(id).finish_code_owner_sync!(oldrev: old, newrev: new)
    end

    def schedule(id) = coordinator(id).schedule_reset_approvals!(**Push.args)
    def sync(id, &) = coordinator(id).sync_code_owners!(oldrev: Push::OLDREV, newrev: Push::NEWREV, &)
    def reset(id, &) = coordinator(id).reset_approvals!(**Push.args, &)
    def clear!(id) = coordinator(id).clear!

    # Push without overlap: sync, schedule (enqueued at once), worker's reset.
    def push(id)
      sync(id) { nil }
      schedule(id)
      reset(id) { nil }
    end

    # Push whose reset arrives while the sync runs: kept, then handed out by
    # the finish, then run by the worker.
    def kept_push(id)
      start(id)
      schedule(id)
      finish(id)
      reset(id) { nil }
    end

    # A sync in progress and the reset it holds back.
    def kept(id)
      start(id)
      schedule(id)
    end

    # Three code-owner syncs of other pushes in progress.
    def make_busy(id)
      Push::BUSY.each { |old, new| start(id, old, new) }
    end
  end

  # The gem through its public Ruby API.
  class GemSide < Side
    def initialize
      super("gem")
    end

    def ping = ApprovalSync.tracker.ping
    def state(id) = ApprovalSync::ApprovalState.new(id)
    def coordinator(id) = ApprovalSync::ApprovalRulesSyncCoordinator.new(id)
    def any_syncing?(id) = state(id).any_approval_rules_syncing?
    def syncing?(id) = state(id).approval_rules_syncing?("code_owner:#{Push::OLDREV}:#{Push::NEWREV}")
    def fork_safe = self
  end

  # The reference through redis-rb: one connection per thread, as a
  # connection pool would hand out.
  class ReferenceSide < Side
    def initialize(url)
      super("reference")
      @url = url
      @key = :"approval_sync_bench_redis_#{object_id}"
    end

    def redis
      Thread.current[@key] ||= Redis.new(url: @url)
    end

    def ping = redis.ping
    def state(id) = Reference::State.new(redis, id)
    def coordinator(id) = Reference::Coordinator.new(redis, id, NoopWorker)
    def any_syncing?(id) = state(id).any_approval_rules_syncing?
    def syncing?(id) = state(id).approval_rules_syncing?(:code_owner, "#{Push::OLDREV}:#{Push::NEWREV}")

    # redis-rb refuses a socket inherited over fork; a child starts afresh.
    def fork_safe
      ReferenceSide.new(@url)
    end
  end
end
