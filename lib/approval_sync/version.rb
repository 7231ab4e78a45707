# frozen_string_literal: true

module ApprovalSync
  VERSION = "0.1.0"
end
