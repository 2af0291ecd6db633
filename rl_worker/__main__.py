"""`rl-worker …` / `python -m rl_worker …`: the Faust app's own command line."""

from __future__ import annotations

import asyncio
import logging
import sys
import time

from rl_worker.settings import Settings

__all__ = ["main"]

log = logging.getLogger("rl_worker")


def _prepare_topics(settings: Settings, wait_s: float = 60.0) -> int:
    """Check that Kafka and Redis accept this worker as configured, then lay out the topics."""
    from rl_worker.stream.connections import probe_redis
    from rl_worker.stream.exceptions import ConnectionConfigError, InfrastructureError, TopicLayoutError
    from rl_worker.stream.topics import ensure_topics

    asyncio.run(probe_redis(settings))
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return asyncio.run(ensure_topics(settings, timeout_s=10.0))
        except (TopicLayoutError, ConnectionConfigError):
            raise
        except InfrastructureError as exc:
            if time.monotonic() > deadline:
                raise
            log.warning("broker not ready (%s); retrying", exc)
            time.sleep(1.0)


def load_settings() -> Settings:
    """Settings from the environment; an invalid one ends the process with the field and the
    reason, never the value (it may be a password)."""
    from pydantic import ValidationError

    try:
        return Settings()
    except ValidationError as exc:
        reasons = "; ".join(
            f"RL_{'__'.join(str(p) for p in e['loc']).upper() or '?'}: {e['msg']}"
            for e in exc.errors(include_input=False, include_url=False)
        )
        sys.exit(f"rl-worker: invalid settings: {reasons}")


def main() -> None:
    settings = load_settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("aiokafka", "faust", "mode"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    partitions = settings.partitions
    if len(sys.argv) > 1 and sys.argv[1] == "worker" and not {"-h", "--help"} & set(sys.argv):
        from rl_worker.stream.exceptions import ConnectionConfigError, TopicLayoutError

        try:
            partitions = _prepare_topics(settings)
        except (ConnectionConfigError, TopicLayoutError) as exc:
            log.error("%s", exc)
            sys.exit(f"rl-worker: {exc}")
    from rl_worker.ops.commands import register_commands
    from rl_worker.stream.app import create_app
    from rl_worker.stream.internals import apply_patches

    apply_patches(settings.fetch_max_wait_ms)
    app, _runtime = create_app(settings, partitions)
    register_commands(app, settings)
    app.main()


if __name__ == "__main__":
    main()
