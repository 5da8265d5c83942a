#!/usr/bin/env bash
# Makes sure the services the test suite talks to are up: starts one that is installed but
# stopped, and fails with a clear message naming one that is missing.
# Usage: scripts/ensure-services.sh redis [postgresql]
set -euo pipefail

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() {  # name port
  for _ in $(seq 1 50); do listening "$2" && return 0; sleep 0.2; done
  echo "error: $1 was started but does not answer on 127.0.0.1:$2" >&2
  exit 1
}

ensure_redis() {
  listening 6379 && return 0
  if ! command -v redis-server >/dev/null; then
    echo "error: Redis is not installed and nothing answers on 127.0.0.1:6379." >&2
    echo "       Install it (apt-get install redis-server) or start one there." >&2
    exit 1
  fi
  echo "starting Redis on 127.0.0.1:6379"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_for Redis 6379
}

ensure_postgresql() {
  listening 5432 && return 0
  if ! command -v pg_ctlcluster >/dev/null || [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
    echo "error: PostgreSQL is not installed and nothing answers on 127.0.0.1:5432." >&2
    echo "       Install it (apt-get install postgresql) or start one there." >&2
    exit 1
  fi
  echo "starting PostgreSQL on 127.0.0.1:5432"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start
  wait_for PostgreSQL 5432
}

for service in "$@"; do
  case "$service" in
    redis) ensure_redis ;;
    postgresql) ensure_postgresql ;;
    *) echo "error: unknown service '$service'" >&2; exit 2 ;;
  esac
done
