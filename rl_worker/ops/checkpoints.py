"""`rl-worker checkpoint …`: what the checkpoint store holds for an app id (list, show), the readable
export and its import, pins that retention respects, and restore / promote of the live model.

Restore and promote never write the live model's state themselves: they append a reset record to
the learning log (core.control), which every worker applies at its offset. The checkpoint a reset
names is pinned first, so that retention never deletes what a replay of the log will need.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from rl_worker.core.control import ResetRecord
from rl_worker.core.exceptions import SnapshotError
from rl_worker.core.export import export_document, import_document
from rl_worker.core.replica import ModelReplica
from rl_worker.core.snapshot import decode_replica, encode_replica, read_snapshot_info
from rl_worker.ops.exceptions import CommandError
from rl_worker.ops.learning_log import LearningLog, open_store
from rl_worker.settings import Settings, redis_namespace
from rl_worker.stream.checkpoints import CheckpointStore
from rl_worker.stream.exceptions import CheckpointStoreError

__all__ = [
    "describe_checkpoints",
    "export_checkpoint",
    "import_checkpoint",
    "load_checkpoint",
    "pin_checkpoint",
    "reset_live_model",
]


async def describe_checkpoints(settings: Settings, offset: int | None = None) -> Table:
    """One row per kept checkpoint (or only `offset`): what it holds and whether it restores here."""
    store = open_store(settings)
    try:
        latest = await store.latest_offset()
        pinned = await store.pinned()
        offsets = [offset] if offset is not None else await store.offsets()
        table = Table(title=f"checkpoints of {settings.redis_namespace} (latest pointer: {latest})")
        for column in ("offset", "bytes", "outcomes applied", "meta states", "sizing states",
                       "library", "config", "pinned", "restores here"):
            table.add_column(column)
        for current in offsets:
            data = await store.load(current)
            if data is None:
                table.add_row(str(current), "-", "", "", "", "", "", "", "missing")
                continue
            try:
                info = read_snapshot_info(data)
            except SnapshotError as exc:
                table.add_row(str(current), f"{len(data):,}", "", "", "", "", "", "", f"no: {exc}")
                continue
            try:
                decode_replica(data, settings.core)
                verdict = "yes"
            except SnapshotError as exc:
                verdict = f"no: {exc}"
            table.add_row(
                str(current), f"{len(data):,}", str(info.n_updates), str(info.meta_states),
                str(info.sizing_states), info.library_version, info.config_fingerprint,
                "pinned" if current in pinned else "", verdict,
            )
        return table
    finally:
        await store.close()


async def load_checkpoint(store: CheckpointStore, offset: int | None, what: str) -> tuple[int, bytes]:
    """(offset, bytes) of a checkpoint; `offset=None`: the latest pointer's. CommandError if missing."""
    try:
        if offset is None:
            offset = await store.latest_offset()
            if offset is None:
                raise CommandError(f"{what} has no checkpoint")
        data = await store.load(offset)
    except CheckpointStoreError as exc:
        raise CommandError(f"checkpoint store unreachable: {exc}", 1) from exc
    if data is None:
        try:
            kept = sorted(await store.offsets())
        except CheckpointStoreError:
            kept = []
        raise CommandError(f"{what} has no checkpoint at offset {offset} (kept: {kept or 'none'})")
    return offset, data


async def export_checkpoint(settings: Settings, offset: int | None, out: Path, console: Console) -> None:
    """Write a checkpoint of this app id as the readable JSON document (core.export)."""
    store = open_store(settings)
    try:
        offset, data = await load_checkpoint(store, offset, settings.redis_namespace)
    finally:
        await store.close()
    try:
        replica = decode_replica(data)
    except SnapshotError as exc:
        raise CommandError(f"checkpoint {settings.redis_namespace}@{offset} is unreadable: {exc}", 1) from exc
    text = export_document(replica)
    partial = out.with_name(f".{out.name}.partial")
    try:
        partial.write_text(text)
        os.replace(partial, out)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise CommandError(f"cannot write {out}: {exc}") from exc
    console.print(
        f"exported checkpoint {settings.redis_namespace}@{offset} to {out}: {replica.n_updates} outcomes, "
        f"{len(replica.meta_table)} meta and {len(replica.sizing_table)} sizing states, {len(text):,} bytes"
    )


async def import_checkpoint(settings: Settings, path: Path, target_app_id: str | None, console: Console) -> int:
    """Load an export into a namespace that holds no checkpoint yet, pinned; returns its offset.

    Only into an empty namespace: a checkpoint there is an offset of that namespace's learning
    log, and an imported model belongs to no log. Make it live with `promote --from-app-id`."""
    app_id = target_app_id or settings.app_id
    namespace = redis_namespace(app_id)
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc}") from exc
    try:
        replica = import_document(text, settings.core)
    except SnapshotError as exc:
        raise CommandError(f"{path} cannot be imported: {exc}") from exc
    store = open_store(settings, namespace)
    try:
        kept = await store.offsets()
        if kept:
            raise CommandError(
                f"{namespace} already holds checkpoints {sorted(kept)}: import into a new app id "
                "(--app-id NEW) and promote it from there"
            )
        data = encode_replica(replica)
        await store.save(replica.log_offset, data)
        await store.pin(replica.log_offset)
    except CheckpointStoreError as exc:
        raise CommandError(f"checkpoint store unreachable: {exc}", 1) from exc
    finally:
        await store.close()
    console.print(
        f"imported {path} into {namespace}@{replica.log_offset} (pinned): {replica.n_updates} outcomes, "
        f"{len(replica.meta_table)} meta and {len(replica.sizing_table)} sizing states; "
        f"make it live with: rl-worker checkpoint promote --from-app-id {app_id}"
    )
    return replica.log_offset


async def pin_checkpoint(settings: Settings, offset: int, pin: bool, console: Console) -> None:
    store = open_store(settings)
    try:
        done = await store.pin(offset) if pin else await store.unpin(offset)
    except CheckpointStoreError as exc:
        raise CommandError(f"checkpoint store unreachable: {exc}", 1) from exc
    finally:
        await store.close()
    if not done:
        raise CommandError(
            f"{settings.redis_namespace} has no checkpoint at offset {offset}" if pin
            else f"checkpoint {settings.redis_namespace}@{offset} is not pinned"
        )
    console.print(
        f"checkpoint {settings.redis_namespace}@{offset} " + (
            "pinned: retention keeps it" if pin else "unpinned: retention may delete it at the next write")
    )


def _summary(replica: ModelReplica) -> dict[str, object]:
    return {
        "outcomes applied": replica.n_updates,
        "meta states": len(replica.meta_table),
        "sizing states": len(replica.sizing_table),
        "mean meta reward": round(replica.meta_reward_total / replica.n_updates, 6) if replica.n_updates else None,
        "epsilon (meta / sizing)": f"{replica.meta_epsilon:.4g} / {replica.sizing_epsilon:.4g}",
    }


def _confirm(question: str, yes: bool) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        raise CommandError("not on a terminal: pass --yes to confirm; nothing written")
    if not click.confirm(question, default=False):
        raise CommandError("not confirmed: nothing written", 1)


async def reset_live_model(
    settings: Settings, source_app_id: str, offset: int | None, yes: bool, reason: str, console: Console
) -> int:
    """Append a reset record that makes `source_app_id`'s checkpoint (this app id's for a restore)
    the live model; returns the record's offset. Prints what changes and asks first (unless --yes)."""
    namespace = redis_namespace(source_app_id)
    source_store = open_store(settings, namespace)
    try:
        offset, data = await load_checkpoint(source_store, offset, namespace)
        try:
            candidate = decode_replica(data, settings.core)
        except SnapshotError as exc:
            raise CommandError(f"checkpoint {namespace}@{offset} cannot become this model: {exc}") from exc
        async with LearningLog(settings) as learning_log:
            await learning_log.catch_up()
            live = learning_log.runtime.replica
            table = Table(title=f"{reason}: live model {settings.app_id} <- {namespace}@{offset}")
            for column in ("", "live now", "after"):
                table.add_column(column)
            before, after = _summary(live), _summary(candidate)
            for key in before:
                table.add_row(key, str(before[key]), str(after[key]))
            for name, (was, will) in live.hyperparameters.changed(candidate.hyperparameters).items():
                table.add_row(name, f"{was:g}", f"{will:g}")
            console.print(table)
            if source_app_id == settings.app_id:
                aside = f"what the {learning_log.end - 1 - offset} records after offset {offset} taught is set aside"
            else:
                aside = "the live model's learned state is replaced"
            console.print(f"{aside}; the learning log keeps everything (a replay reproduces this reset)")
            _confirm(f"append the reset record to {learning_log.topic}?", yes)
            try:
                if not await source_store.pin(offset):
                    raise CommandError(f"checkpoint {namespace}@{offset} vanished before it was pinned", 1)
            except CheckpointStoreError as exc:
                raise CommandError(f"checkpoint store unreachable: {exc}", 1) from exc
            record = ResetRecord(
                app_id=source_app_id, checkpoint_offset=offset, sha256=hashlib.sha256(data).hexdigest(),
                issued_at_ms=time.time_ns() // 1_000_000, issued_by=f"rl-worker checkpoint {reason}", reason=reason,
            )
            at = await learning_log.append(record)
    finally:
        await source_store.close()
    console.print(
        f"reset record written to {learning_log.topic} at offset {at} ({namespace}@{offset} pinned); "
        "every worker loads it when it reaches that offset"
    )
    return at
