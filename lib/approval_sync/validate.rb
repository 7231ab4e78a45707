# frozen_string_literal: true

module ApprovalSync
  # Argument checks shared by the public classes. Each raises before anything
  # is written: TypeError for a wrong class, ArgumentError for a bad value.
  module Validate
    # Largest id a database column holds.
    MAX_ID = (2**63) - 1
    # A git object id.
    SHA = /\A[0-9a-fA-F]{7,64}\z/
    # What ApprovalState accepts as a member.
    MEMBER = /\A(?:code_owner|reset_approvals):(?:create|[0-9a-fA-F]{7,64}:[0-9a-fA-F]{7,64})\z/

    module_function

    # @return [Integer] the id of a merge request object or a positive Integer
    def merge_request_id(merge_request)
      return positive_id(merge_request, "merge request id") if Integer === merge_request # rubocop:disable Style/CaseEquality -- works on BasicObject too

      id = begin
        merge_request.id
      rescue NoMethodError
        raise TypeError, "merge request must answer #id or be an Integer, got #{describe(merge_request)}"
      end
      positive_id(id, "merge request id")
    end

    # @return [Integer] a positive Integer that fits a database id
    def positive_id(value, name)
      raise TypeError, "#{name} must be an Integer, got #{describe(value)}" unless Integer === value # rubocop:disable Style/CaseEquality -- works on BasicObject too
      raise ArgumentError, "#{name} must be between 1 and #{MAX_ID}, got #{value}" unless value.between?(1, MAX_ID)

      value
    end

    # A short description for error messages that cannot itself fail.
    # @return [String]
    def describe(value)
      value.inspect.to_s[0, 80]
    rescue StandardError
      "an object that cannot be inspected"
    end

    # @return [String] a git SHA
    def rev(value, name)
      text = string(value, name)
      unless text.match?(SHA)
        raise ArgumentError,
              "#{name} must be a git SHA of 7 to 64 hex digits, got #{text[0, 80].inspect}"
      end

      text
    end

    # @return [String, nil] a git SHA or nil
    def optional_rev(value, name)
      value.nil? ? nil : rev(value, name)
    end

    # @return [Array(String, String), nil] both revs, or nil when neither is given
    def rev_pair(oldrev, newrev)
      return nil if oldrev.nil? && newrev.nil?
      raise ArgumentError, "oldrev and newrev must be given together, or neither" if oldrev.nil? || newrev.nil?

      [rev(oldrev, "oldrev"), rev(newrev, "newrev")]
    end

    # @return [String] a member of the seed's form
    def member(value)
      text = string(value, "member")
      return text if text.match?(MEMBER)

      raise ArgumentError,
            "member must look like code_owner:OLDREV:NEWREV, reset_approvals:OLDREV:NEWREV " \
            "or code_owner:create, got #{text[0, 80].inspect}"
    end

    # @return [String] a branch ref
    def ref(value)
      text = string(value, "ref")
      raise ArgumentError, "ref must be UTF-8 text" unless text.dup.force_encoding(Encoding::UTF_8).valid_encoding?

      if text.empty? || text.bytesize > 1024 || text.include?("\0")
        raise ArgumentError,
              "ref must be 1 to 1024 bytes without NUL"
      end

      text
    end

    # @return [Integer] a TTL in whole seconds
    def ttl(value)
      unless Integer === value # rubocop:disable Style/CaseEquality -- works on BasicObject too
        raise TypeError, "ttl must be an Integer number of seconds, got #{describe(value)}"
      end
      raise ArgumentError, "ttl must be between 1 and 86400 seconds, got #{value}" unless value.between?(1, 86_400)

      value
    end

    # @return [String] a String in a valid encoding
    def string(value, name)
      raise TypeError, "#{name} must be a String, got #{describe(value)}" unless String === value # rubocop:disable Style/CaseEquality -- works on BasicObject too
      raise ArgumentError, "#{name} is not valid #{value.encoding}" unless value.valid_encoding?
      raise ArgumentError, "#{name} must be in an ASCII-compatible encoding" unless value.encoding.ascii_compatible?

      value
    end
  end
end
