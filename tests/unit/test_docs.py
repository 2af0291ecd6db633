"""docs/ names only what exists: files, `rl-worker` commands and their options, deploy.sh options,
RL_ settings, and the classes, functions and methods of the package."""

from __future__ import annotations

import importlib
import re
from functools import cache
from pathlib import Path

import pytest

import rl_worker
from rl_worker.ops.tools_doc import build_cli
from tests.unit.test_compose import settings_field

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted((ROOT / "docs").glob("*.md"))
# variables of scripts/deploy.sh and of the test suite, not Settings fields
NOT_SETTINGS = {"RL_TEST_BROKERS", "RL_TEST_DOCKER", "RL_TEST_KAFKA_BOOTSTRAP", "RL_TEST_REDIS_URL"}



def code_spans(text: str) -> list[str]:
    """Inline code and the lines of fenced blocks."""
    spans = re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S):
        spans.extend(block.splitlines())
    return spans


@cache
def package_names() -> dict[str, object]:
    """Every public top-level name of every rl_worker module."""
    names: dict[str, object] = {}
    package = Path(rl_worker.__file__).parent
    for path in sorted(package.rglob("*.py")):
        if path.name == "__main__.py":
            continue
        dotted = ".".join(("rl_worker", *path.relative_to(package).with_suffix("").parts)).removesuffix(".__init__")
        module = importlib.import_module(dotted)  # stream/ has no __init__.py: walk the files
        names[dotted] = module
        for name, value in vars(module).items():
            if not name.startswith("_"):
                names.setdefault(name, value)
    return names


@cache
def source_words() -> set[str]:
    words: set[str] = set()
    for path in [*(ROOT / "rl_worker").rglob("*.py"), *(ROOT / "topics").rglob("*.json")]:
        words |= set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", path.read_text()))
    return words


def missing_files(text: str) -> list[str]:
    # (deploy/ only with its folders: `kubectl exec deploy/rl-worker` names a Deployment, not a file)
    roots = r"rl_worker|scripts|deploy/(?:kubernetes|grafana)|docs|topics|tests|\.ci"
    pattern = rf"(?<![\w/.-])((?:{roots})(?:/[\w.-]*\w)*/?)"
    return [f"{path} does not exist" for path in sorted(set(re.findall(pattern, text))) if not (ROOT / path).exists()]


def unknown_commands(text: str) -> list[str]:
    cli = build_cli()
    problems = []
    for span in code_spans(text):
        for match in re.finditer(r"rl-worker ([a-zA-Z][a-zA-Z-]*)((?: +(?:--?[a-z][\w-]*|[^\s|&;>#`]+))*)", span):
            name, rest = match.group(1), match.group(2)
            if name.isupper():  # a placeholder: rl-worker COMMAND
                continue
            if name not in cli.commands:
                problems.append(f"`rl-worker {name}` is not a command ({span!r})")
                continue
            command = cli.commands[name]
            known = {opt for p in command.params for opt in [*p.opts, *getattr(p, "secondary_opts", [])]}
            for option in re.findall(r"(?<!\S)(--?[a-z][\w-]*)", rest):
                if option.split("=")[0] not in known | {"--help"}:
                    problems.append(f"`rl-worker {name} {option}` is not an option ({span!r})")
    return problems


def unknown_deploy_options(text: str) -> list[str]:
    script = (ROOT / "scripts" / "deploy.sh").read_text()
    options = set(re.findall(r"^\s+(--[a-z][\w-]*)\)", script, re.M))
    problems = []
    for span in code_spans(text):
        for match in re.finditer(r"scripts/deploy\.sh((?: +[^\s|&;#]+)*)", span):
            for option in re.findall(r"(?<!\S)(--[a-z][\w-]*)", match.group(1)):
                if option not in options | {"--help"}:
                    problems.append(f"deploy.sh has no {option} ({span!r})")
    return problems


def unknown_settings(text: str) -> list[str]:
    names = set(re.findall(r"\bRL_[A-Z0-9_]*[A-Z0-9]", text)) - NOT_SETTINGS
    return [f"{name} is not a Settings field" for name in sorted(names) if not settings_field(name)]


def unknown_code(text: str) -> list[str]:
    names = package_names()
    words = source_words()
    problems = []
    for span in code_spans(text):
        token = span.strip().removesuffix("()")
        if token.startswith("rl_worker.") and re.fullmatch(r"[\w.]+", token):
            module, _, attr = token.rpartition(".")
            if token not in names and not (module in names and hasattr(names[module], attr)):
                problems.append(f"{token} does not exist")
        elif re.fullmatch(r"[A-Z][a-z]\w*\.[a-z_]\w*", token):  # Class.method
            cls, attr = token.split(".")
            fields = getattr(names.get(cls), "model_fields", {})  # pydantic fields are not class attributes
            if cls not in names or not (hasattr(names[cls], attr) or attr in fields):
                problems.append(f"{token} does not exist")
        elif re.fullmatch(r"[A-Z][a-z]+(?:[A-Z][a-z0-9]*)+", token):  # CamelCase: a class or an error class
            if token not in names and token not in words:
                problems.append(f"{token} is not in the code")
        elif re.fullmatch(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)+", token):  # snake_case: a function, field or metric
            if token not in words:
                problems.append(f"{token} is not in the code")
    return problems


CHECKS = [missing_files, unknown_commands, unknown_deploy_options, unknown_settings, unknown_code]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_docs_name_only_what_exists(doc: Path) -> None:
    text = doc.read_text()
    problems = [f"{check.__name__}: {p}" for check in CHECKS for p in check(text)]
    assert not problems, f"{doc.name}:\n" + "\n".join(problems)


def test_the_checks_catch_stale_names() -> None:
    stale = """
Run `rl-worker frobnicate`, then `rl-worker status --verbose` and `scripts/deploy.sh --yolo`.
Set `RL_NOT_A_SETTING`; see `rl_worker/nowhere.py`, `ModelReplica.no_such_method`,
`rl_worker.core.replica.gone`, `NoSuchClassAnywhere` and `no_such_function`.
"""
    assert len(missing_files(stale)) == 1
    assert len(unknown_commands(stale)) == 2
    assert len(unknown_deploy_options(stale)) == 1
    assert unknown_settings(stale) == ["RL_NOT_A_SETTING is not a Settings field"]
    assert len(unknown_code(stale)) == 4
    fine = "`rl-worker status --url U --json`, `scripts/deploy.sh --dry-run`, `RL_TOPICS__SIGNALS`, `QTable.td_update`"
    assert not [p for check in CHECKS for p in check(fine)]
