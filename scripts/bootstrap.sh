#!/usr/bin/env bash
# Install Poetry into .tools/poetry (private, gitignored) and the locked environment into
# .venv. Idempotent: a second run only checks that the environment matches poetry.lock.
set -euo pipefail
cd "$(dirname "$0")/.."

find_python() {
    # .python-version makes pyenv's `python` resolve to 3.12; fall back to any 3.12+.
    for candidate in python3.12 python3 python; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
            command -v "$candidate"
            return
        fi
    done
    if command -v pyenv >/dev/null 2>&1 && pyenv which python3.12 >/dev/null 2>&1; then
        pyenv which python3.12
        return
    fi
    echo "error: Python 3.12 or newer is required (fastapi-opinionated-core needs it)." >&2
    exit 1
}

PYTHON=$(find_python)
if [ ! -x .tools/poetry/bin/poetry ]; then
    echo "==> installing Poetry into .tools/poetry"
    "$PYTHON" -m venv .tools/poetry
    .tools/poetry/bin/pip install --quiet "poetry>=2.0,<3"
fi
POETRY=.tools/poetry/bin/poetry
"$POETRY" env use --quiet "$PYTHON" >/dev/null
echo "==> installing the locked environment into .venv ${*:+(extra: $*)}"
"$POETRY" install --quiet --all-extras "$@"
