"""What the checkpoint store holds for one app id, as a table for operators."""

from __future__ import annotations

from rich.table import Table

from rl_worker.core.exceptions import SnapshotError
from rl_worker.core.snapshot import decode_replica, read_snapshot_info
from rl_worker.settings import Settings
from rl_worker.stream.checkpoints import RedisCheckpointStore

__all__ = ["describe_checkpoints"]


async def describe_checkpoints(settings: Settings, offset: int | None = None) -> Table:
    """One row per kept checkpoint (or only `offset`): what it holds and whether it restores here."""
    store = RedisCheckpointStore(settings.redis_url.get_secret_value(), settings.redis_namespace)
    try:
        latest = await store.latest_offset()
        offsets = [offset] if offset is not None else await store.offsets()
        table = Table(title=f"checkpoints of {settings.redis_namespace} (latest pointer: {latest})")
        for column in ("offset", "bytes", "outcomes applied", "meta states", "sizing states",
                       "library", "config", "restores here"):
            table.add_column(column)
        for current in offsets:
            data = await store.load(current)
            if data is None:
                table.add_row(str(current), "-", "", "", "", "", "", "missing")
                continue
            try:
                info = read_snapshot_info(data)
            except SnapshotError as exc:
                table.add_row(str(current), f"{len(data):,}", "", "", "", "", "", f"no: {exc}")
                continue
            try:
                decode_replica(data, settings.core)
                verdict = "yes"
            except SnapshotError as exc:
                verdict = f"no: {exc}"
            table.add_row(
                str(current), f"{len(data):,}", str(info.n_updates), str(info.meta_states),
                str(info.sizing_states), info.library_version, info.config_fingerprint, verdict,
            )
        return table
    finally:
        await store.close()
