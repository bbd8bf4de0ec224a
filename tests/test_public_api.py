"""The package's public surface: an accidental export (or a lost one) fails here."""

from __future__ import annotations

import inspect

import fastapi_opinionated_eventbus as package
from fastapi_opinionated_eventbus import testing

EXPECTED_EXPORTS = {
    "BackendUnavailable",
    "ChainDepthExceeded",
    "ConfigurationError",
    "DeadLetter",
    "EmitResult",
    "EventBus",
    "EventBusClosed",
    "EventBusDep",
    "EventBusError",
    "EventBusNotEnabled",
    "EventBusOverloaded",
    "EventBusPlugin",
    "EventEnvelope",
    "EventSerializationError",
    "HandlerFailure",
    "HandlerTimeout",
    "NoCurrentEvent",
    "OnInternalEvent",
    "RetryPolicy",
    "Subscription",
    "TypedEvent",
    "current_event",
    "eventbus_api",
    "get_correlation_id",
    "get_event_bus",
    "register_schema",
    "register_type",
}

EXPECTED_TESTING_EXPORTS = {
    "EventRecorder",
    "create_app",
    "eventbus_app_factory",
    "eventbus_recorder",
    "isolated_core",
    "load_app",
    "running",
    "started_bus",
}


def test_all_is_exactly_the_expected_set_without_duplicates() -> None:
    assert set(package.__all__) == EXPECTED_EXPORTS
    assert len(package.__all__) == len(EXPECTED_EXPORTS)


def test_every_exported_name_resolves() -> None:
    for name in package.__all__:
        assert getattr(package, name, None) is not None, name


def test_star_import_gives_exactly_the_exports() -> None:
    namespace: dict[str, object] = {}
    exec("from fastapi_opinionated_eventbus import *", namespace)
    namespace.pop("__builtins__")
    assert set(namespace) == EXPECTED_EXPORTS


def test_errors_share_one_base_class() -> None:
    errors = {name for name in EXPECTED_EXPORTS if name.endswith(("Error", "Closed"))} | {
        "BackendUnavailable",
        "ChainDepthExceeded",
        "EventBusNotEnabled",
        "EventBusOverloaded",
        "NoCurrentEvent",
    }
    for name in errors:
        error = getattr(package, name)
        assert inspect.isclass(error) and issubclass(error, package.EventBusError), name


def test_version_is_above_the_unrelated_0_1_1_on_the_index() -> None:
    major, minor = (int(part) for part in package.__version__.split(".")[:2])
    assert (major, minor) >= (0, 2)


def test_testing_module_exports() -> None:
    assert set(testing.__all__) == EXPECTED_TESTING_EXPORTS
    for name in testing.__all__:
        assert getattr(testing, name, None) is not None, name
