"""distlock.metrics.enable is idempotent per registry, and a registry is the object itself.

Keyed by ``id(registry)``, a registry made after an earlier one was collected could get its
id and be handed the earlier registry's (stopped) metrics: nothing was recorded into the new
one. CPython reuses a freed object's address at once, so a loop of short-lived registries
shows it; this is what made test_distlock_metrics' loss go uncounted about once in ten runs.
"""

from __future__ import annotations

import gc

from prometheus_client import CollectorRegistry

from distlock import metrics as lock_metrics


def test_every_new_registry_gets_metrics_of_its_own() -> None:
    for attempt in range(50):
        registry = CollectorRegistry()
        measured = lock_metrics.enable(registry)
        try:
            assert lock_metrics.enable(registry) is measured
            measured.lost("migrate")
            assert registry.get_sample_value("distlock_lost_total", {"lock": "migrate"}) == 1, \
                f"registry {attempt} got another registry's metrics"
        finally:
            measured.stop()
        del registry, measured
        gc.collect()
