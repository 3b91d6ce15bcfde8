#!/bin/sh
# The Python a pipeline stage runs with: dvc.yaml's commands are
# `sh training/python.sh -m <module> [args...]`, never a bare `python`.
#
# DVC runs a stage's command in a plain shell with the caller's PATH and tells it nothing
# about its own interpreter, so a bare `python` is whatever PATH finds: from a shell where
# the environment is not activated (`.venv/bin/dvc repro`) that is a Python without the
# pipeline's packages. The first of these that has the pipeline installed (dvc importable)
# runs the stage instead:
#   1. `python` on PATH: an activated environment, the Airflow worker's (its tasks put
#      their environment first on PATH), a container's Python;
#   2. the project's own environment, .venv beside this folder (what `make install` builds).
case "$0" in */*) here=${0%/*} ;; *) here=. ;; esac
for candidate in python "$here/../.venv/bin/python"; do
  if "$candidate" -c 'import importlib.util, sys; sys.exit(not importlib.util.find_spec("dvc"))' \
    >/dev/null 2>&1; then
    exec "$candidate" "$@"
  fi
done
echo "training/python.sh: no Python with the pipeline installed, neither \`python\` on PATH" \
  "nor $here/../.venv/bin/python: run \`make install\`, or activate the environment" >&2
exit 127
