#!/usr/bin/env bash
# Runs a command from the project's .venv, creating the venv and installing l2rw first when
# needed (torch pinned by constraints.txt: unpinned, pip would fetch the newest multi-GB build).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
stamp=.venv/.l2rw-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
  echo "installing l2rw and its dependencies into .venv ..." >&2
  if ! .venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[test]' >.venv/pip.log 2>&1; then
    cat .venv/pip.log >&2
    exit 1
  fi
  touch "$stamp"
fi
exec .venv/bin/"$@"
