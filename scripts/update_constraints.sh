#!/usr/bin/env bash
# Regenerates constraints.txt: the exact versions of every dependency (runtime and test), resolved in a
# fresh virtual environment from pyproject.toml. scripts/test.sh (so CI) and the Dockerfile install with
# `pip install -c constraints.txt`. Run it after changing a dependency in pyproject.toml; commit the result.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
venv=$(mktemp -d)
trap 'rm -rf "$venv"' EXIT
"$PYTHON" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet -e ".[test]"
{
  echo "# Pinned versions of every dependency, from a fresh venv ($("$venv/bin/python" --version)); CI and the"
  echo "# image install with -c constraints.txt. Regenerate with scripts/update_constraints.sh."
  "$venv/bin/python" -m pip freeze --exclude-editable --all | grep -vE '^(pip|setuptools|wheel)=='
} > constraints.txt
echo "constraints.txt: $(grep -vc '^#' constraints.txt) pins"
