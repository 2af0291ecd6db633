"""The core stays pure: no Kafka, Redis or asyncio, and no global random state."""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import rl_worker.core

CORE_DIR = Path(rl_worker.core.__file__).parent
FORBIDDEN_MODULES = ("faust", "aiokafka", "redis", "asyncio")
ALLOWED_NP_RANDOM = frozenset({"Generator", "PCG64", "BitGenerator", "SeedSequence"})


def core_modules() -> list[str]:
    return ["rl_worker.core"] + [m.name for m in pkgutil.walk_packages(rl_worker.core.__path__, "rl_worker.core.")]


def test_every_core_module_is_found() -> None:
    names = set(core_modules())
    assert {"rl_worker.core.replica", "rl_worker.core.snapshot", "rl_worker.core.qlearning"} <= names
    assert len(names) == len(list(CORE_DIR.glob("*.py")))


def test_importing_the_core_loads_no_service_library() -> None:
    code = (
        "import importlib, json, sys\n"
        f"for name in {core_modules()!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(json.dumps(sorted(m for m in {FORBIDDEN_MODULES!r} if m in sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def boundary_violations(source: str) -> list[str]:
    """Imports of service libraries or `random`, and uses of numpy's global random state."""
    found = []
    numpy_names = {"numpy"}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                if top in (*FORBIDDEN_MODULES, "random"):
                    found.append(f"import {alias.name}")
                elif alias.name == "numpy.random":
                    found.append("import numpy.random")
                elif alias.name == "numpy":
                    numpy_names.add(alias.asname or "numpy")
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            top = node.module.split(".")[0]
            if top in (*FORBIDDEN_MODULES, "random"):
                found.append(f"from {node.module} import ...")
            elif node.module == "numpy" and any(a.name == "random" for a in node.names):
                found.append("from numpy import random")
            elif node.module == "numpy.random":
                found.extend(
                    f"from numpy.random import {a.name}" for a in node.names if a.name not in ALLOWED_NP_RANDOM
                )
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Attribute)
            and node.value.attr == "random"
            and isinstance(node.value.value, ast.Name)
            and node.value.value.id in numpy_names
            and node.attr not in ALLOWED_NP_RANDOM
        ):
            found.append(f"{node.value.value.id}.random.{node.attr}")
    return found


@pytest.mark.parametrize("path", sorted(CORE_DIR.glob("*.py")), ids=lambda p: p.name)
def test_core_module_source_respects_the_boundary(path: Path) -> None:
    assert boundary_violations(path.read_text()) == []


@pytest.mark.parametrize(
    "source",
    [
        "import random",
        "from random import random",
        "import asyncio",
        "from aiokafka.producer import AIOKafkaProducer",
        "import redis.asyncio as redis",
        "import faust",
        "import numpy as np\nnp.random.seed(1)",
        "import numpy as np\nx = np.random.rand(3)",
        "import numpy\nnumpy.random.default_rng()",
        "from numpy import random",
        "from numpy.random import default_rng",
        "import numpy.random",
    ],
)
def test_the_boundary_check_catches_violations(source: str) -> None:
    assert boundary_violations(source) != []


def test_the_boundary_check_allows_explicit_generators() -> None:
    source = (
        "import numpy as np\n"
        "from numpy.random import Generator, PCG64\n"
        "rng = np.random.Generator(np.random.PCG64(1))\n"
        "x: np.random.Generator = rng\n"
    )
    assert boundary_violations(source) == []
