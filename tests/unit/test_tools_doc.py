"""docs/TOOLS.md is what `python -m rl_worker.ops.tools_doc` generates from the CLI right now."""

from __future__ import annotations

import copy

import click

from rl_worker.ops.tools_doc import DOC_PATH, build_cli, is_ours, render_tools_doc


def test_tools_md_is_in_step_with_the_cli() -> None:
    assert DOC_PATH.read_text() == render_tools_doc(), (
        "docs/TOOLS.md is out of date: run `python -m rl_worker.ops.tools_doc` and commit it"
    )


def test_every_command_and_option_is_documented() -> None:
    cli = build_cli()
    text = DOC_PATH.read_text()
    ours = [name for name, command in cli.commands.items() if is_ours(command)]
    assert {"preflight", "status", "simulate", "demo", "monitor", "checkpoint"} <= set(ours)
    for name in [*ours, "worker"]:
        section = text.split(f"## `rl-worker {name}`\n", 1)[1].split("\n## ", 1)[0]
        assert "Exit status:" in section, name
        for param in cli.commands[name].params:
            if isinstance(param, click.Option) and param.name != "help":
                assert f"`{param.opts[0]}`" in section, f"{name} {param.opts[0]}"


def test_a_new_option_changes_the_document() -> None:
    cli = build_cli()
    changed = copy.copy(cli)
    changed.commands = dict(cli.commands)
    status = copy.copy(cli.commands["status"])
    status.params = [*status.params, click.Option(["--verbose"], is_flag=True, help="more")]
    changed.commands["status"] = status
    assert "`--verbose`" in render_tools_doc(changed)
    assert render_tools_doc(changed) != render_tools_doc(cli)
