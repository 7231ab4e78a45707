# frozen_string_literal: true

module ApprovalSync
  # Settings for the gem, set once per process with {ApprovalSync.configure}.
  class Configuration
    # Connection settings handed to the native library.
    CONNECTION_SETTINGS = %i[
      redis_url cluster_nodes sentinels master_name sentinel_password username password db
      ca_file cert_file key_file tls_insecure connect_timeout read_timeout marker_ttl pending_ttl
    ].freeze

    # @return [String, nil] `redis://`, `rediss://` or `unix://` URL of the shared-state Redis
    attr_accessor :redis_url
    # @return [Array<String>, nil] seed nodes (`host:port`) of a Redis Cluster
    attr_accessor :cluster_nodes
    # @return [Array<String>, nil] sentinels (`host:port`); needs {#master_name}
    attr_accessor :sentinels
    # @return [String, nil] name of the master the sentinels monitor
    attr_accessor :master_name
    # @return [String, nil] the sentinels' own password
    attr_accessor :sentinel_password
    # @return [String, nil] ACL user
    attr_accessor :username
    # @return [String, nil] password; never logged or shown by #inspect
    attr_accessor :password
    # @return [Integer, nil] database number (single server and Sentinel)
    attr_accessor :db
    # @return [String, nil] CA file (PEM) to trust for TLS
    attr_accessor :ca_file
    # @return [String, nil] client certificate (PEM) for mutual TLS
    attr_accessor :cert_file
    # @return [String, nil] client key (PEM) for mutual TLS
    attr_accessor :key_file
    # @return [Boolean] skip TLS certificate checks (tests only)
    attr_accessor :tls_insecure
    # @return [Float] seconds a connection attempt may take (default 1)
    attr_accessor :connect_timeout
    # @return [Float] seconds one reply may take (default 1)
    attr_accessor :read_timeout
    # @return [Integer] seconds a sync marker lives without its finish (default 300)
    attr_accessor :marker_ttl
    # @return [Integer] seconds kept resets live; longer than {#marker_ttl} (default 3600)
    attr_accessor :pending_ttl
    # @return [#call] the feature flag, asked with the merge request (object or id)
    attr_accessor :deterministic_sync
    # @return [Class, String] the reset worker, or its constant name looked up per call
    attr_accessor :reset_approvals_worker
    # @return [Logger, nil] where state changes are logged
    attr_accessor :logger
    # @return [#instrument, nil] ActiveSupport::Notifications-like instrumenter
    attr_accessor :instrumenter

    def initialize
      @redis_url = ENV.fetch("REDIS_URL", "redis://127.0.0.1:6379/0")
      @connect_timeout = 1.0
      @read_timeout = 1.0
      @marker_ttl = 300
      @pending_ttl = 3600
      @tls_insecure = false
      @deterministic_sync = ->(_merge_request) { false }
      @reset_approvals_worker = "MergeRequestResetApprovalsWorker"
      @logger = nil
      @instrumenter = nil
    end

    # The settings the native library reads, with string keys.
    # @return [Hash{String => Object}]
    def connection_settings
      CONNECTION_SETTINGS.each_with_object({}) do |name, settings|
        value = public_send(name)
        next if value.nil?

        value = Float(value) if %i[connect_timeout read_timeout marker_ttl pending_ttl].include?(name)
        settings[name == :redis_url ? "url" : name.to_s] = value
      end
    end

    # The reset worker class.
    # @return [Class]
    # @raise [ConfigurationError] when the name does not resolve to a worker
    def worker
      worker = reset_approvals_worker
      worker = Object.const_get(worker) if worker.is_a?(String)
      return worker if worker.respond_to?(:perform_async) && worker.respond_to?(:perform_in)

      raise ConfigurationError, "reset_approvals_worker #{worker.inspect} must answer perform_async and perform_in"
    rescue NameError => e
      raise ConfigurationError, "reset_approvals_worker #{reset_approvals_worker.inspect} is not defined " \
                                "(uninitialized constant #{e.name})"
    end

    # @return [String] the settings, with secrets hidden
    def inspect
      shown = CONNECTION_SETTINGS.filter_map do |name|
        value = public_send(name)
        "#{name}=#{shown_value(name, value).inspect}" unless value.nil?
      end
      "#<#{self.class.name} #{shown.join(" ")}>"
    end
    alias to_s inspect

    private

    def shown_value(name, value)
      case name
      when :password, :sentinel_password then "***"
      when :redis_url then Redaction.url(value)
      when :sentinels, :cluster_nodes then Array(value).map { |node| Redaction.url(node) }
      else value
      end
    end
  end

  # Hides passwords inside URLs.
  module Redaction
    # Everything between `://` and the last `@` is user information; the
    # password may itself hold `/`, `:` or `@`, so the last `@` ends it.
    # @param url [String]
    # @return [String] the URL with any password replaced by `***`
    def self.url(url)
      text = url.to_s
      start = text.index("://") or return text
      at = text.rindex("@")
      return text unless at && at > start

      user = text[(start + 3)...at].split(":", 2).first
      "#{text[0, start + 3]}#{user}:***#{text[at..]}"
    end
  end
end
