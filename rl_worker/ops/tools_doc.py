"""docs/TOOLS.md, generated from the CLI's own click definitions: `python -m rl_worker.ops.tools_doc`.

Every `rl-worker` command registered by rl_worker is documented in full (its help text, usage,
arguments, options with types and defaults, exit status); Faust's own commands are listed.
tests/unit/test_tools_doc.py fails when the file and the CLI drift apart.
"""

from __future__ import annotations

import argparse
import inspect
import re
import sys
from pathlib import Path

import click

__all__ = ["build_cli", "render_tools_doc"]

DOC_PATH = Path(__file__).resolve().parents[2] / "docs" / "TOOLS.md"
GENERIC_EXIT = (
    "0 when it completes; 2 on a usage error (unknown option, bad value); 1 when it fails (the error is printed)."
)
# commands that run through ops.commands.run_command (seen in their source) share its exit codes
RUN_COMMAND_EXIT = (
    "0 when it completes; 2 when the input is wrong (a usage error, a bad argument, file or offset: nothing "
    "is written); 1 when Kafka or Redis fails, a read stalls or a confirmation is refused. An error is printed "
    "as one line."
)
# Faust's commands we document in full, because operators run them, with what their help text lacks
FAUST_DOCUMENTED = {
    "worker": {
        "summary": "Run a worker of the consumer group `RL_APP_ID` (the decision and learning process).",
        "about": "Runs a worker of the consumer group `RL_APP_ID` until it is stopped: checks that Kafka and Redis "
        "accept its credentials and TLS (a refusal stops it at once, naming the cause), creates the missing topics "
        "(waiting up to 60 s for the broker), restores the newest usable checkpoint, replays the learning log, then "
        "decides. Health and metrics on `RL_WEB_HOST:RL_WEB_PORT` (the options below override them).",
        "exit": "0 after SIGTERM or SIGINT (it leaves the group and writes a final checkpoint first); 1 when the "
        "settings do not validate, when Kafka or Redis refuses the configured credentials or TLS, when the broker "
        "does not answer within 60 s at start, when the input topics are not co-partitioned, or when a send fails "
        "after the producer's retries.",
    },
}


def build_cli() -> click.Group:
    """The `rl-worker` click group exactly as `rl-worker` builds it (default settings; nothing connects)."""
    from faust.cli.faust import cli

    from rl_worker.ops.commands import register_commands
    from rl_worker.settings import Settings
    from rl_worker.stream.app import create_app

    settings = Settings()
    app, _ = create_app(settings, settings.partitions)
    register_commands(app, settings)
    return cli


def is_ours(command: click.Command) -> bool:
    handler = getattr(command.callback, "__wrapped__", None)
    return bool(handler is not None and str(getattr(handler, "__module__", "")).startswith("rl_worker"))


def _uses_run_command(command: click.Command) -> bool:
    handler = getattr(command.callback, "__wrapped__", None)
    run = getattr(handler, "run", None)
    try:
        source = inspect.getsource(run) if run is not None else ""
    except (OSError, TypeError):
        return False
    return "run_command(" in source


def _type_name(param: click.Parameter) -> str:
    if isinstance(param.type, click.Choice):
        return " \\| ".join(f"`{c}`" for c in param.type.choices)
    if getattr(param, "is_flag", False):
        return "flag"
    return str(param.type.name).lower()


def _default(param: click.Parameter) -> str:
    default = param.default
    if getattr(param, "is_flag", False) or default in (None, (), "") or repr(default) == "Sentinel.UNSET":
        return ""
    if callable(default):
        return "(computed)"
    return f"`{default}`"


def _cell(text: str | None) -> str:
    return (text or "").replace("|", "\\|").replace("\n", " ").strip()


def _paragraphs(help_text: str) -> tuple[str, str | None]:
    """The help text without its `Exit status:` paragraph, and that paragraph."""
    parts = [p.strip() for p in re.split(r"\n\s*\n", help_text.strip()) if p.strip()]
    body = [p for p in parts if not p.startswith("Exit status:")]
    exits = [p for p in parts if p.startswith("Exit status:")]
    clean = "\n\n".join(" ".join(line.strip() for line in p.splitlines()) for p in body)
    return clean, (" ".join(exits[0].split())[len("Exit status:"):].strip() if exits else None)


def render_command(name: str, command: click.Command) -> list[str]:
    ctx = click.Context(command, info_name=f"rl-worker {name}")
    usage = " ".join(command.collect_usage_pieces(ctx))
    body, exit_status = _paragraphs(command.help or "")
    extra = FAUST_DOCUMENTED.get(name, {})
    body = extra.get("about", body)
    exit_status = extra.get("exit", exit_status)
    if exit_status is None and _uses_run_command(command):
        exit_status = RUN_COMMAND_EXIT
    lines = [f"## `rl-worker {name}`", "", body, "", f"Usage: `rl-worker {name} {usage}`", ""]
    arguments = [p for p in command.params if isinstance(p, click.Argument)]
    options = [p for p in command.params if isinstance(p, click.Option) and p.name != "help"]
    if arguments:
        lines += ["| argument | values | required |", "|---|---|---|"]
        for a in arguments:
            lines.append(f"| `{(a.name or '').upper()}` | {_type_name(a)} | {'yes' if a.required else 'no'} |")
        lines.append("")
    if options:
        lines += ["| option | type | default | meaning |", "|---|---|---|---|"]
        for o in options:
            flags = ", ".join(f"`{f}`" for f in [*o.opts, *o.secondary_opts])
            notes = (" (repeatable)" if o.multiple else "") + (" (required)" if o.required else "")
            lines.append(f"| {flags} | {_type_name(o)}{notes} | {_default(o)} | {_cell(o.help)} |")
        lines.append("")
    lines += [f"Exit status: {exit_status or GENERIC_EXIT}", ""]
    return lines


def render_tools_doc(cli: click.Group | None = None) -> str:
    cli = cli or build_cli()
    commands = dict(sorted(cli.commands.items()))
    ours = {n: c for n, c in commands.items() if is_ours(c)}
    documented = {n: commands[n] for n in FAUST_DOCUMENTED} | ours
    others = [n for n in commands if n not in documented]
    lines = [
        "# `rl-worker` commands",
        "",
        "<!-- Generated by `python -m rl_worker.ops.tools_doc` from the CLI's own click definitions;",
        "     tests/unit/test_tools_doc.py fails when this file and the CLI drift apart. Do not edit by hand. -->",
        "",
        "`rl-worker COMMAND [OPTIONS]`, or `python -m rl_worker COMMAND [OPTIONS]`: the Faust app's own command line.",
        "Every command reads its settings from the environment (`RL_*`, see the README's *Configuration*);",
        "`rl-worker COMMAND --help` prints what is below for one command.",
        "",
        "| command | what it does |",
        "|---|---|",
    ]
    for name, command in documented.items():
        summary = FAUST_DOCUMENTED.get(name, {}).get("summary") or _paragraphs(command.help or "")[0].split("\n\n")[0]
        lines.append(f"| [`{name}`](#rl-worker-{name}) | {_cell(summary)} |")
    lines += [
        "",
        "Faust's other commands are there too (`rl-worker COMMAND --help`): "
        + ", ".join(f"`{n}`" for n in others) + ".",
        "",
    ]
    for name, command in documented.items():
        lines += render_command(name, command)
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 when docs/TOOLS.md is not up to date")
    parser.add_argument("--out", type=Path, default=DOC_PATH)
    args = parser.parse_args(argv)
    text = render_tools_doc()
    if args.check:
        current = args.out.read_text() if args.out.exists() else ""
        if current != text:
            print(f"{args.out} is out of date: run python -m rl_worker.ops.tools_doc", file=sys.stderr)
            return 1
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
