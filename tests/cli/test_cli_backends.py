"""Every command goes through the backend: a third-party backend (``memq_backend.py``,
installed through the entry-point group like any package's) works with ``stats``,
``doctor`` and ``emit`` without the CLI knowing it; the local backend says honestly what a
separate process cannot see."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

import pytest

Run = Callable[..., CompletedProcess[str]]

HERE = Path(__file__).resolve().parent


@pytest.fixture
def memq_env(tmp_path: Path) -> Callable[..., dict[str, str]]:
    """The environment selecting the memq backend, its package "installed" on PYTHONPATH."""
    site = tmp_path / "site"
    info = site / "memq_backend-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: memq-backend\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[fastapi_opinionated_eventbus.backends]\nmemq = memq_backend:MemqBackend\n"
    )

    def env(broker: Path, **more: str) -> dict[str, str]:
        return {
            "PYTHONPATH": f"{site}:{HERE}",
            "EVENTBUS_BACKEND": "memq",
            "EVENTBUS_BACKEND_OPTIONS": json.dumps({"directory": str(broker)}),
            **more,
        }

    return env


def shop_with_title(shop_app: Path) -> Path:
    (shop_app / "main.py").write_text(
        "from fastapi_opinionated.app import App\napp = App.create(title='Shop')\n"
    )
    return shop_app


def test_stats_prints_whatever_the_backend_reports(
    cli: Run, shop_app: Path, tmp_path: Path, memq_env: Callable[..., dict[str, str]]
) -> None:
    broker = tmp_path / "broker"
    broker.mkdir()
    (broker / "events.jsonl").write_text('{"id": "a"}\n{"id": "b"}\n{"id": "c"}\n')
    (broker / "offsets.json").write_text('{"0": 2}')
    (broker / "dead.jsonl").write_text("{}\n")
    root = shop_with_title(shop_app)

    as_json = cli(root, "stats", "--json", **memq_env(broker))
    table = cli(root, "stats", COLUMNS="100", NO_COLOR="1", **memq_env(broker))

    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout) == {
        "backend": "memq",
        "reachable": True,
        "dead_letters": 1,
        # The topic's name derives from main.py's title, as the app's own backend's does.
        "topic": "shop.events",
        "group": "memq-group",
        "committed_offsets": {"0": 2},
        "end_offsets": {"0": 3},
        # in_flight and assigned_partitions describe the reporting process (this CLI), not
        # the app: left out.
    }
    assert table.returncode == 0, table.stderr
    rows = [line.split() for line in table.stdout.splitlines()]
    assert ["committed_offsets.0", "2"] in rows
    assert ["end_offsets.0", "3"] in rows
    assert ["topic", "shop.events"] in rows


def test_doctor_asks_the_backend(
    cli: Run, shop_app: Path, tmp_path: Path, memq_env: Callable[..., dict[str, str]]
) -> None:
    broker = tmp_path / "broker"
    broker.mkdir()
    root = shop_with_title(shop_app)

    up = cli(root, "doctor", COLUMNS="200", **memq_env(broker))
    down = cli(root, "doctor", COLUMNS="200", **memq_env(tmp_path / "nowhere"))

    assert up.returncode == 0, up.stdout + up.stderr
    assert "ok backend memq reachable: topic=shop.events, group=memq-group" in up.stdout
    assert down.returncode == 1
    assert (
        f"error cannot connect to the memq backend: BackendUnavailable: memq broker at "
        f"{tmp_path / 'nowhere'} is down"
    ) in down.stdout


def test_emit_publishes_through_the_backend(
    cli: Run, shop_app: Path, tmp_path: Path, memq_env: Callable[..., dict[str, str]]
) -> None:
    broker = tmp_path / "broker"
    broker.mkdir()

    result = cli(shop_app, "emit", "user.created", "--json", '{"id": 7}', **memq_env(broker))

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("user.created: published to memq as event ")
    [record] = [json.loads(line) for line in (broker / "events.jsonl").read_text().splitlines()]
    assert record == {"id": result.stdout.split()[-1], "name": "user.created", "args": [{"id": 7}]}


def test_unreachable_backend_is_one_line_and_exit_2(
    cli: Run, shop_app: Path, tmp_path: Path, memq_env: Callable[..., dict[str, str]]
) -> None:
    # No main.py, so no title: no warning about it either, only the error.
    result = cli(shop_app, "stats", **memq_env(tmp_path / "nowhere"))

    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"error: cannot connect to the memq backend: BackendUnavailable: memq broker at "
        f"{tmp_path / 'nowhere'} is down"
    ]


def test_a_title_the_cli_cannot_read_is_a_warning(
    cli: Run, shop_app: Path, tmp_path: Path, memq_env: Callable[..., dict[str, str]]
) -> None:
    broker = tmp_path / "broker"
    broker.mkdir()
    (shop_app / "main.py").write_text(
        "import os\nfrom fastapi_opinionated.app import App\n"
        "app = App.create(title=os.environ['TITLE'])\n"
    )

    result = cli(shop_app, "stats", "--json", **memq_env(broker))

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["topic"] == "eventbus.events"  # the backend's default
    assert result.stderr.startswith(
        "warning: main.py has no App.create() with a literal title: the memq backend uses "
        "its default names here"
    )


LETTERS = [
    {
        "event": "payment.processed",
        "id": "6d1f0c2a9b7e4f21-1",
        "handler": "app.domains.payments.handlers:handle_payment_result",
        "error": "RuntimeError",
        "message": "gateway timed out after 30 seconds while waiting",
        "attempts": 3,
    },
    {
        "event": "order.shipment_label_requested",
        "id": "6d1f0c2a9b7e4f21-2",
        "handler": "app.domains.shipping.label_printing.handlers:"
        "PrintingService.print_shipment_label_for_order",
        "error": "ValueError",
        "message": "printer offline",
        "attempts": 1,
    },
]


@pytest.mark.parametrize("columns", [60, 80, 100])
def test_dead_letters_table_cuts_identifiers_after_dots_not_mid_word(
    cli: Run,
    shop_app: Path,
    tmp_path: Path,
    memq_env: Callable[..., dict[str, str]],
    columns: int,
) -> None:
    broker = tmp_path / "broker"
    broker.mkdir()
    (broker / "dead.jsonl").write_text("".join(json.dumps(x) + "\n" for x in LETTERS))

    result = cli(
        shop_app, "dead-letters", "list", COLUMNS=str(columns), NO_COLOR="1", **memq_env(broker)
    )

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert max(map(len, lines)) <= columns
    assert lines[-1] == "2 dead letter(s)"
    header = lines[0]
    event_at, handler_at, tries_at = (header.index(h) for h in ("Event", "Handler", "Tries"))
    for column, (start, end), key in (
        ("event", (event_at, handler_at), "event"),
        ("id", (event_at, handler_at), "id"),
        ("handler", (handler_at, tries_at), "handler"),
    ):
        cells = [line[start:end].strip() for line in lines[2:]]
        for letter in LETTERS:
            identifier = letter[key]
            assert isinstance(identifier, str)
            pieces = _pieces_of(identifier, cells)
            assert "".join(pieces) == identifier, (column, cells)
            # Every line of a cut identifier but its last ends where a name may be cut.
            assert all(piece[-1] in ".:_-" for piece in pieces[:-1]), (column, pieces)


def _pieces_of(identifier: str, cells: list[str]) -> list[str]:
    """The consecutive cells that spell ``identifier`` (the first that starts it)."""
    for start, cell in enumerate(cells):
        if cell and identifier.startswith(cell):
            pieces, rest = [], identifier
            for piece in cells[start:]:
                if not rest.startswith(piece) or not piece:
                    break
                pieces.append(piece)
                rest = rest[len(piece) :]
            if not rest:
                return pieces
    raise AssertionError(f"{identifier!r} not found in {cells}")
