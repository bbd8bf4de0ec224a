"""The pytest plugin, as pytest loads it in other projects: real pytest runs in a subprocess.

Merely having the package installed must not change an unrelated project's test session
(the core reconfigures logging when it is imported), and the fixtures must work where they
are used, with app paths relative to the test file.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from support import USERS_APP, write_app

UNRELATED_TEST = """
    import logging
    import sys


    def test_logging_is_as_python_left_it():
        assert logging.getLogger().level == logging.WARNING
        assert logging.getLoggerClass() is logging.Logger
        assert not [m for m in sys.modules if m.startswith("fastapi_opinionated")]
"""

USING_TEST = """
    from pathlib import Path

    from fastapi.testclient import TestClient


    def test_relative_app_dir_is_the_test_files(eventbus_app_factory, eventbus_recorder):
        app = eventbus_app_factory("../shop")  # beside tests/, wherever pytest runs
        with TestClient(app) as client, eventbus_recorder() as events:
            response = client.post("/users/")
        assert response.json() == {"ok": True}
        assert events.names() == ["user.created"]
        [event] = events.named("user.created")
        assert event.args == ({"id": 1},)
        assert len(events) == 1 and list(events) == [event]


    def test_main_builds_the_app(eventbus_app_factory):
        app = eventbus_app_factory(Path(__file__).parent.parent / "shop", main="main:app")
        assert app.title == "Shop"
"""


def run_pytest(project: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(project)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_an_unrelated_project_keeps_its_logging(tmp_path: Path) -> None:
    project = tmp_path / "unrelated"
    project.mkdir()
    (project / "pytest.ini").write_text("[pytest]\n")
    (project / "test_unrelated.py").write_text(textwrap.dedent(UNRELATED_TEST))

    result = run_pytest(project, cwd=project)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


def test_the_fixtures_work_where_they_are_used(tmp_path: Path) -> None:
    project = tmp_path / "project"
    shop = write_app(project / "shop", USERS_APP)
    (shop / "main.py").write_text(
        "from fastapi_opinionated.app import App\n"
        "from fastapi_opinionated_eventbus import EventBusPlugin\n"
        "App.configurePlugin(EventBusPlugin())\n"
        "app = App.create(title='Shop')\n"
    )
    tests = project / "tests"
    tests.mkdir()
    (project / "pytest.ini").write_text("[pytest]\n")
    (tests / "test_shop.py").write_text(textwrap.dedent(USING_TEST))

    for cwd in (project, tmp_path):  # the project's root, and outside it
        result = run_pytest(project, cwd=cwd)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "2 passed" in result.stdout
