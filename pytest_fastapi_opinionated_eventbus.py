"""The pytest plugin of fastapi-opinionated-eventbus: the ``eventbus_app_factory`` and
``eventbus_recorder`` fixtures (registered through the ``pytest11`` entry point).

pytest imports this module in every session of an environment where the package is
installed, projects that never use it included. Importing anything of the package imports
fastapi-opinionated-core, whose import switches the root logger to INFO and installs its own
logger class: this module therefore stands outside the package, and imports it only when a
fixture is used.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["eventbus_app_factory", "eventbus_recorder"]


@pytest.fixture
def eventbus_app_factory(request: pytest.FixtureRequest) -> Iterator[Callable[..., FastAPI]]:
    """``make(app_dir, main=None, **plugin_options) -> FastAPI`` with fresh core state.

    ``app_dir`` is the app's root; a relative one is taken relative to the directory of the
    test module, wherever pytest runs. With ``main="main:app"`` the app's own module (in
    ``app_dir``) builds the app; otherwise the fixture configures the plugin with
    ``plugin_options`` and calls ``App.create()``. The core's state, the current directory
    and ``sys.path`` are restored after the test.
    """
    from fastapi_opinionated_eventbus.testing import create_app, isolated_core, load_app

    here = request.path.parent
    with ExitStack() as stack:

        def make(
            app_dir: str | os.PathLike[str], main: str | None = None, **plugin_options: Any
        ) -> FastAPI:
            root = here / app_dir  # an absolute app_dir stays as it is
            stack.enter_context(isolated_core(root))
            if main is not None:
                return load_app(root, main)
            return create_app(root, plugin_options)

        yield make


@pytest.fixture
def eventbus_recorder() -> Callable[..., Any]:
    """``with eventbus_recorder() as events:`` records the events emitted on the app's bus
    (or on the ``bus`` passed in) during the block; ``events`` is an
    :class:`~fastapi_opinionated_eventbus.testing.EventRecorder`."""
    from fastapi_opinionated_eventbus.testing import EventRecorder

    def record(bus: Any = None) -> Any:
        return EventRecorder().recording(bus)

    return record
