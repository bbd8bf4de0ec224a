#!/usr/bin/env bash
# Set up the environment and run the whole test suite (extra arguments go to pytest).
# Redis tests use $EVENTBUS_TEST_REDIS_URL, or start redis-server if it is installed; they
# skip without one, except when $CI is set, where they fail.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
status=0
.venv/bin/python -m pytest "$@" || status=$?
if [ "$status" -eq 5 ]; then
    echo "error: pytest collected no tests: refusing to report success" >&2
    exit 1
fi
exit "$status"
