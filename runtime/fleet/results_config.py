"""The fleet config's ``[results]`` as the worker's `CallResults`: a SQLite outbox per
worker by default, or one PostgreSQL store the whole fleet shares."""

from __future__ import annotations

from typing import TYPE_CHECKING

from runtime.call_results import CallResults
from runtime.delivery import DeliveryConfig, open_delivery

if TYPE_CHECKING:
    from runtime.fleet.config import FleetConfig
    from runtime.registry import Registry


def delivery_config(fleet: FleetConfig) -> DeliveryConfig:
    results = fleet.results
    return DeliveryConfig(
        outbox_path=fleet.resolve_path(results.outbox),
        postgres_dsn=results.postgres.get() if results.postgres else None,
        webhooks=tuple(results.webhooks),
        webhook_secret=results.webhook_secret.get() if results.webhook_secret else None,
        jsonl_path=fleet.resolve_path(results.jsonl) if results.jsonl else None,
    )


def open_results(fleet: FleetConfig, registry: Registry) -> CallResults:
    outbox, deliverer = open_delivery(delivery_config(fleet), registry)
    return CallResults(registry, outbox, deliverer)
