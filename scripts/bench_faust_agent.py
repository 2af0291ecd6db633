"""A bare Faust agent: the floor Faust sets for the worker's design (scripts/bench_worker.py's (b0)).

    BENCH_BOOTSTRAP=127.0.0.1:9092 BENCH_IN=topic BENCH_OUT=topic BENCH_APP_ID=id BENCH_WEB_PORT=6099 \\
        .venv/bin/python scripts/bench_faust_agent.py

One agent consumes the input topic (raw bytes) and sends one record per event to the output topic
with the event's key, Faust's own way (`Topic.send`): no parsing, no table, no model. The app has
the worker's Faust settings (memory store, session timeout and heartbeat, producer linger and batch
size, stream buffer, commit interval), so the difference between this and the worker is our code.
"""

from __future__ import annotations

import os

import faust


def make_app() -> faust.App:
    env = os.environ
    app = faust.App(
        env["BENCH_APP_ID"],
        broker=f"kafka://{env['BENCH_BOOTSTRAP']}",
        store="memory://",
        autodiscover=False,
        topic_partitions=int(env.get("BENCH_PARTITIONS", "4")),
        topic_replication_factor=1,
        web_enabled=True,
        web_host="127.0.0.1",
        web_bind="127.0.0.1",
        web_port=int(env["BENCH_WEB_PORT"]),
        broker_session_timeout=6,  # the worker's default (RL_SESSION_TIMEOUT_S)
        broker_heartbeat_interval=1,
        consumer_auto_offset_reset="earliest",
        producer_linger=0.002,
        stream_buffer_maxsize=16384,
        producer_max_batch_size=65536,
        broker_commit_interval=1.0,
    )
    raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
    source = app.topic(env["BENCH_IN"], **raw)
    sink = app.topic(env["BENCH_OUT"], **raw)

    @app.agent(source, name="bare")
    async def bare(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            await sink.send(key=event.key, value=event.value)

    return app


if __name__ == "__main__":
    make_app().main()
