"""Benchmark suite: fastapi-opinionated-eventbus against its floors and its peers.

Run with ``python -m benchmarks`` (full) or ``python -m benchmarks --quick``.
"""
