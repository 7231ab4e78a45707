# frozen_string_literal: true

require "json"
require "set"
require "connection_pool"
require "redis"
require "sidekiq"

$LOAD_PATH.unshift(File.expand_path("../lib", __dir__)) unless $LOAD_PATH.include?(File.expand_path("../lib", __dir__))
require "approval_sync"

# Debian's Sidekiq 6.4 calls redis-rb 4.8 the way 4.8 deprecates (BRPOP's
# positional timeout, SADD's boolean): one warning per job, none about us.
Redis.silence_deprecations = true

# Small stand-ins for the GitLab EE objects around approval resets, written for
# the race demo: a "database" of merge requests, code-owner rules and approvals
# kept in Redis hashes (so every Sidekiq process sees the same rows), the push
# flow that rebuilds code-owner rules, and the reset worker. Every one of them
# talks to ApprovalSync exactly as an EE caller would; nothing here knows how
# the gem works inside.
module RaceDemo
  # The one project every demo merge request belongs to.
  PROJECT_ID = 7

  # Process settings, from the environment the demo driver sets.
  module Settings
    module_function

    def redis_url
      ENV.fetch("REDIS_URL")
    end

    # Demo seconds per production second. The legacy 10 s reset delay is
    # multiplied by it, as are the sync durations the driver generates.
    def time_scale
      Float(ENV.fetch("DEMO_TIME_SCALE", "1"))
    end
  end

  # Redis keys of the demo's own rows. None starts with `approval_sync` or
  # matches `mr_*_cannot_merge`, so they never count as keys the gem left.
  module Keys
    MR_BY_REF = "demo:mr_by_ref"
    COMMITS = "demo:commits"
    PUSHES = "demo:pushes"
    RUNS = "demo:runs"
    ERRORS = "demo:errors"
    INFLIGHT = "demo:inflight"
    PUSHES_DONE = "demo:pushes_done"
    THIRD_SENT = "demo:third_sent"
    RULE_SEQ = "demo:rule_seq"
    FLAG = "demo:flag"
    EVENTS = "demo:events"

    module_function

    def codeowners(id) = "demo:mr:#{id}:codeowners"
    def rules(id) = "demo:mr:#{id}:rules"
    def approvals(id) = "demo:mr:#{id}:approvals"
    def head(id) = "demo:mr:#{id}:head"
    # Count of the demo's own rule rebuilds in flight; bookkeeping for the
    # report, independent of the gem's markers.
    def syncing(id) = "demo:mr:#{id}:syncing"
  end

  # The shared "database": one connection pool per process.
  module DB
    @lock = Mutex.new

    class << self
      def with(&)
        pool.with(&)
      end

      def pool
        @pool || @lock.synchronize do
          @pool ||= ConnectionPool.new(size: 12, timeout: 5) { Redis.new(url: Settings.redis_url, timeout: 5) }
        end
      end
    end
  end

  # The feature flag `deterministic_approval_rules_sync`, read per call like
  # GitLab's Feature.enabled?. The driver flips it between phases, while idle.
  module Flag
    module_function

    def on?(_merge_request = nil)
      DB.with { |redis| redis.get(Keys::FLAG) } == "on"
    end
  end

  # A merge request row: enough for ApprovalSync (#id) and for the workers.
  MergeRequest = Struct.new(:id, :project_id, :ref) do
    def self.find_by_ref(ref)
      id = DB.with { |redis| redis.hget(Keys::MR_BY_REF, ref) }
      raise ArgumentError, "no merge request for #{ref}" unless id

      new(Integer(id), PROJECT_ID, ref)
    end
  end

  # CODEOWNERS semantics of the demo: `dir/` owns everything below it, `*.ext`
  # owns files by name. A file's owners are those of every entry matching it.
  module CodeOwners
    module_function

    def matches?(pattern, file)
      pattern.end_with?("/") ? file.start_with?(pattern) : File.fnmatch?(pattern, File.basename(file))
    end

    # @param entries [Hash{String => Array<Integer>}] pattern => owners
    # @param files [Enumerable<String>]
    # @return [Set<Integer>] users whose approval a change to `files` voids
    def owners_for(entries, files)
      entries.each_with_object(Set.new) do |(pattern, owners), users|
        users.merge(owners) if files.any? { |file| matches?(pattern, file) }
      end
    end
  end

  # The repository: commits with their parent and the files they change.
  module Repository
    module_function

    # Files changed between two commits of a linear history (`git diff old..new`).
    def changed_files(oldrev, newrev)
      files = Set.new
      sha = newrev
      DB.with do |redis|
        until sha == oldrev
          raw = redis.hget(Keys::COMMITS, sha) or raise ArgumentError, "unknown commit #{sha} in #{oldrev}..#{newrev}"
          commit = JSON.parse(raw)
          files.merge(commit["files"])
          sha = commit["parent"]
        end
      end
      files
    end
  end

  # What the driver planned for one push: rule rebuild durations, the refresh
  # work before the sync, and possibly a follow-up push.
  module PushPlan
    module_function

    def find(newrev)
      raw = DB.with { |redis| redis.hget(Keys::PUSHES, newrev) } or raise ArgumentError, "no plan for push #{newrev}"
      JSON.parse(raw)
    end
  end

  # Rebuilds a merge request's code-owner rules the way EE's sync service
  # does: not in one transaction, so a reader in the middle sees some rules
  # gone. Each rule is deleted, rebuilt (the slow part: matching files,
  # loading users) and created again with a new id. Rules are unique per
  # pattern, so two syncs running at once still leave the full set behind.
  class SyncCodeOwnerApprovalRules
    def initialize(merge_request, rule_ms:)
      @merge_request = merge_request
      @rule_ms = rule_ms
    end

    def execute
      id = @merge_request.id
      entries = JSON.parse(DB.with { |redis| redis.get(Keys.codeowners(id)) })
      DB.with { |redis| redis.incr(Keys.syncing(id)) }
      begin
        entries.each_with_index { |(pattern, owners), index| rebuild(id, pattern, owners, @rule_ms.fetch(index)) }
      ensure
        DB.with { |redis| redis.decr(Keys.syncing(id)) }
      end
    end

    private

    def rebuild(id, pattern, owners, millis)
      DB.with { |redis| redis.hdel(Keys.rules(id), pattern) }
      sleep(millis / 1000.0)
      DB.with do |redis|
        rule_id = redis.incr(Keys::RULE_SEQ)
        redis.hset(Keys.rules(id), pattern, JSON.generate("id" => rule_id, "owners" => owners))
      end
    end
  end

  # The push side of EE's merge request refresh: schedule the approval reset,
  # do the other refresh work, then sync the code-owner rules.
  class PushFlow
    def initialize(merge_request, user_id:, oldrev:, newrev:)
      @merge_request = merge_request
      @user_id = user_id
      @oldrev = oldrev
      @newrev = newrev
    end

    def execute
      plan = PushPlan.find(@newrev)
      DB.with { |redis| redis.set(Keys.head(@merge_request.id), @newrev) }
      coordinator = ApprovalSync::ApprovalRulesSyncCoordinator.new(@merge_request)
      coordinator.schedule_reset_approvals!(project_id: @merge_request.project_id, user_id: @user_id,
                                            ref: @merge_request.ref, newrev: @newrev, oldrev: @oldrev)
      sleep(plan.fetch("prep_ms") / 1000.0)
      coordinator.sync_code_owners!(oldrev: @oldrev, newrev: @newrev) do
        SyncCodeOwnerApprovalRules.new(@merge_request, rule_ms: plan.fetch("rule_ms")).execute
      end
    end
  end

  # Selective code-owner approval removal for one push range: reads the
  # CURRENT rules, finds the owners of files changed in oldrev..newrev and
  # deletes their approvals. Returns what it saw, for the report.
  class ResetApprovalsService
    def initialize(merge_request, oldrev:, newrev:)
      @merge_request = merge_request
      @oldrev = oldrev
      @newrev = newrev
    end

    def execute
      changed = Repository.changed_files(@oldrev, @newrev)
      # Diffing the range is a Gitaly call in EE; the rules are read after it.
      sleep(PushPlan.find(@newrev).fetch("diff_ms") / 1000.0)
      rules, syncing, codeowners = current_rules
      users = CodeOwners.owners_for(rules, changed)
      removed = users.empty? ? 0 : DB.with { |redis| redis.hdel(Keys.approvals(@merge_request.id), users.map(&:to_s)) }
      ApprovalSync::ApprovalState.new(@merge_request).expire_unapproved_key!
      { "partial" => rules != codeowners, "during_sync" => syncing, "rules_seen" => rules.size, "removed" => removed }
    end

    private

    # The rules as they are now, whether a rule rebuild was in flight, and
    # the complete set CODEOWNERS calls for: one MULTI, so one moment's view.
    def current_rules
      id = @merge_request.id
      raw_rules, syncing, codeowners = DB.with do |redis|
        redis.multi do |tx|
          tx.hgetall(Keys.rules(id))
          tx.get(Keys.syncing(id))
          tx.get(Keys.codeowners(id))
        end
      end
      [raw_rules.transform_values { |raw| JSON.parse(raw).fetch("owners") }, syncing.to_i.positive?,
       JSON.parse(codeowners).to_h]
    end
  end

  # The gem's instrumenter: counts every event for the report, and captures,
  # per thread, how the gem settled the reset the current job ran (the
  # coordinator emits reset_done / reset_rerun / ... right after the block).
  class ResetOutcomes
    SETTLED = %w[reset_done reset_rerun reset_dropped reset_gone reset_waiting].freeze

    def instrument(name, _payload = nil)
      event = name.to_s.delete_suffix(".approval_sync")
      Thread.current[:race_demo_outcome] ||= event if SETTLED.include?(event)
      DB.with { |redis| redis.hincrby(Keys::EVENTS, event, 1) }
      yield if block_given?
    end

    def self.capture
      Thread.current[:race_demo_outcome] = nil
      yield
      Thread.current[:race_demo_outcome]
    ensure
      Thread.current[:race_demo_outcome] = nil
    end
  end

  # EE's reset worker: (project_id, user_id, ref, newrev, oldrev). The reset
  # runs through the coordinator; with the flag off that only runs it.
  class MergeRequestResetApprovalsWorker
    include Sidekiq::Worker

    sidekiq_options retry: 3, queue: "default"

    # The legacy path asks for perform_in(10); the demo runs its clock faster.
    def self.perform_in(interval, *args)
      super(interval * Settings.time_scale, *args)
    end

    def perform(project_id, user_id, ref, newrev, oldrev = nil)
      merge_request = MergeRequest.find_by_ref(ref)
      coordinator = ApprovalSync::ApprovalRulesSyncCoordinator.new(merge_request)
      seen = nil
      outcome = ResetOutcomes.capture do
        coordinator.reset_approvals!(project_id:, user_id:, ref:, newrev:, oldrev:) do
          seen = ResetApprovalsService.new(merge_request, oldrev:, newrev:).execute
        end
      end
      record(merge_request, oldrev, newrev, seen, outcome) if seen
    end

    private

    def record(merge_request, oldrev, newrev, seen, outcome)
      run = seen.merge("mr" => merge_request.id, "oldrev" => oldrev, "newrev" => newrev,
                       "outcome" => outcome || "ran", "pid" => Process.pid, "jid" => jid)
      DB.with { |redis| redis.rpush(Keys::RUNS, JSON.generate(run)) }
    end
  end

  # PostReceive-like worker: one push (`oldrev newrev ref`) of one branch.
  class PostReceiveWorker
    include Sidekiq::Worker

    sidekiq_options retry: 3, queue: "default"

    def perform(_project_id, user_id, changes)
      oldrev, newrev, ref = changes.split(" ", 3)
      PushFlow.new(MergeRequest.find_by_ref(ref), user_id:, oldrev:, newrev:).execute
      DB.with { |redis| redis.incr(Keys::PUSHES_DONE) }
    end
  end

  # Sidekiq client middleware: the moment push 2's reset job enters Sidekiq
  # (queued or scheduled), the planned third push of that merge request is
  # sent, so it lands while that reset waits in the queue.
  class ThirdPush
    def call(worker_class, job, _queue, _redis_pool)
      result = yield
      trigger(job) if result && worker_class.to_s == MergeRequestResetApprovalsWorker.name
      result
    end

    private

    def trigger(job)
      newrev = job["args"][3]
      follow_up = PushPlan.find(newrev)["then"]
      return unless follow_up && DB.with { |redis| redis.sadd?(Keys::THIRD_SENT, newrev) }

      PostReceiveWorker.perform_async(PROJECT_ID, follow_up.fetch("user_id"), follow_up.fetch("changes"))
    end
  end

  # A scheduled job the driver waits for: proof that a Sidekiq poller runs.
  class SchedulerCanary
    include Sidekiq::Worker

    KEY = "demo:scheduler_canary"

    def perform(token)
      DB.with { |redis| redis.set(KEY, token) }
    end
  end

  # Sidekiq server middleware: counts jobs in flight (so the driver knows when
  # everything settled) and records any error for the driver to report.
  class JobTracker
    def call(_worker, job, _queue)
      DB.with { |redis| redis.incr(Keys::INFLIGHT) }
      yield
    rescue Exception => e # rubocop:disable Lint/RescueException -- report everything, then let Sidekiq handle it
      note_error(job, e)
      raise
    ensure
      DB.with { |redis| redis.decr(Keys::INFLIGHT) }
    end

    private

    def note_error(job, error)
      entry = { "class" => job["class"], "args" => job["args"], "error" => "#{error.class}: #{error.message}",
                "pid" => Process.pid }
      DB.with { |redis| redis.rpush(Keys::ERRORS, JSON.generate(entry)) }
    rescue StandardError
      nil
    end
  end

  # ApprovalSync settings shared by the Sidekiq processes and the driver.
  def self.configure_approval_sync(logger: nil)
    ApprovalSync.configure do |config|
      config.redis_url = Settings.redis_url
      config.deterministic_sync = ->(merge_request) { Flag.on?(merge_request) }
      config.reset_approvals_worker = MergeRequestResetApprovalsWorker
      config.logger = logger
      config.instrumenter = ResetOutcomes.new
    end
  end
end
