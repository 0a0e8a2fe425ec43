#!/usr/bin/env bash
# make bench: pitbox measured side by side with its peers, in one run, on this machine.
# Usage: bench/run.sh [BUILD_DIR]. Prints a Markdown report (also written to out/bench.md).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
build="$(cd "${1:-$here/../out}" && pwd)"
if [[ $(id -u) -ne 0 ]]; then
  echo "bench/run.sh: needs root" >&2
  exit 1
fi
exec python3 "$here/bench.py" --pitbox "$build/bin/pitbox" --report "$build/bench.md"
