# frozen_string_literal: true

require "logger"
require_relative "approval_sync/version"
require_relative "approval_sync/errors"
require_relative "approval_sync/configuration"
require "approval_sync/approval_sync"
require_relative "approval_sync/validate"
require_relative "approval_sync/events"
require_relative "approval_sync/jobs"
require_relative "approval_sync/merge_request_scope"
require_relative "approval_sync/approval_state"
require_relative "approval_sync/approval_rules_sync_coordinator"
require_relative "approval_sync/sweep"

# Deterministic tracking of GitLab EE's code-owner rule syncs and the
# approval resets that must wait for them, behind the feature flag
# `deterministic_approval_rules_sync`.
module ApprovalSync
  @config = Configuration.new
  @lock = Mutex.new
  @tracker = nil

  class << self
    # @return [Configuration] the settings in force
    attr_reader :config

    # Changes the settings; the next call connects with them.
    # @yieldparam config [Configuration]
    # @return [Configuration]
    def configure
      @lock.synchronize do
        before = @config.dup
        yield @config
        flag = @config.deterministic_sync
        unless flag.respond_to?(:call)
          @config = before # a rejected change changes nothing
          raise ConfigurationError,
                "deterministic_sync must answer #call(merge_request), got #{Validate.describe(flag)}"
        end
        drop_tracker
      end
      @config
    end

    # The native connection for the current settings, shared by all threads.
    # A forked child reconnects on its first call.
    # @return [Native::Tracker]
    # @raise [ConfigurationError] when the settings cannot work
    def tracker
      @tracker || @lock.synchronize { @tracker ||= Native::Tracker.new(@config.connection_settings) }
    end

    private

    # Closes the old connection now rather than at the next GC.
    def drop_tracker
      @tracker&.discard
      @tracker = nil
    end

    public

    # Whether the flag is on for `merge_request`, asked anew on every call.
    # @param merge_request [#id, Integer]
    # @return [Boolean]
    def deterministic?(merge_request)
      @config.deterministic_sync.call(merge_request) ? true : false
    end

    # Drops the settings and the connection (used by test suites).
    # @return [void]
    def reset!
      @lock.synchronize do
        @config = Configuration.new
        drop_tracker
      end
      nil
    end
  end
end
