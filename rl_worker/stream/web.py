"""The worker's HTTP pages: /health, /metrics (Prometheus) and /snapshot (the replica as checkpoint bytes)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import faust
from prometheus_client import generate_latest

from rl_worker.core.snapshot import encode_replica
from rl_worker.stream.runtime import WorkerRuntime

__all__ = ["add_pages"]


def add_pages(
    app: faust.App, runtime: WorkerRuntime, signals_topic: str, handover_health: Callable[[], dict[str, Any]]
) -> None:
    """Attach the pages to the app's web server."""

    @app.page("/health")
    async def health(web: Any, request: Any) -> Any:
        body = runtime.health()
        body |= handover_health()  # "stalled": partitions with waiting records and no progress
        if body["stalled"]:
            body["status"] = "stalled"
        body["assigned_partitions"] = sorted(
            tp.partition for tp in app.consumer.assignment() if tp.topic == signals_topic
        ) if app.consumer else []
        # /health?ready=1 is the readiness probe: 503 until the replica has caught up and decides
        if request.query.get("ready") and not body["ready"]:
            return web.json(body, status=503)
        return web.json(body)

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        return web.bytes(generate_latest(runtime.metrics.registry), content_type="text/plain; version=0.0.4")

    @app.page("/snapshot")
    async def snapshot(web: Any, request: Any) -> Any:
        """The replica as checkpoint bytes, as of now: for operators and the replay tests."""
        return web.bytes(encode_replica(runtime.replica), content_type="application/json")
