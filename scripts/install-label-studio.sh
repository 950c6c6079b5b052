#!/usr/bin/env bash
# Install Label Studio into its own virtual environment (it pins Django and friends,
# so it must not share the daemon's environment). Idempotent: a complete install is
# reused. Prints the venv path on stdout.
set -euo pipefail
LS_VERSION="${LS_VERSION:-1.23.2}"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
VENV="${ALDAEMON_LS_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/aldaemon/label-studio-$LS_VERSION}"
MARKER="$VENV/.aldaemon-installed"
if [ -f "$MARKER" ] && [ -x "$VENV/bin/label-studio" ]; then
  echo "$VENV"
  exit 0
fi
echo "installing label-studio==$LS_VERSION into $VENV (about 1 GB, a few minutes)" >&2
rm -rf "$VENV"
mkdir -p "$(dirname "$VENV")"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install --quiet --upgrade pip >&2
"$VENV/bin/pip" install --quiet "label-studio==$LS_VERSION" >&2
touch "$MARKER"
echo "$VENV"
