#!/usr/bin/env bash
# Runs a command from the project's .venv, creating the venv and installing l2rw first when
# needed (torch pinned by constraints.txt: unpinned, pip would fetch the newest multi-GB build).
# The suite tests the loggers and the Optuna sweeper, so this venv has those extras too; a user's
# `pip install -e .` has none of them.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
stamp=.venv/.l2rw-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
  echo "installing l2rw and its dependencies into .venv ..." >&2
  if ! .venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[test,tensorboard,mlflow,optuna,cleanlab]' >.venv/pip.log 2>&1; then
    cat .venv/pip.log >&2
    exit 1
  fi
  touch "$stamp"
fi
exec .venv/bin/"$@"
