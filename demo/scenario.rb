# frozen_string_literal: true

require "json"
require "set"
require_relative "ee"

module RaceDemo
  # One seeded run's input: merge requests with their CODEOWNERS, approvals
  # and pushes, and when each push arrives. The same seed gives the same
  # scenario, so the flag-off and flag-on phases replay identical pushes.
  # Durations are production seconds times `scale` (demo seconds per
  # production second).
  class Scenario
    PATTERNS = %w[app/models/ app/services/ app/controllers/ app/views/ lib/ config/ db/ docs/ spec/ ee/ *.md
                  *.yml].freeze
    FILES = %w[
      app/models/user.rb app/models/project.rb app/models/merge_request.rb app/services/push_service.rb
      app/services/notify_service.rb app/controllers/projects_controller.rb app/views/projects/show.html.haml
      lib/parser.rb lib/tasks/cleanup.rake config/routes.rb config/settings.yml db/schema.rb
      db/migrate/20240101_add_index.rb docs/api.md docs/install.md spec/models/user_spec.rb
      spec/services/push_service_spec.rb ee/app/models/license.rb ee/lib/audit.rb README.md CHANGELOG.md
      .gitlab-ci.yml Gemfile
    ].freeze
    USERS = (1..30).to_a.freeze
    FIRST_MR = 101

    # Production timings (seconds) before scaling.
    RULE_SECONDS = (0.2..3.0)
    SLOW_SYNC_SHARE = 0.2
    SLOW_SYNC_FACTOR = 3
    PREP_SECONDS = (0.0..1.5)
    DIFF_SECONDS = (0.2..2.5)
    MR_SPACING = 4.0
    PUSH_GAP = (2.0..9.0)
    THIRD_PUSH_SHARE = 1 / 3r

    MergeRequestPlan = Struct.new(:id, :ref, :codeowners, :approvers, :pushes, keyword_init: true)
    Push = Struct.new(:mr_id, :number, :oldrev, :newrev, :files, :user_id, :at, :rule_ms, :prep_ms, :diff_ms,
                      keyword_init: true) do
      def changes(ref) = "#{oldrev} #{newrev} #{ref}"
      def key = "#{mr_id}:#{oldrev}:#{newrev}"
    end

    attr_reader :seed, :scale, :merge_requests

    def initialize(mrs:, seed:, scale:)
      @seed = seed
      @scale = scale
      @rng = Random.new(seed)
      @merge_requests = Array.new(mrs) { |index| build_merge_request(FIRST_MR + index, index) }
    end

    def pushes = merge_requests.flat_map(&:pushes)
    # Pushes the driver sends on its clock; the others follow a queued reset.
    def timed_pushes = pushes.select(&:at).sort_by(&:at)
    def third_pushes = pushes.count { |push| push.number == 3 }
    def duration = timed_pushes.last.at

    # Users whose approval the push's range voids, from the CODEOWNERS file:
    # the ground truth, computed without the system under test.
    def expected_removals(push)
      CodeOwners.owners_for(merge_request(push.mr_id).codeowners.to_h, push.files)
    end

    def merge_request(id) = merge_requests.fetch(id - FIRST_MR)

    # Writes the rows every process reads: branches, CODEOWNERS, a complete
    # rule set, approvals, commits and push plans.
    def load(redis)
      redis.pipelined do |pipe|
        merge_requests.each { |mr| load_merge_request(pipe, mr) }
        pipe.set(Keys::RULE_SEQ, 1000)
      end
    end

    private

    def load_merge_request(pipe, merge_request)
      id = merge_request.id
      pipe.hset(Keys::MR_BY_REF, merge_request.ref, id)
      pipe.set(Keys.codeowners(id), JSON.generate(merge_request.codeowners))
      merge_request.codeowners.each_with_index do |(pattern, owners), index|
        pipe.hset(Keys.rules(id), pattern, JSON.generate("id" => (id * 100) + index, "owners" => owners))
      end
      merge_request.approvers.each { |user| pipe.hset(Keys.approvals(id), user, "approved") }
      load_pushes(pipe, merge_request)
    end

    def load_pushes(pipe, merge_request)
      pushes = merge_request.pushes
      pipe.hset(Keys::COMMITS, pushes.first.oldrev, JSON.generate("parent" => nil, "files" => []))
      pushes.each_with_index do |push, index|
        pipe.hset(Keys::COMMITS, push.newrev, JSON.generate("parent" => push.oldrev, "files" => push.files))
        pipe.hset(Keys::PUSHES, push.newrev, JSON.generate(push_plan(push, pushes[index + 1], merge_request.ref)))
      end
    end

    # A follow-up push without a time of its own is sent by the ThirdPush
    # middleware when this push's reset is queued.
    def push_plan(push, follow, ref)
      plan = { "rule_ms" => push.rule_ms, "prep_ms" => push.prep_ms, "diff_ms" => push.diff_ms }
      plan["then"] = { "user_id" => follow.user_id, "changes" => follow.changes(ref) } if follow && follow.at.nil?
      plan
    end

    def build_merge_request(id, index)
      entries = PATTERNS.sample(@rng.rand(3..7), random: @rng).map do |pattern|
        [pattern, USERS.sample(@rng.rand(1..2), random: @rng).sort]
      end
      owners = entries.flat_map(&:last).uniq
      others = (USERS - owners).sample(@rng.rand(1..2), random: @rng)
      merge_request = MergeRequestPlan.new(id:, ref: "refs/heads/feature/mr-#{id}", codeowners: entries,
                                           approvers: (owners + others).sort, pushes: [])
      merge_request.pushes.replace(build_pushes(merge_request, index))
      merge_request
    end

    def build_pushes(merge_request, index)
      first_at = (index + @rng.rand) * MR_SPACING
      times = [first_at, first_at + @rng.rand(PUSH_GAP)]
      times << nil if @rng.rand < THIRD_PUSH_SHARE
      oldrev = sha
      times.each_with_index.map do |at, number|
        push = build_push(merge_request, number + 1, oldrev, at)
        oldrev = push.newrev
        push
      end
    end

    def build_push(merge_request, number, oldrev, at)
      slow = @rng.rand < SLOW_SYNC_SHARE ? SLOW_SYNC_FACTOR : 1
      Push.new(mr_id: merge_request.id, number:, oldrev:, newrev: sha, files: changed_files(merge_request),
               user_id: 1000 + merge_request.id, at: at && (at * scale), prep_ms: millis(@rng.rand(PREP_SECONDS)),
               diff_ms: millis(@rng.rand(DIFF_SECONDS)),
               rule_ms: merge_request.codeowners.map { millis(@rng.rand(RULE_SECONDS) * slow) })
    end

    # One or two files some entry owns, sometimes plus one nobody owns.
    def changed_files(merge_request)
      entries = merge_request.codeowners.to_h
      owned, unowned = FILES.partition { |file| CodeOwners.owners_for(entries, [file]).any? }
      files = owned.sample(@rng.rand(1..2), random: @rng)
      files << unowned.sample(random: @rng) if unowned.any? && @rng.rand < 0.3
      files
    end

    def millis(seconds) = (seconds * scale * 1000).round

    def sha = @rng.bytes(20).unpack1("H*")
  end
end
