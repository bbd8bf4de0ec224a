#!/usr/bin/env bash
# Set up the environment and serve example_app on http://127.0.0.1:${PORT:-8000}.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
cd example_app
echo "==> serving example_app on http://127.0.0.1:${PORT:-8000} (Ctrl-C to stop)"
exec ../.venv/bin/python -m uvicorn main:app --host 127.0.0.1 --port "${PORT:-8000}" "$@"
