"""Shared by the CLI's Redis and Kafka tests: an app whose job handler fails, and the check
of the two dead letters it leaves."""

from __future__ import annotations

import json
from subprocess import CompletedProcess

JOBS = """\
import json
from pathlib import Path
from typing import Any

from fastapi_opinionated_eventbus import OnInternalEvent


@OnInternalEvent("job.run")
async def run_job(job: dict[str, Any]) -> None:
    # Job 2 always fails; job 1 succeeds once the file "fixed" exists.
    if job["n"] == 2 or not Path("fixed").exists():
        raise RuntimeError(f"job {job['n']} failed")
    Path("done.json").write_text(json.dumps(job))
"""


def assert_two_job_letters(listed: CompletedProcess[str], event_id: str) -> None:
    """``dead-letters list --json`` shows job 1 (published by the CLI as ``event_id``),
    then job 2, both failed in run_job."""
    letters = json.loads(listed.stdout)
    assert [(x["event_id"], x["args"], x["message"]) for x in letters] == [
        (event_id, [{"n": 1}], "job 1 failed"),
        (letters[1]["event_id"], [{"n": 2}], "job 2 failed"),
    ]
    assert {x["handler"] for x in letters} == {"app.domains.jobs.handlers:run_job"}
