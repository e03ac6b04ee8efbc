#!/usr/bin/env bash
# Installs the SDK (as users would, from this directory) with pytest into a throwaway virtualenv
# and runs its tests against a real `baton` server: $BATON_BIN, else the workspace's
# target/debug/baton (built with `cargo build -p baton-cli` if missing).
# Environment: PYTHON (default python3, 3.9 or newer). Arguments are passed to pytest.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-python3}"
work="$(mktemp -d "${TMPDIR:-/tmp}/baton-sdk.XXXXXX")"
trap 'rm -rf "$work"' EXIT

"$python" -m venv "$work/env"
# Installed from a copy, so that the build leaves nothing behind in the source tree.
mkdir "$work/src"
cp -R "$here/pyproject.toml" "$here/README.md" "$here/baton" "$work/src/"
"$work/env/bin/python" -m pip install --quiet --disable-pip-version-check "$work/src" "pytest>=7"

cd "$here"
# The pytest script (unlike `python -m pytest`) does not put this directory on sys.path, so the
# tests import the installed package, not the source tree.
PYTHONDONTWRITEBYTECODE=1 "$work/env/bin/pytest" -p no:cacheprovider "$@"
