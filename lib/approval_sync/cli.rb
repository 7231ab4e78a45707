# frozen_string_literal: true

require "json"
require "logger"
require "optparse"
require "yaml"
require_relative "../approval_sync"
require_relative "cli/snapshot"
require_relative "cli/table"
require_relative "cli/status_view"
require_relative "cli/secrets"
require_relative "cli/clear_report"

module ApprovalSync
  # The operator command `approval-sync`: inspect, sweep and clear the
  # tracking state of merge requests. `exe/approval-sync` only builds one of
  # these and exits with {#run}'s code, so everything here runs in specs too.
  #
  # Settings come, later ones winning, from the REDIS_URL environment
  # variable, files loaded with `--require` (which may call
  # {ApprovalSync.configure} and define the reset worker), a YAML file given
  # with `--config`, and `--redis-url` / `--timeout`.
  class CLI
    # Exit code: the command did what was asked.
    OK = 0
    # Exit code: Redis could not be reached or answered with an error.
    FAILED = 1
    # Exit code: the command line or the configuration is wrong; nothing was done.
    USAGE = 2

    # Keys a `--config` YAML file may hold: the connection settings of
    # {Configuration} plus the reset worker's constant name.
    CONFIG_KEYS = (Configuration::CONNECTION_SETTINGS + %i[reset_approvals_worker]).freeze

    # Which options belong to which command.
    COMMAND_OPTIONS = {
      "status" => %i[],
      "sweep" => %i[dry_run limit],
      "clear" => %i[yes legacy]
    }.freeze

    # Options named on the command line, for messages.
    OPTION_NAMES = { dry_run: "--dry-run", limit: "--limit", yes: "--yes", legacy: "--legacy" }.freeze

    # Options: key, switch, argument type (nil for a flag), help text.
    OPTION_TABLE = [
      [:json, "--json", nil, "print JSON instead of tables"],
      [:config, "--config FILE", String, "YAML file with Configuration's connection keys"],
      [:redis_url, "--redis-url URL", String, "Redis URL (overrides REDIS_URL and --config)"],
      [:timeout, "--timeout SECONDS", Float, "connect and read timeout (default 1)"],
      [:requires, "--require FILE", String, "load FILE first (reset worker, ApprovalSync.configure)"],
      [:verbose, "--verbose", nil, "log each state change to stderr"],
      [:dry_run, "--dry-run", nil, "sweep: list the merge requests due; enqueue nothing"],
      [:limit, "--limit N", Integer, "sweep: at most N merge requests (1-10000, default 100)"],
      [:yes, "--yes", nil, "clear: required, as the dropped resets never run"],
      [:legacy, "--legacy", nil, "clear: also delete the legacy flag mr_ID_cannot_merge"]
    ].freeze

    # Shown by `--help`.
    USAGE_TEXT = <<~TEXT
      Usage: approval-sync [options] COMMAND [ARGS]

      Inspect and repair approval_sync's state in the shared-state Redis.

      Commands:
        status MR_ID          legacy flag, sync markers and kept resets of a merge request (read-only)
        sweep                 enqueue kept resets whose syncs died (what the cron worker does)
        clear MR_ID --yes     drop the merge request's sync markers and kept resets

      Exit codes: 0 done, 1 Redis unreachable or failing, 2 wrong command line or configuration.

      Options:
    TEXT

    # Raised for a wrong command line; the message is shown with a hint to `--help`.
    class UsageError < StandardError; end

    # @param argv [Array<String>] the arguments after the command name
    # @param out [IO] where results go
    # @param err [IO] where errors and, with `--verbose`, event lines go
    def initialize(argv, out: $stdout, err: $stderr)
      @argv = argv.dup
      @out = out
      @err = err
      @options = { requires: [] }
    end

    # Runs the command.
    # @return [Integer] {OK}, {FAILED} or {USAGE}
    def run
      command, args = parse
      return OK if command.nil?

      setup
      send(:"run_#{command}", *args)
    rescue UsageError => e
      report(USAGE, "UsageError", "#{e.message} (see approval-sync --help)")
    rescue ConfigurationError => e
      report(USAGE, e.class.name, e.message)
    rescue Error => e
      report(FAILED, e.class.name, e.message)
    end

    private

    attr_reader :options

    # --- command line ----------------------------------------------------

    # @return [Array(String, Array<String>), nil] the command and its arguments; nil after --help/--version
    def parse
      rest = parser.parse(@argv)
      return nil if options[:done]

      command = rest.shift or raise UsageError, "no command given"
      raise UsageError, "unknown command #{command.inspect}" unless COMMAND_OPTIONS.key?(command)

      check_options(command)
      [command, arguments(command, rest)]
    rescue OptionParser::ParseError => e
      raise UsageError, e.message
    end

    def parser
      OptionParser.new do |o|
        o.banner = USAGE_TEXT
        o.program_name = "approval-sync"
        OPTION_TABLE.each do |key, switch, type, text|
          o.on(*[switch, type, text].compact) { |value| store(key, type ? value : true) }
        end
        o.on("-h", "--help", "show this help") { done(o.help) }
        o.on("-v", "--version", "show the version") { done("approval-sync #{VERSION}") }
      end
    end

    def store(key, value)
      key == :requires ? options[:requires] << value : options[key] = value
    end

    def done(text)
      @out.puts text unless options[:done]
      options[:done] = true
    end

    def check_options(command)
      OPTION_NAMES.each do |key, name|
        next if COMMAND_OPTIONS[command].include?(key)
        raise UsageError, "#{name} does not apply to #{command}" if options.key?(key)
      end
      raise UsageError, "--limit must be between 1 and 10000" unless limit.between?(1, 10_000)
    end

    def limit
      options.fetch(:limit, 100)
    end

    def arguments(command, rest)
      wanted = command == "sweep" ? 0 : 1
      raise UsageError, "#{command} takes #{wanted.zero? ? "no arguments" : "one MR_ID"}" unless rest.size == wanted

      rest.map { |arg| merge_request_id(arg) }
    end

    def merge_request_id(arg)
      id = Integer(arg, 10)
      raise ArgumentError unless id.between?(1, Validate::MAX_ID)

      id
    rescue ArgumentError
      raise UsageError, "MR_ID must be a merge request id (a positive integer), got #{arg[0, 40].inspect}"
    end

    # --- configuration ---------------------------------------------------

    def setup
      options[:requires].each { |file| load_host_file(file) }
      ApprovalSync.configure { |config| apply(config) }
    end

    def load_host_file(file)
      require File.expand_path(file)
    rescue ScriptError, StandardError => e
      raise UsageError, "--require #{file}: #{e.class}: #{e.message}"
    end

    def apply(config)
      config_file.each { |key, value| config.public_send(:"#{key}=", value) }
      config.redis_url = options[:redis_url] if options[:redis_url]
      config.connect_timeout = config.read_timeout = options[:timeout] if options[:timeout]
      config.logger ||= event_logger if options[:verbose]
    end

    def config_file
      return {} unless options[:config]

      settings = YAML.safe_load(File.read(options[:config]))
      raise UsageError, "--config #{options[:config]}: must hold a mapping of settings" unless settings.is_a?(Hash)

      settings.transform_keys(&:to_s).each_key do |key|
        next if CONFIG_KEYS.include?(key.to_sym)

        raise UsageError, "--config #{options[:config]}: unknown key #{key.inspect}; known: #{CONFIG_KEYS.join(", ")}"
      end
    rescue SystemCallError, Psych::Exception => e
      raise UsageError, "--config #{options[:config]}: #{e.message}"
    end

    def event_logger
      Logger.new(@err).tap { |logger| logger.formatter = ->(_, _, _, line) { "#{line}\n" } }
    end

    # The native connection; a setting of the wrong type is a usage error.
    def tracker
      ApprovalSync.tracker
    rescue ArgumentError, TypeError => e
      raise UsageError, "configuration: #{e.message}"
    end

    # --- commands --------------------------------------------------------

    def run_status(id)
      snapshot = Snapshot.read(tracker, id)
      options[:json] ? emit_json(snapshot.to_h) : @out.puts(StatusView.new(snapshot).render)
      OK
    end

    def run_sweep
      worker_for_sweep unless options[:dry_run]
      tracker
      result = ApprovalSync.sweep!(limit: limit, dry_run: options[:dry_run] ? true : false)
      result = result.merge(dry_run: options[:dry_run] ? true : false)
      options[:json] ? emit_json(result) : @out.puts(sweep_text(result))
      result[:failed].empty? ? OK : FAILED
    end

    # Resolved before anything is drained, so a missing worker cannot strand resets.
    def worker_for_sweep
      ApprovalSync.config.worker
    rescue ConfigurationError => e
      raise ConfigurationError,
            "sweep needs the reset worker to enqueue with: #{e.message.lines.first.strip}. Load it with " \
            "--require FILE, or use --dry-run (in GitLab the sweep runs in a cron worker, not from this command)"
    end

    def sweep_text(result)
      ids = result[:due].empty? ? "none" : result[:due].join(", ")
      return "dry run: #{result[:due].size} merge request(s) due: #{ids}" if result[:dry_run]

      text = "swept #{result[:due].size} merge request(s) (#{ids}): #{result[:enqueued]} reset(s) enqueued, " \
             "#{result[:waiting]} still waiting for a live sync"
      return text if result[:failed].empty?

      "#{text}; skipped as damaged (--verbose shows why; clear them or repair their keys): " \
        "#{result[:failed].join(", ")}"
    end

    def run_clear(id)
      raise UsageError, clear_refusal(id) unless options[:yes]

      report = ClearReport.new(tracker, id)
      dropped = ApprovalRulesSyncCoordinator.new(id).clear!
      tracker.legacy_delete(id) if options[:legacy]
      result = report.result(dropped, legacy_deleted: options[:legacy] ? true : false)
      options[:json] ? emit_json(result) : @out.puts(report.text(result))
      OK
    end

    def clear_refusal(id)
      "clear drops the sync markers and kept resets of merge request #{id}, and a dropped reset never runs; " \
        "repeat with --yes to do it"
    end

    # --- output ----------------------------------------------------------

    def emit_json(value)
      @out.puts JSON.generate(value)
    end

    # One line on stderr (and a JSON object on stdout with --json); secrets
    # are cut out of the message first.
    def report(code, type, message)
      message = Secrets.redact(message.to_s, ApprovalSync.config, options[:redis_url]).gsub(/\s*\n\s*/, " ").strip
      @err.puts "approval-sync: #{type}: #{message}"
      emit_json(error: { type: type, message: message }, exit_code: code) if options[:json]
      code
    end
  end
end
