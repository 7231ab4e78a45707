# frozen_string_literal: true

module ApprovalSync
  # Base class of every error the gem raises on its own account. Bad arguments
  # raise Ruby's ArgumentError or TypeError instead, and change nothing.
  class Error < StandardError; end

  # The configuration cannot describe a working Redis connection.
  class ConfigurationError < Error; end

  # Redis could not be reached, or the connection broke during a call.
  class ConnectionError < Error; end

  # Redis did not answer within the configured timeout.
  class TimeoutError < ConnectionError; end

  # A key of this gem holds another Redis type than the one it must hold.
  class WrongTypeError < Error
    # @return [String] the key that holds the wrong type
    attr_reader :key

    # @param message [String]
    # @param key [String] the offending key
    def initialize(message = nil, key = nil)
      super(message)
      @key = key
    end
  end

  # Redis answered something the protocol does not expect.
  class ProtocolError < Error; end

  # A call was abandoned because the thread was interrupted. Usually Ruby
  # raises its own interrupt (Timeout::Error, a kill) instead of this.
  class InterruptedError < Error; end

  # A bug inside the native library, caught before it could crash the process.
  class InternalError < Error; end

  # The reset worker's perform_async raised. The resets it was handed were
  # put back in Redis and a later call or the sweep enqueues them.
  class EnqueueError < Error; end
end
