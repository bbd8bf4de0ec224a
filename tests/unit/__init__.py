"""Unit tests: each core object exercised directly through its own interface.

A package, so its modules may share names with the integration tests in ``tests/``
(``unit.test_background`` beside ``test_background``).
"""
