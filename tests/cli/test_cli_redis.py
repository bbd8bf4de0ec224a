"""The Redis commands against a real redis-server: emit publishes, a worker process
dead-letters a failing handler, then stats, dead-letters list/replay/purge."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

from cli_support import JOBS, assert_two_job_letters

Run = Callable[..., CompletedProcess[str]]

# The app's process: consumes the events (job 1 published by the CLI), emits job 2, and
# stops once both failures are in the dead-letter stream.
WORKER = """\
import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path.cwd()))
import app.domains.jobs.handlers  # noqa: E402,F401
from fastapi_opinionated_eventbus import EventBus  # noqa: E402
from fastapi_opinionated_eventbus._core import declarations  # noqa: E402


async def main() -> None:
    bus = EventBus(app_name="Jobs Service")
    declarations.attach(bus)
    await bus.start()
    try:
        await bus.emit("job.run", {"n": 2})
        for _ in range(200):
            if len(await bus.dead_letters()) == 2:
                return
            await asyncio.sleep(0.05)
        raise SystemExit("no dead letters")
    finally:
        await bus.aclose()


asyncio.run(main())
"""


def test_publish_inspect_replay_and_purge(
    cli: Run, python: Run, make_app: Callable[..., Path], redis_url: str
) -> None:
    root = make_app({"jobs/handlers.py": JOBS})
    (root / "main.py").write_text(
        "from fastapi_opinionated.app import App\napp = App.create(title='Jobs Service')\n"
    )
    (root / "worker.py").write_text(WORKER)
    env = {"EVENTBUS_BACKEND": "redis", "EVENTBUS_REDIS_URL": redis_url, "COLUMNS": "200"}

    published = cli(root, "emit", "job.run", "--json", '{"n": 1}', **env)
    assert published.returncode == 0, published.stderr
    assert published.stdout.startswith("job.run: published to redis as event ")
    event_id = published.stdout.split()[-1]
    assert not (root / "done.json").exists()  # the CLI only published

    worker = python(root, "worker.py", **env)
    assert worker.returncode == 0, worker.stderr

    assert_two_job_letters(cli(root, "dead-letters", "list", "--json", **env), event_id)

    stats = json.loads(cli(root, "stats", "--json", **env).stdout)
    # The key prefix comes from main.py's title, as the app's own bus derives it.
    assert stats["stream"] == "{jobs-service}:events"
    assert (stats["stream_length"], stats["dead_letters"], stats["pending"]) == (2, 2, 0)

    (root / "fixed").touch()
    replay = cli(root, "dead-letters", "replay", **env)
    assert replay.returncode == 1  # job 2 failed again
    assert "Replayed 2 dead letter(s): 1 failed again" in replay.stdout
    assert "failed: app.domains.jobs.handlers:run_job: RuntimeError: job 2 failed" in replay.stdout
    assert json.loads((root / "done.json").read_text()) == {"n": 1}

    purge = cli(root, "dead-letters", "purge", "--yes", **env)
    assert purge.returncode == 0, purge.stderr
    assert purge.stdout == "Purged 1 dead letter(s)\n"
