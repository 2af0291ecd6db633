"""The worker's HTTP pages: /health, /metrics (Prometheus) and /snapshot (the replica as checkpoint bytes).

/snapshot hands out the whole model: it answers only when RL_WEB_SNAPSHOT_TOKEN is set, and then
only to `Authorization: Bearer <token>` (404 when off, 401 without the right token).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any

import faust
from prometheus_client import generate_latest
from pydantic import SecretStr

from rl_worker.core.snapshot import encode_replica
from rl_worker.stream.runtime import WorkerRuntime

__all__ = ["add_pages"]


def snapshot_allowed(token: SecretStr | None, authorization: str | None) -> bool:
    """Is `authorization` (the request's header) `Bearer <token>`? Never when no token is set."""
    if token is None or not token.get_secret_value():
        return False
    expected = f"Bearer {token.get_secret_value()}".encode()
    return hmac.compare_digest(expected, (authorization or "").encode())


def add_pages(
    app: faust.App,
    runtime: WorkerRuntime,
    signals_topic: str,
    handover_health: Callable[[], dict[str, Any]],
    snapshot_token: SecretStr | None = None,
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
        if snapshot_token is None or not snapshot_token.get_secret_value():
            return web.json({"error": "/snapshot is off: set RL_WEB_SNAPSHOT_TOKEN to enable it"}, status=404)
        if not snapshot_allowed(snapshot_token, request.headers.get("Authorization")):
            return web.json({"error": "/snapshot needs Authorization: Bearer <RL_WEB_SNAPSHOT_TOKEN>"}, status=401)
        return web.bytes(encode_replica(runtime.replica), content_type="application/json")
