# frozen_string_literal: true

require "json"
require "set"
require "approval_sync"

module ApprovalSync
  # RSpec support for the suites of applications that use approval_sync.
  #
  #   require "approval_sync/rspec"
  #
  # gives every example group:
  #
  # - the shared contexts {FLAG_ON_CONTEXT} and {FLAG_OFF_CONTEXT}, and the
  #   group method {GroupMethods#approval_sync_flag_states}, which runs a
  #   group once with the flag off and once on;
  # - {WorkerSpy}, a stand-in reset worker, installed for one example with
  #   {Helpers#approval_sync_worker_spy};
  # - the matchers {Matchers#be_syncing_approvals},
  #   {Matchers#have_pending_reset_approvals} and
  #   {Matchers#have_enqueued_reset_approvals};
  # - key isolation: after each example, the tracking keys and the legacy flag
  #   of every merge request the example touched are deleted, one merge request
  #   at a time. The kit never runs FLUSHDB, so it is safe on a Redis shared
  #   with other code.
  #
  # It needs nothing beyond rspec-core, rspec-expectations and the gem.
  #
  # @example A group run under both flag states
  #   RSpec.describe PushService do
  #     approval_sync_flag_states do |enabled|
  #       it "resets approvals of the pushed range" do
  #         worker = approval_sync_worker_spy
  #         PushService.new(merge_request).execute
  #         if enabled
  #           expect(worker).to have_enqueued_reset_approvals(7, 9, "refs/heads/feature", newrev, oldrev)
  #         else
  #           expect(worker).to have_enqueued_reset_approvals(7, 9, "refs/heads/feature", newrev, oldrev)
  #             .with_delay(10)
  #         end
  #       end
  #     end
  #   end
  module RSpec
    # Shared context: the flag is on for every merge request.
    FLAG_ON_CONTEXT = "with deterministic approval rules sync"
    # Shared context: the flag is off for every merge request.
    FLAG_OFF_CONTEXT = "without deterministic approval rules sync"
    # Example metadata key holding the flag state of the enclosing context.
    FLAG_METADATA = :approval_sync_flag
    # Entry states as stored in Redis, by name.
    ENTRY_STATES = { "w" => :waiting, "q" => :queued, "r" => :running }.freeze

    # A feature-flag callable answering one fixed value and remembering every
    # merge request it was asked about, so a spec can check which object the
    # flag was resolved for.
    class FlagSpy
      # @return [Boolean] the answer to every question
      attr_reader :enabled

      # @param enabled [Boolean] the answer to give
      def initialize(enabled)
        @enabled = enabled ? true : false
        @asked = []
        @lock = Mutex.new
      end

      # The flag callable: records `merge_request` and answers {#enabled}.
      # @param merge_request [Object] what the gem asked about
      # @return [Boolean]
      def call(merge_request)
        @lock.synchronize { @asked << merge_request }
        @enabled
      end

      # @return [Array<Object>] every merge request asked about, oldest first
      def asked_with
        @lock.synchronize { @asked.dup }
      end

      # Forgets the questions asked so far.
      # @return [void]
      def clear
        @lock.synchronize { @asked.clear }
        nil
      end

      # @return [String]
      def inspect
        "#<#{self.class.name} enabled=#{@enabled} asked=#{asked_with.size}>"
      end
    end

    # A stand-in for the reset worker class. It answers `perform_async` and
    # `perform_in` like a Sidekiq worker class, records each call (method,
    # delay, arguments) and queues the job for {#drain}. Thread-safe.
    class WorkerSpy
      # One recorded call.
      # @!attribute [r] method_name
      #   @return [Symbol] :perform_async or :perform_in
      # @!attribute [r] args
      #   @return [Array] the worker arguments
      # @!attribute [r] delay
      #   @return [Numeric, nil] the perform_in interval; nil for perform_async
      Call = Struct.new(:method_name, :args, :delay) do
        # @return [Boolean] whether the call was perform_async
        def async?
          method_name == :perform_async
        end

        # @return [String]
        def to_s
          shown = (async? ? args : [delay, *args]).map(&:inspect).join(", ")
          "#{method_name}(#{shown})"
        end
      end

      def initialize
        @lock = Mutex.new
        @calls = []
        @queue = []
        @failures = []
        @jid = 0
      end

      # Records an immediate enqueue, or raises the next error queued by {#fail_next}.
      # @param args [Array] the worker arguments
      # @return [String] a job id
      def perform_async(*args)
        record(Call.new(:perform_async, args, nil))
      end

      # Records a delayed enqueue, or raises the next error queued by {#fail_next}.
      # @param interval [Numeric] the delay in seconds
      # @param args [Array] the worker arguments
      # @return [String] a job id
      def perform_in(interval, *args)
        record(Call.new(:perform_in, args, interval))
      end

      # Makes the next `times` enqueues raise `error` (they are not recorded),
      # as a Sidekiq whose Redis is down would.
      # @param error [Exception] what to raise
      # @param times [Integer] how many enqueues fail
      # @return [self]
      def fail_next(error = RuntimeError.new("enqueue failed (WorkerSpy#fail_next)"), times: 1)
        @lock.synchronize { times.times { @failures << error } }
        self
      end

      # @return [Array<Call>] every successful call, oldest first (drain does not remove them)
      def calls
        @lock.synchronize { @calls.dup }
      end

      # @return [Array<Array>] the arguments of every perform_async call
      def async_args
        calls.select(&:async?).map(&:args)
      end

      # @return [Array<Array>] `[delay, *args]` of every perform_in call
      def delayed_args
        calls.reject(&:async?).map { |call| [call.delay, *call.args] }
      end

      # @return [Array<Call>] calls not yet run by {#drain}
      def jobs
        @lock.synchronize { @queue.dup }
      end

      # Runs the queued jobs through the block, oldest first, ignoring delays,
      # until none is left; jobs the block enqueues run too.
      # @param max_jobs [Integer] stops a job that keeps re-enqueuing itself
      # @yieldparam args [Array] the worker arguments of one job
      # @return [Integer] jobs run
      # @raise [RuntimeError] when more than `max_jobs` jobs were run
      def drain(max_jobs: 100)
        raise ArgumentError, "drain needs a block" unless block_given?

        ran = 0
        while (job = @lock.synchronize { @queue.shift })
          raise "WorkerSpy#drain ran #{max_jobs} jobs and more keep coming" if ran >= max_jobs

          ran += 1
          yield(*job.args)
        end
        ran
      end

      # Forgets recorded calls, queued jobs and pending failures.
      # @return [void]
      def clear
        @lock.synchronize do
          @calls.clear
          @queue.clear
          @failures.clear
        end
        nil
      end

      # @return [String] a name for error messages
      def name
        self.class.name
      end

      # @return [String]
      def inspect
        "#<#{self.class.name} #{calls.map(&:to_s).join(", ")}>"
      end

      private

      def record(call)
        @lock.synchronize do
          error = @failures.shift
          raise error if error

          @calls << call
          @queue << call
          @jid += 1
          format("spy%06d", @jid)
        end
      end
    end

    # One kept reset as stored in Redis, decoded.
    # @!attribute [r] id
    #   @return [Integer] the entry id (push order)
    # @!attribute [r] state
    #   @return [Symbol] :waiting (for the syncs to end), :queued or :running
    # @!attribute [r] deadline_ms
    #   @return [Integer] when a queued or running entry stops holding the merge request
    # @!attribute [r] dirty
    #   @return [Boolean] a sync started while the reset ran
    # @!attribute [r] oldrev
    #   @return [String, nil]
    # @!attribute [r] newrev
    #   @return [String]
    # @!attribute [r] args
    #   @return [Array] the worker arguments
    KeptReset = Struct.new(:id, :state, :deadline_ms, :dirty, :oldrev, :newrev, :args)

    # Merge request ids that ApprovalState or the coordinator was built for
    # since the last {.take}. Filled by {Recorder}.
    module Touched
      @ids = Set.new
      @lock = Mutex.new

      class << self
        # @param id [Integer] a merge request id
        # @return [void]
        def record(id)
          @lock.synchronize { @ids << id }
          nil
        end

        # @return [Array<Integer>] the ids recorded so far; forgets them
        def take
          @lock.synchronize do
            ids = @ids.to_a
            @ids.clear
            ids
          end
        end
      end
    end

    # Prepended to ApprovalState and the coordinator so the kit knows which
    # merge requests an example touched.
    module Recorder
      # Records the merge request, then builds the object as usual.
      # @param merge_request [#id, Integer]
      def initialize(merge_request)
        super
        Touched.record(merge_request_id)
      end
    end

    class << self
      # Runs `block` in `group` twice: in a context with the flag off and in
      # one with the flag on. Same as {GroupMethods#approval_sync_flag_states}.
      # @param group [Class] an RSpec example group
      # @yieldparam enabled [Boolean] the flag state of the context
      # @return [void]
      def both_flag_states(group, &block)
        raise ArgumentError, "both_flag_states needs a block" unless block

        [false, true].each do |enabled|
          group.context(enabled ? FLAG_ON_CONTEXT : FLAG_OFF_CONTEXT, FLAG_METADATA => enabled) do
            include_context(enabled ? FLAG_ON_CONTEXT : FLAG_OFF_CONTEXT)
            class_exec(enabled, &block)
          end
        end
        nil
      end

      # The kept resets of a merge request, read without changing anything.
      # @param merge_request [#id, Integer, ApprovalState, ApprovalRulesSyncCoordinator]
      # @return [Array<KeptReset>] oldest push first
      def kept_resets(merge_request)
        _, _, _, entries = ApprovalSync.tracker.snapshot(merge_request_id(merge_request))
        entries.map { |id, raw| decode_entry(id, raw) }
      end

      # The merge request id of anything the kit accepts.
      # @param subject [#merge_request_id, #id, Integer]
      # @return [Integer]
      def merge_request_id(subject)
        return subject.merge_request_id if subject.respond_to?(:merge_request_id)

        Validate.merge_request_id(subject)
      end

      # An ApprovalState for anything the kit accepts. A coordinator's state
      # asks the flag about the coordinator's own merge request object.
      # @param subject [ApprovalState, ApprovalRulesSyncCoordinator, #id, Integer]
      # @return [ApprovalState]
      def state_for(subject)
        case subject
        when ApprovalState then subject
        when ApprovalRulesSyncCoordinator
          ApprovalState.new(subject.instance_variable_get(:@merge_request) || subject.merge_request_id)
        else ApprovalState.new(subject)
        end
      end

      # Deletes the markers, kept resets, legacy flag and sweep-index entry of
      # each merge request, one merge request at a time (never FLUSHDB).
      # @param ids [Array<Integer>] merge request ids
      # @return [void]
      def clear_merge_requests!(ids)
        return if ids.empty?

        tracker = ApprovalSync.tracker
        ids.each do |id|
          ApprovalRulesSyncCoordinator.new(id).clear!
          tracker.legacy_delete(id)
        end
        clear_index(tracker, ids)
        Touched.take
        nil
      end

      # Runs an example, then clears every merge request touched since the
      # last cleanup (by the example, its hooks, or {Helpers#approval_sync_touch}).
      # A Redis that cannot be reached at cleanup time is reported, not
      # raised, so the example's own result stands.
      # @yield the example
      # @return [void]
      def isolate
        yield
      ensure
        touched = Touched.take
        begin
          clear_merge_requests!(touched)
        rescue ApprovalSync::ConfigurationError
          nil # the example left settings that cannot connect, so it wrote nothing either
        rescue ApprovalSync::Error => e
          warn "approval_sync/rspec: could not clear merge requests #{touched.inspect}: #{e.class}: #{e.message}"
        end
      end

      private

      def decode_entry(id, raw)
        state, deadline, dirty, oldrev, newrev, args = raw.split("|", 6)
        KeptReset.new(id, ENTRY_STATES.fetch(state, state.to_sym), Integer(deadline), dirty == "1",
                      oldrev.empty? ? nil : oldrev, newrev, JSON.parse(args))
      end

      # The sweep's index has no per-id delete; reading it with the clock set
      # far ahead lists every id with its score, which settling removes.
      def clear_index(tracker, ids)
        tracker.set_clock(2**52)
        wanted = ids.to_set
        tracker.index_due(10_000).each do |id, score|
          tracker.index_settle(id, score, nil) if wanted.include?(id)
        end
      ensure
        tracker.set_clock(nil)
      end
    end

    # Group methods, available in every example group.
    module GroupMethods
      # Runs the block's examples twice, in a context with the flag off
      # ({FLAG_OFF_CONTEXT}) and in one with it on ({FLAG_ON_CONTEXT}).
      # @yieldparam enabled [Boolean] the flag state of that context
      # @return [void]
      def approval_sync_flag_states(&)
        ApprovalSync::RSpec.both_flag_states(self, &)
      end
    end

    # Example helpers, available in every example.
    module Helpers
      # A {WorkerSpy} installed as `config.reset_approvals_worker` for this
      # example; the previous worker comes back after it.
      # @return [WorkerSpy]
      def approval_sync_worker_spy
        @approval_sync_worker_spy ||= begin
          @approval_sync_previous_worker = ApprovalSync.config.reset_approvals_worker
          ApprovalSync.config.reset_approvals_worker = WorkerSpy.new
        end
      end

      # @return [FlagSpy, nil] the flag callable of the enclosing flag context
      def approval_sync_flag
        @approval_sync_flag
      end

      # @return [Boolean, nil] the flag state of the enclosing flag context
      def approval_sync_enabled?
        ::RSpec.current_example&.metadata&.fetch(FLAG_METADATA, nil)
      end

      # Marks merge requests for cleanup after the example, for ids the
      # example reached without building an ApprovalState or coordinator
      # (for instance in a forked process).
      # @param ids [Array<Integer>]
      # @return [void]
      def approval_sync_touch(*ids)
        ids.each { |id| Touched.record(Validate.merge_request_id(id)) }
        nil
      end

      # @param merge_request [#id, Integer, ApprovalState, ApprovalRulesSyncCoordinator]
      # @return [Array<KeptReset>] the merge request's kept resets
      def approval_sync_kept_resets(merge_request)
        ApprovalSync::RSpec.kept_resets(merge_request)
      end

      # Sets the flag callable for this example; {#approval_sync_restore!} undoes it.
      # @param enabled [Boolean]
      # @return [FlagSpy]
      def approval_sync_use_flag(enabled)
        @approval_sync_previous_flag ||= ApprovalSync.config.deterministic_sync
        @approval_sync_flag = FlagSpy.new(enabled)
        ApprovalSync.config.deterministic_sync = @approval_sync_flag
      end

      # Puts back the worker and the flag the kit replaced in this example.
      # @return [void]
      def approval_sync_restore!
        config = ApprovalSync.config
        config.reset_approvals_worker = @approval_sync_previous_worker if @approval_sync_worker_spy
        config.deterministic_sync = @approval_sync_previous_flag if @approval_sync_previous_flag
        @approval_sync_worker_spy = @approval_sync_previous_worker = @approval_sync_previous_flag = nil
      end
    end

    # Matches when a merge request has a sync in progress (flag on), read as
    # the application reads it.
    class BeSyncingApprovals
      # Narrows the match to one member, e.g. `code_owner:OLD:NEW`.
      # @param member [String]
      # @return [self]
      def for(member)
        @member = member
        self
      end

      # @param actual [ApprovalState, ApprovalRulesSyncCoordinator, #id, Integer]
      # @return [Boolean]
      def matches?(actual)
        @actual = actual
        state = ApprovalSync::RSpec.state_for(actual)
        @member ? state.approval_rules_syncing?(@member) : state.any_approval_rules_syncing?
      end

      # @return [String]
      def description
        "be syncing approvals#{" for #{@member}" if @member}"
      end

      # @return [String]
      def failure_message
        "expected merge request #{subject_id} to #{description}, but it was not"
      end

      # @return [String]
      def failure_message_when_negated
        "expected merge request #{subject_id} not to #{description}, but it was"
      end

      private

      def subject_id
        ApprovalSync::RSpec.merge_request_id(@actual)
      end
    end

    # Matches kept resets of a merge request that wait for its syncs.
    class HavePendingResetApprovals
      # @param states [Array<Symbol>] entry states that count
      def initialize(states = [:waiting])
        @states = states
      end

      # Only resets scheduled with exactly these worker arguments count.
      # @param args [Array] e.g. `7, 9, "refs/heads/feature", newrev, oldrev`
      # @return [self]
      def with(*args)
        @args = args
        self
      end

      # Requires exactly `number` matching resets.
      # @param number [Integer]
      # @return [self]
      def count(number)
        @count = number
        self
      end

      # Counts queued and running resets too, not only waiting ones.
      # @return [self]
      def in_any_state
        @states = ENTRY_STATES.values
        self
      end

      # @param actual [ApprovalState, ApprovalRulesSyncCoordinator, #id, Integer]
      # @return [Boolean]
      def matches?(actual)
        @actual = actual
        @all = ApprovalSync::RSpec.kept_resets(actual)
        found = matching.size
        @count ? found == @count : found.positive?
      end

      # @return [String]
      def description
        text = "have #{@count || "some"} pending reset approvals"
        text += " with #{@args.inspect}" if @args
        text
      end

      # @return [String]
      def failure_message
        "expected merge request #{subject_id} to #{description}, it has #{shown}"
      end

      # @return [String]
      def failure_message_when_negated
        "expected merge request #{subject_id} not to #{description}, it has #{shown}"
      end

      private

      def matching
        @all.select { |entry| @states.include?(entry.state) && (@args.nil? || entry.args == @args) }
      end

      def shown
        return "no kept resets" if @all.empty?

        @all.map { |entry| "#{entry.state} #{entry.args.inspect}" }.join("; ")
      end

      def subject_id
        ApprovalSync::RSpec.merge_request_id(@actual)
      end
    end

    # Matches calls recorded by a {WorkerSpy}: perform_async by default,
    # perform_in with {#with_delay}.
    class HaveEnqueuedResetApprovals
      # @param args [Array, nil] the worker arguments; nil matches any
      def initialize(args)
        @args = args
      end

      # Expects `perform_in(seconds, *args)` instead of `perform_async(*args)`.
      # @param seconds [Numeric]
      # @return [self]
      def with_delay(seconds)
        @delay = seconds
        self
      end

      # Requires exactly `number` matching calls.
      # @param number [Integer]
      # @return [self]
      def times(number)
        @count = number
        self
      end
      alias exactly times

      # Requires exactly one matching call.
      # @return [self]
      def once
        times(1)
      end

      # Requires exactly two matching calls.
      # @return [self]
      def twice
        times(2)
      end

      # @param spy [WorkerSpy]
      # @return [Boolean]
      def matches?(spy)
        unless spy.is_a?(WorkerSpy)
          raise ArgumentError, "have_enqueued_reset_approvals needs a WorkerSpy, got #{spy.inspect}"
        end

        @calls = spy.calls
        found = @calls.count { |call| wanted?(call) }
        @count ? found == @count : found.positive?
      end

      # @return [String]
      def description
        call = @delay ? "perform_in(#{[@delay, *@args].map(&:inspect).join(", ")})" : "perform_async(#{shown_args})"
        "have enqueued reset approvals with #{call}#{" #{@count} time(s)" if @count}"
      end

      # @return [String]
      def failure_message
        "expected the worker to #{description}; it got #{received}"
      end

      # @return [String]
      def failure_message_when_negated
        "expected the worker not to #{description}; it got #{received}"
      end

      private

      def wanted?(call)
        return false if @delay.nil? != call.async?
        return false if @delay && call.delay != @delay

        @args.nil? || call.args == @args
      end

      def shown_args
        @args ? @args.map(&:inspect).join(", ") : "any args"
      end

      def received
        @calls.empty? ? "no calls" : @calls.map(&:to_s).join("; ")
      end
    end

    # Matchers, available in every example.
    module Matchers
      # @return [BeSyncingApprovals]
      def be_syncing_approvals
        BeSyncingApprovals.new
      end

      # @return [HavePendingResetApprovals] kept resets waiting for a sync
      def have_pending_reset_approvals # rubocop:disable Naming/PredicateName -- RSpec matcher name
        HavePendingResetApprovals.new
      end

      # @param args [Array] the worker arguments; none matches any call of that kind
      # @return [HaveEnqueuedResetApprovals]
      def have_enqueued_reset_approvals(*args) # rubocop:disable Naming/PredicateName -- RSpec matcher name
        HaveEnqueuedResetApprovals.new(args.empty? ? nil : args)
      end
    end
  end
end

ApprovalSync::ApprovalState.prepend(ApprovalSync::RSpec::Recorder)
ApprovalSync::ApprovalRulesSyncCoordinator.prepend(ApprovalSync::RSpec::Recorder)

RSpec.shared_context ApprovalSync::RSpec::FLAG_ON_CONTEXT do
  before { approval_sync_use_flag(true) }
end

RSpec.shared_context ApprovalSync::RSpec::FLAG_OFF_CONTEXT do
  before { approval_sync_use_flag(false) }
end

RSpec.configure do |config|
  config.include ApprovalSync::RSpec::Helpers
  config.include ApprovalSync::RSpec::Matchers
  config.extend ApprovalSync::RSpec::GroupMethods
  config.after { approval_sync_restore! }
  config.around { |example| ApprovalSync::RSpec.isolate { example.run } }
end
