# frozen_string_literal: true

# Loaded by each demo Sidekiq process:
#   sidekiq -r ./demo/sidekiq_boot.rb -c 5 -q default
# REDIS_URL, DEMO_TIME_SCALE and DEMO_PARENT_PID come from bin/race-demo.

require_relative "ee"

Sidekiq.configure_server do |config|
  config.redis = { url: RaceDemo::Settings.redis_url }
  # Sidekiq 6.4 moves due perform_in jobs to the queue only when it polls; a
  # set average also skips the 10 s warm-up before the first poll, so the
  # legacy delay fires on time.
  config.options[:poll_interval_average] = 0.05
  config.server_middleware { |chain| chain.add RaceDemo::JobTracker }
  config.client_middleware { |chain| chain.add RaceDemo::ThirdPush }
end

RaceDemo.configure_approval_sync(logger: Sidekiq.logger)
RaceDemo::DB.pool

# A driver that dies without stopping us (SIGKILL) must not leave us behind.
parent = Integer(ENV.fetch("DEMO_PARENT_PID", "0"))
if parent.positive?
  Thread.new do
    sleep 1 while Process.ppid == parent
    Process.kill("TERM", Process.pid)
  end
end
