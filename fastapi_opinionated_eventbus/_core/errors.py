"""Every exception the event bus raises, in one place.

::

    EventBusError                       base of everything below
    ├── EventBusNotEnabled              eventbus_api() before the plugin was enabled
    ├── EventBusClosed                  emit after shutdown / background emit while draining
    ├── EventBusOverloaded              more than ``max_pending`` background events in flight
    ├── ChainDepthExceeded              an emit nested deeper than ``max_chain_depth``
    ├── NoCurrentEvent                  current_event() outside a handler
    ├── HandlerTimeout (TimeoutError)   a handler outran its ``timeout`` (in failures)
    ├── ConfigurationError (ValueError) an unknown or invalid plugin option
    ├── EventSerializationError (TypeError)  an argument that cannot cross a process boundary
    ├── BackendUnavailable              the backend could not store an event in time
    ├── ForwardingFailed                a forwarder did not accept an event (in failures)
    └── PartialBatchFailure             raised by a forwarder: some events of a batch were
                                        not accepted (the others were)

Handler failures are not wrapped: the handler's own exception is logged, kept on the
:class:`~fastapi_opinionated_eventbus.EmitResult` and, in strict mode, raised in an
``ExceptionGroup`` after every handler has finished.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from .enablement import ENABLE_COMMAND


def enable_hint() -> str:
    """How to enable the plugin, naming the directory the core looked in."""
    return (
        f"Enable it: run `{ENABLE_COMMAND}` in the app's root directory (the one holding "
        "app/domains, which the app must be started from; the core reads "
        f".fastapi_opinionated/enabled_plugins.py in the current directory, here "
        f"{os.getcwd()}), and configure it before App.create() with "
        "`App.configurePlugin(EventBusPlugin())`."
    )


class EventBusError(Exception):
    """Base class of the errors raised by the event bus itself."""


class EventBusNotEnabled(EventBusError, RuntimeError):
    """The EventBus plugin is not enabled in this app."""

    def __init__(self, detail: str = "The EventBus plugin is not enabled.") -> None:
        super().__init__(f"{detail} {enable_hint()}")


class EventBusClosed(EventBusError, RuntimeError):
    """The bus has shut down (or is draining and refuses new background events)."""


class EventBusOverloaded(EventBusError, RuntimeError):
    """Too many background events are in flight; the caller must slow down or retry."""


class ChainDepthExceeded(EventBusError, RecursionError):
    """Events emitted from handlers nested deeper than ``max_chain_depth``: a likely cycle."""


class NoCurrentEvent(EventBusError, LookupError):
    """``current_event()`` was called outside an event handler."""


class HandlerTimeout(EventBusError, TimeoutError):
    """A handler ran longer than its ``timeout``; reported as that handler's failure."""


class ConfigurationError(EventBusError, ValueError):
    """A plugin option is unknown or has an invalid value."""


class EventSerializationError(EventBusError, TypeError):
    """An event argument cannot be encoded for another process (JSON only, never pickle)."""


class BackendUnavailable(EventBusError, ConnectionError):
    """The backend did not acknowledge an event within the publish timeout.

    ``may_be_stored`` is true when the event had left for the broker: it may have been
    stored although nothing confirmed it (a retry could store it twice).
    """

    def __init__(self, message: str, *, may_be_stored: bool = False) -> None:
        super().__init__(message)
        self.may_be_stored = may_be_stored


class ForwardingFailed(EventBusError):
    """A forwarder did not accept an event: its batch failed, was not accepted in time,
    or the bus shut down first. Reported as the forward subscription's failure (retried,
    then dead-lettered), never raised to the emitter unless ``strict``."""


class PartialBatchFailure(EventBusError):
    """Raised by a forwarder's ``send_many`` when only some events of the batch were
    accepted: ``failed`` maps the id of each event that was not to the reason. The others
    count as accepted and are not sent again."""

    def __init__(self, failed: Mapping[str, str]) -> None:
        self.failed: dict[str, str] = dict(failed)
        super().__init__(f"{len(self.failed)} event(s) of the batch were not accepted")
