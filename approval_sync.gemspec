# frozen_string_literal: true

require_relative "lib/approval_sync/version"

Gem::Specification.new do |spec|
  spec.name = "approval_sync"
  spec.version = ApprovalSync::VERSION
  spec.authors = ["approval_sync contributors"]
  spec.license = "MIT"
  spec.summary = "Deterministic approval-rule sync tracking for GitLab EE, kept in Redis."
  spec.description = <<~DESC.tr("\n", " ").strip
    Tracks which merge-request approval-rule syncs are in flight and coordinates
    the approval resets that must wait for them, deterministically and atomically
    on Redis. The core is written in Rust and built when the gem is installed,
    which needs cargo and libclang.
  DESC
  spec.required_ruby_version = ">= 3.1"
  spec.metadata["rubygems_mfa_required"] = "true"

  # Globbed rather than listed by git so the gem also builds from a tarball.
  # Build output (cargo's target/, compiled libraries, an in-place extconf
  # run's Makefile) must never be packaged.
  patterns = %w[
    lib/**/* ext/**/* src/**/* sig/**/* exe/* docs/**/*
    Cargo.toml Cargo.lock README.md CHANGELOG.md LICENSE
  ]
  build_output = %r{(\A|/)target/|\.(so|bundle|dylib|o)\z|(\A|/)(Makefile|mkmf\.log)\z}
  spec.files = Dir.glob(patterns, base: __dir__).reject do |path|
    path.match?(build_output) || File.directory?(File.join(__dir__, path))
  end

  spec.bindir = "exe"
  spec.executables = Dir.glob("exe/*", base: __dir__).map { |path| File.basename(path) }
  spec.require_paths = ["lib"]
  spec.extensions = ["ext/approval_sync/extconf.rb"]
end
