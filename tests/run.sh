#!/usr/bin/env bash
# Integration tests: the real pitbox binary, real boxes, as root. Usage: tests/run.sh [BUILD_DIR]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
build="$(cd "${1:-$here/../out}" && pwd)"
if [[ $(id -u) -ne 0 ]]; then
  echo "tests/run.sh: the integration tests need root (namespaces, cgroups, mounts)" >&2
  exit 1
fi
export PITBOX_BIN="$build/bin/pitbox"
cd "$here"
python3 -m unittest discover -s "$here" -p 'test_*.py' -v
# The Python SDK against a real daemon.
python3 -m unittest discover -s "$here/../sdk/python/tests" -v
