# frozen_string_literal: true

module ApprovalSync
  # One log line and one instrumentation event per state change. Reads that
  # change nothing emit nothing.
  module Events
    # Events logged at error level; the rest are info.
    ERRORS = %i[enqueue_failed index_failed sweep_failed].freeze

    module_function

    # @param name [Symbol] e.g. :sync_started
    # @param payload [Hash] merge_request_id, member, revs, counts
    # @return [void]
    def emit(name, payload)
      config = ApprovalSync.config
      log(config.logger, name, payload) if config.logger
      config.instrumenter&.instrument("#{name}.approval_sync", payload)
      nil
    end

    # @return [void]
    def log(logger, name, payload)
      fields = payload.map { |key, value| "#{key}=#{value.is_a?(String) ? value : value.inspect}" }
      line = "approval_sync event=#{name} #{fields.join(" ")}"
      ERRORS.include?(name) ? logger.error(line) : logger.info(line)
    end
  end
end
