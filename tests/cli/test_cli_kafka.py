"""The broker commands against a real Kafka-protocol broker (tansu): emit publishes, an
app process dead-letters failing handlers, then stats, dead-letters list/replay/purge;
and kafka_security secrets never reach the CLI's output."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

from cli_support import JOBS, assert_two_job_letters

Run = Callable[..., CompletedProcess[str]]

# The app's process: consumes the events (job 1 published by the CLI), dead-letters it,
# then emits job 2 (once the first letter is stored: one letter per write) and stops once
# both failures are in the dead-letter topic.
WORKER = """\
import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path.cwd()))
import app.domains.jobs.handlers  # noqa: E402,F401
from fastapi_opinionated_eventbus import EventBus  # noqa: E402
from fastapi_opinionated_eventbus._core import declarations  # noqa: E402

TITLE = sys.argv[1]


async def letters(bus: EventBus, count: int) -> None:
    for _ in range(600):
        if len(await bus.dead_letters()) == count:
            return
        await asyncio.sleep(0.05)
    raise SystemExit(f"no {count} dead letters")


async def main() -> None:
    bus = EventBus(app_name=TITLE)
    declarations.attach(bus)
    await bus.start()
    try:
        await letters(bus, 1)
        await bus.emit("job.run", {"n": 2})
        await letters(bus, 2)
    finally:
        await bus.aclose()


asyncio.run(main())
"""

FAST_GROUP = '{"session_timeout_ms": 6000, "heartbeat_interval_ms": 500}'


def jobs_app(make_app: Callable[..., Path]) -> tuple[Path, str]:
    root = make_app({"jobs/handlers.py": JOBS})
    title = f"Jobs {uuid.uuid4().hex[:8]}"  # topics of this test's own on the shared broker
    (root / "main.py").write_text(
        f"from fastapi_opinionated.app import App\napp = App.create(title={title!r})\n"
    )
    (root / "worker.py").write_text(WORKER)
    return root, title


def test_publish_inspect_replay_and_purge(
    cli: Run, python: Run, make_app: Callable[..., Path], kafka_servers: str
) -> None:
    root, title = jobs_app(make_app)
    env = {
        "EVENTBUS_BACKEND": "kafka",
        "EVENTBUS_KAFKA_BOOTSTRAP_SERVERS": kafka_servers,
        "EVENTBUS_KAFKA_CONSUMER_OPTIONS": FAST_GROUP,
        "COLUMNS": "200",
    }
    published = cli(root, "emit", "job.run", "--json", '{"n": 1}', **env)
    assert published.returncode == 0, published.stderr
    assert published.stdout.startswith("job.run: published to kafka as event ")
    event_id = published.stdout.split()[-1]
    assert not (root / "done.json").exists()  # the CLI only published

    worker = python(root, "worker.py", title, **env)
    assert worker.returncode == 0, worker.stderr

    assert_two_job_letters(cli(root, "dead-letters", "list", "--json", **env), event_id)

    stats = json.loads(cli(root, "stats", "--json", **env).stdout)
    # The topic and group come from main.py's title, as the app's own bus derives them.
    slug = title.lower().replace(" ", "-")
    assert (stats["topic"], stats["group"]) == (f"{slug}.events", slug)
    assert stats["reachable"] is True and stats["dead_letters"] == 2
    assert sum(o or 0 for o in stats["committed_offsets"].values()) == 2  # both handled

    doctor = cli(root, "doctor", "--json", **env)
    findings = json.loads(doctor.stdout)["findings"]
    [reached] = [f for f in findings if "backend kafka" in f["message"]]
    assert reached["level"] == "ok"
    assert reached["message"].startswith(
        f"backend kafka reachable: bootstrap_servers={kafka_servers}, topic={slug}.events, "
        f"dead_letter_topic={slug}.events.dlq, group={slug}, client_id={slug}"
    )

    (root / "fixed").touch()
    replay = cli(root, "dead-letters", "replay", **env)
    assert replay.returncode == 1  # job 2 failed again
    assert "Replayed 2 dead letter(s): 1 failed again" in replay.stdout
    assert json.loads((root / "done.json").read_text()) == {"n": 1}

    purge = cli(root, "dead-letters", "purge", "--yes", **env)
    assert purge.returncode == 0, purge.stderr
    assert purge.stdout == "Purged 1 dead letter(s)\n"
    assert json.loads(cli(root, "dead-letters", "list", "--json", **env).stdout) == []


def test_doctor_warns_of_topics_the_app_will_not_create(
    cli: Run, make_app: Callable[..., Path], kafka_servers: str
) -> None:
    root, title = jobs_app(make_app)  # a title of its own: its topics do not exist yet
    slug = title.lower().replace(" ", "-")
    env = {"EVENTBUS_BACKEND": "kafka", "EVENTBUS_KAFKA_BOOTSTRAP_SERVERS": kafka_servers}

    off = cli(root, "doctor", "--json", **env, EVENTBUS_KAFKA_CREATE_TOPICS="false")
    warnings = [f["message"] for f in json.loads(off.stdout)["findings"] if f["level"] == "warning"]
    assert [w for w in warnings if "kafka_create_topics" in w] == [
        f"topic '{slug}.events' does not exist and kafka_create_topics is off: create it "
        "before the app starts",
        f"topic '{slug}.events.dlq' does not exist and kafka_create_topics is off: create it "
        "before the app starts",
    ]
    assert off.returncode == 0  # a warning: the app may still be deployed after its topics

    # With the default, the app creates its topics when it starts: nothing to warn about.
    on = cli(root, "doctor", "--json", **env)
    findings = json.loads(on.stdout)["findings"]
    assert not [f for f in findings if f["level"] != "ok" and "topic" in f["message"]]
    assert on.returncode == 0


def test_kafka_security_secrets_never_reach_the_output(
    cli: Run, make_app: Callable[..., Path], kafka_servers: str
) -> None:
    secret = "s3cr3t-Pa55-w0rd"
    root, _ = jobs_app(make_app)
    security = {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "PLAIN",
        "sasl_plain_username": "alice",
        "sasl_plain_password": secret,
    }
    typo = {**security, "sasl_plain_pasword": secret}
    env = {
        "EVENTBUS_BACKEND": "kafka",
        "EVENTBUS_KAFKA_BOOTSTRAP_SERVERS": kafka_servers,
        "EVENTBUS_KAFKA_SECURITY": json.dumps(security),
        "EVENTBUS_CONNECT_TIMEOUT": "1",
    }
    # This broker refuses SASL: every command fails on the way in, where secrets leak.
    runs = [
        cli(root, "-v", "emit", "job.run", "--json", '{"n": 1}', **env),
        cli(root, "-v", "stats", **env),
        cli(root, "-v", "dead-letters", "list", **env),
        cli(root, "-v", "doctor", **env),
        cli(root, "emit", "job.run", **{**env, "EVENTBUS_KAFKA_PARTITIONS": "0"}),
        # A configuration error about kafka_security itself.
        cli(root, "emit", "job.run", **{**env, "EVENTBUS_KAFKA_SECURITY": json.dumps(typo)}),
    ]
    for result in runs:
        assert result.returncode in (1, 2), result.stdout + result.stderr
        assert secret not in result.stdout + result.stderr
    assert f"Cannot reach Kafka at {kafka_servers}" in runs[0].stderr
    assert "EVENTBUS_KAFKA_PARTITIONS" in runs[4].stderr
    assert "unknown key(s) 'sasl_plain_pasword'" in runs[5].stderr
