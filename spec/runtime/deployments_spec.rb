# frozen_string_literal: true

require_relative "runtime_helper"

# How self-managed installs reach their shared-state Redis: URLs of every
# scheme, passwords and ACL users, TLS with a private CA and client
# certificates. Secrets never show in errors, logs or inspect.
RSpec.describe "Deployments: URLs, passwords, ACL users and TLS" do
  # Runs a short lifecycle and checks its replies: proof the connection works.
  def works!
    expect(lifecycle_mismatches(77, 1)).to eq(0)
    expect(ApprovalSyncTest::Runtime::RecordingWorker.calls.size).to eq(1)
  end

  describe "a unix socket" do
    before(:all) do
      dir = ApprovalSyncTest::RedisServers::Processes.make_dir("redis-unix-")
      @socket = File.join(dir, "redis.sock")
      @server = ApprovalSyncTest::RedisServers::Server.new(
        extra_config: [["unixsocket", @socket], ["unixsocketperm", 700]]
      ).start
    end
    after(:all) { @server.stop }

    it "is reached through a unix:// URL" do
      use_redis(redis_url: "unix://#{@socket}")
      works!
      expect(gem_connections(@server).join).to include("addr=/").or include("flags=U")
    end
  end

  describe "a password-protected server with an ACL user" do
    before(:all) do
      @server = ApprovalSyncTest::RedisServers.standalone(password: "admin pass/1")
      # Only this gem's keys, and no dangerous commands.
      @server.call("ACL", "SETUSER", "syncer", "on", ">user-secret-9", "~mr_*_cannot_merge", "~approval_sync:*",
                   "+@all", "-@dangerous", "+client|setname")
    end
    after(:all) { @server.stop }

    it "connects with the password in the URL" do
      use_redis(redis_url: @server.url)
      works!
    end

    it "connects with password set apart from the URL" do
      use_redis(redis_url: "redis://#{@server.address}", password: "admin pass/1")
      works!
    end

    it "connects as an ACL user limited to the gem's keys" do
      use_redis(redis_url: "redis://#{@server.address}", username: "syncer", password: "user-secret-9")
      works!
      expect(ApprovalSync.sweep!).to include(due: [])
    end

    it "fails with a typed error that shows no password when the password is wrong" do
      log = StringIO.new
      use_redis(redis_url: "redis://syncer:url-secret-1@#{@server.address}", password: "conf-secret-2",
                logger: Logger.new(log))
      error = gem_error { ApprovalSync::ApprovalState.new(1).any_approval_rules_syncing? }
      expect(error).to be_a(ApprovalSync::ConnectionError)
      shown = [error.message, error.inspect, ApprovalSync.config.inspect, ApprovalSync.tracker.inspect, log.string]
      expect(shown.join("\n")).not_to match(/url-secret-1|conf-secret-2|user-secret-9/)
    end
  end

  describe "secrets in inspect and errors" do
    it "hides passwords of every setting from inspect and connection errors" do
      port = ApprovalSyncTest::RedisServers::Processes.free_port
      use_redis(redis_url: "redis://u:url-secret-1@127.0.0.1:#{port}/0", password: "conf-secret-2",
                sentinel_password: "sentinel-secret-3", connect_timeout: 0.3)
      error = gem_error { ApprovalSync::ApprovalState.new(1).temporarily_unapproved? }
      expect(error).to be_a(ApprovalSync::ConnectionError)
      shown = [error.message, ApprovalSync.config.inspect, ApprovalSync.config.to_s, ApprovalSync.tracker.inspect]
      expect(shown.join("\n")).not_to match(/url-secret-1|conf-secret-2|sentinel-secret-3/)
      expect(ApprovalSync.tracker.inspect).to include("127.0.0.1:#{port}")

      use_redis(sentinels: ["127.0.0.1:#{port}"], master_name: "m", password: "conf-secret-2",
                sentinel_password: "sentinel-secret-3", connect_timeout: 0.3)
      error = gem_error { ApprovalSync::ApprovalState.new(1).temporarily_unapproved? }
      expect(error).to be_a(ApprovalSync::ConnectionError)
      shown = [error.message, ApprovalSync.config.inspect, ApprovalSync.tracker.inspect]
      expect(shown.join("\n")).not_to match(/conf-secret-2|sentinel-secret-3/)
    end

    it "uses 1 s connect and read timeouts unless configured" do
      use_redis(redis_url: "redis://127.0.0.1:1")
      expect(ApprovalSync.config).to have_attributes(connect_timeout: 1.0, read_timeout: 1.0)
      expect(ApprovalSync.tracker.inspect).to include("connect_timeout: 1s", "read_timeout: 1s")
      use_redis(redis_url: "redis://127.0.0.1:1", connect_timeout: 0.25, read_timeout: 2.5)
      expect(ApprovalSync.tracker.inspect).to include("connect_timeout: 250ms", "read_timeout: 2.5s")
    end
  end

  describe "TLS" do
    # Demands a client certificate (mutual TLS).
    mtls = Class.new(ApprovalSyncTest::RedisServers::TlsServer) do
      private

      def config
        super + [%w[tls-auth-clients yes]]
      end

      # The launcher's own PING must present the certificate too.
      def connect_options
        super.merge(ssl_params: mtls_ssl_params)
      end
    end

    before(:all) do
      @tls = ApprovalSyncTest::RedisServers.tls(password: "tls-secret-4")
      @mtls = mtls.new.start
    end
    after(:all) { [@tls, @mtls].compact.each(&:stop) }

    it "verifies the server against the configured CA (rediss://)" do
      use_redis(redis_url: @tls.url, ca_file: @tls.ca_file)
      works!
    end

    it "refuses a server whose certificate the system roots do not trust" do
      use_redis(redis_url: @tls.url, connect_timeout: 0.5)
      took, error = timed_error { ApprovalSync::ApprovalState.new(1).any_approval_rules_syncing? }
      expect(error).to be_a(ApprovalSync::ConnectionError)
      expect(took).to be < 1.0
      expect(error.message).not_to include("tls-secret-4")
    end

    it "turns TLS on for a redis:// URL when a CA file is given" do
      use_redis(redis_url: @tls.url.sub("rediss://", "redis://"), ca_file: @tls.ca_file)
      works!
    end

    it "presents a client certificate to a server that demands one (mutual TLS)" do
      use_redis(redis_url: @mtls.url, ca_file: @mtls.ca_file, cert_file: @mtls.cert_file, key_file: @mtls.key_file)
      works!
    end

    it "is refused by a mutual-TLS server without a client certificate" do
      use_redis(redis_url: @mtls.url, ca_file: @mtls.ca_file, connect_timeout: 0.5)
      expect { ApprovalSync::ApprovalState.new(1).any_approval_rules_syncing? }
        .to raise_error(ApprovalSync::ConnectionError)
    end

    it "rejects a client certificate without its key before connecting" do
      use_redis(redis_url: @mtls.url, ca_file: @mtls.ca_file, cert_file: @mtls.cert_file)
      expect { ApprovalSync.tracker }.to raise_error(ApprovalSync::ConfigurationError, /together/)
    end
  end
end
