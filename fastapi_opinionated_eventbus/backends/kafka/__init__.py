"""The Kafka backend (``backend="kafka"``, the ``[kafka]`` extra, on aiokafka)."""

from __future__ import annotations

from .backend import KafkaBackend, KafkaHealth

__all__ = ["KafkaBackend", "KafkaHealth"]
