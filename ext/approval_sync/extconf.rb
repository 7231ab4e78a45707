# frozen_string_literal: true

# Builds the Rust extension with cargo. Only plain mkmf is used (not the
# rb_sys gem's helpers) so the gem installs from distribution packages alone.
# Each check aborts with one sentence naming what to install, because the
# alternative is a page of cargo or bindgen output.

require "rbconfig"

# mkmf aborts on load with a terse message when Ruby's headers are missing,
# so this check has to run before it is required.
unless File.exist?(File.join(RbConfig::CONFIG["rubyhdrdir"].to_s, "ruby.h")) &&
       File.exist?(File.join(RbConfig::CONFIG["rubyarchhdrdir"].to_s, "ruby", "config.h"))
  abort "approval_sync needs Ruby's C headers (ruby.h) to build: install ruby-dev " \
        "(or your distribution's Ruby development package), then retry."
end

require "mkmf"

# RubyGems logs stdout and stderr together; unbuffered, the "checking for"
# lines come before the abort message they explain.
$stdout.sync = true

# The gem ships Cargo.toml, Cargo.lock and src/ at its root, two levels up.
CRATE_ROOT = File.expand_path("../..", __dir__)
MANIFEST = File.join(CRATE_ROOT, "Cargo.toml")
MIN_RUST = File.read(MANIFEST)[/^rust-version\s*=\s*"([^"]+)"/, 1] || "1.80"

# Aborts with one sentence. mkmf would otherwise append its generic "Could
# not create Makefile ... probably lack of necessary libraries" epilogue,
# which buries the sentence; it is skipped when this flag is set.
def fail_with(sentence)
  $makefile_created = true # rubocop:disable Style/GlobalVars
  abort sentence
end

# Prints an mkmf-style "checking for X... result" line; returns the result.
def check(what)
  print "checking for #{what}... "
  result = yield
  puts result || "no"
  result
end

def present(value)
  value unless value.nil? || value.empty?
end

def home_dir
  Dir.home
rescue ArgumentError # neither HOME nor a passwd entry
  nil
end

def find_cargo
  check("cargo") do
    candidates = [find_executable0("cargo")]
    candidates << File.join(home_dir, ".cargo", "bin", "cargo") if home_dir
    candidates << present(ENV.fetch("CARGO", nil))
    candidates.compact.find { |path| File.file?(path) && File.executable?(path) }
  end
end

def cargo_version(cargo)
  IO.popen([cargo, "--version"], err: File::NULL, &:read)[/\d+\.\d+(\.\d+)?/]
rescue SystemCallError
  nil
end

# bindgen (used by rb-sys) loads libclang at build time. Returns the
# directory holding it, so the Makefile can point LIBCLANG_PATH there.
def find_libclang
  check("libclang") do
    dirs = [present(ENV.fetch("LIBCLANG_PATH", nil))]
    dirs += Dir.glob("/usr/lib/llvm-*/lib")
    dirs += ["/usr/lib/#{RbConfig::CONFIG["host_cpu"]}-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib",
             "/Library/Developer/CommandLineTools/usr/lib"]
    dirs.compact.find do |dir|
      Dir.glob(File.join(dir, "libclang{,-[0-9]*}.{so,dylib}{,.*}")).any?
    end
  end
end

cargo = find_cargo
unless cargo
  fail_with "approval_sync needs Rust's cargo (#{MIN_RUST} or newer) to build: install it with rustup " \
            "(https://rustup.rs) or your package manager, then retry."
end

version = cargo_version(cargo)
if version.nil? || Gem::Version.new(version) < Gem::Version.new(MIN_RUST)
  fail_with "approval_sync needs cargo #{MIN_RUST} or newer but found #{version || "an unknown version"} " \
            "at #{cargo}: install or update a Rust toolchain (e.g. `rustup update stable`), then retry."
end

libclang_dir = find_libclang
unless libclang_dir
  fail_with "approval_sync needs libclang to build its Ruby bindings: install libclang-dev " \
            "(or clang), or set LIBCLANG_PATH to the directory containing libclang.so, then retry."
end

soext = RbConfig::CONFIG["SOEXT"]
dlext = RbConfig::CONFIG["DLEXT"]
default_target_dir = File.join(Dir.pwd, "target")

# Written by hand rather than with create_makefile, which expects C sources.
# Values stay unescaped because they are also exported as environment
# variables; recipes quote them instead. RubyGems stages the install by
# overriding sitearchdir (in RbConfig while extconf runs, or on make's command
# line in newer versions), so RUBYARCHDIR must derive from it.
File.write("Makefile", <<~MAKEFILE)
  SHELL = /bin/sh
  CARGO = #{cargo}
  MANIFEST = #{MANIFEST}
  DLLIB = approval_sync.#{dlext}
  DEFAULT_TARGET_DIR = #{default_target_dir}
  sitearchdir = #{RbConfig::CONFIG["sitearchdir"]}
  RUBYARCHDIR = $(DESTDIR)$(sitearchdir)

  # The build stays out of the source tree, which may be read-only once
  # installed; an explicit CARGO_TARGET_DIR from the environment wins.
  CARGO_TARGET_DIR ?= $(DEFAULT_TARGET_DIR)
  export CARGO_TARGET_DIR
  # rb-sys's build script asks this Ruby for its configuration.
  export RUBY = #{RbConfig.ruby}
  export LIBCLANG_PATH = #{libclang_dir}

  all: build

  # Always delegate to cargo: it knows the real dependencies and is quick
  # when nothing changed. --locked builds exactly the shipped Cargo.lock.
  build:
  \t"$(CARGO)" build --release --locked --features ruby --manifest-path "$(MANIFEST)"
  \tcp "$(CARGO_TARGET_DIR)/release/libapproval_sync.#{soext}" $(DLLIB)

  $(DLLIB):
  \t$(MAKE) build

  # Also drops cargo's build directory (~400 MB): RubyGems 3.3 (Debian 12)
  # runs no `make clean` after installing, so it would stay in the gem.
  install: $(DLLIB)
  \tmkdir -p "$(RUBYARCHDIR)/approval_sync"
  \tcp $(DLLIB) "$(RUBYARCHDIR)/approval_sync/$(DLLIB)"
  \trm -rf "$(DEFAULT_TARGET_DIR)"

  # Removes only the build directory this Makefile chose, never a shared
  # CARGO_TARGET_DIR given in the environment.
  clean:
  \trm -rf $(DLLIB) "$(DEFAULT_TARGET_DIR)"

  distclean: clean
  \trm -f Makefile mkmf.log

  .PHONY: all build install clean distclean
MAKEFILE
