# frozen_string_literal: true

module ApprovalSync
  class CLI
    # Keeps passwords out of what the command prints. Error messages come
    # from Redis clients and from the settings, so every password the
    # settings hold is cut out wherever it appears, and so is the password
    # part of any URL.
    module Secrets
      # user:password@ in a URL.
      URL_PASSWORD = %r{\A[a-z][a-z0-9+.-]*://[^:/@]*:([^@/]+)@}i

      module_function

      # @param message [String]
      # @param config [Configuration]
      # @param extra_url [String, nil] a URL given outside the configuration
      # @return [String] the message with every known password replaced by `***`
      def redact(message, config, extra_url = nil)
        text = message.gsub(%r{[a-z][a-z0-9+.-]*://\S+}i) { |url| Redaction.url(url) }
        passwords(config, extra_url).reduce(text) { |result, secret| result.gsub(secret, "***") }
      end

      # @param config [Configuration]
      # @param extra_url [String, nil]
      # @return [Array<String>] every password the settings hold, longest first
      def passwords(config, extra_url = nil)
        urls = [extra_url, config.redis_url, *Array(config.cluster_nodes), *Array(config.sentinels)]
        found = [config.password, config.sentinel_password, *urls.compact.flat_map { |url| url_passwords(url) }]
        found.compact.map(&:to_s).reject(&:empty?).uniq.sort_by { |secret| -secret.length }
      end

      # @param url [#to_s]
      # @return [Array<String>] the URL's password as written and percent-decoded (a client may show either)
      def url_passwords(url)
        secret = url.to_s[URL_PASSWORD, 1]
        secret ? [secret, secret.gsub(/%\h\h/) { |code| code[1..].hex.chr }] : []
      end
    end
  end
end
