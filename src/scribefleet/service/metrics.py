"""`/metrics`: the controller in Prometheus' text format.

Gauges are read from the store and the engine at scrape time (so they are
right after a restart); the job duration histogram and the upload counters
are kept in process from the dispatcher's events and the upload route, and
start again from zero with the controller, as Prometheus counters may.

    scribefleet_jobs{status}                 jobs in the store, by status
    scribefleet_slots / scribefleet_slots_busy
    scribefleet_queue_length                 queued jobs
    scribefleet_job_duration_seconds{status} run time of finished attempts (histogram)
    scribefleet_upload_bytes_total           bytes stored by POST /api/uploads and /v1/audio/*
    scribefleet_uploads_total{result}        uploads by result (stored, too_large, invalid)
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from scribefleet.dispatch.monitor import DispatchEvent
from scribefleet.service.controller import Controller
from scribefleet.store.models import TaskState

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DURATION_BUCKETS_S = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, float("inf"))
_ENDS = {"task_completed": "complete", "task_failed": "failed", "task_canceled": "canceled"}


class _StoreCollector(Collector):
    """Gauges read at scrape time from the store and the engine."""

    def __init__(self, controller: Controller) -> None:
        self.controller = controller

    def collect(self) -> Iterator[Metric]:
        counts = self.controller.store.counts()
        jobs = GaugeMetricFamily("scribefleet_jobs", "Jobs in the store, by status.", labels=["status"])
        for state, n in counts.items():
            jobs.add_metric([state.value], n)
        yield jobs
        slots = self.controller.slot_views()
        usable = [s for s in slots if s["status"] != "failed"]
        yield GaugeMetricFamily("scribefleet_slots", "Slots that can run work.", value=len(usable))
        yield GaugeMetricFamily("scribefleet_slots_busy", "Slots running a job now.", value=sum(s["busy"] for s in slots))
        yield GaugeMetricFamily("scribefleet_queue_length", "Jobs waiting for a slot.", value=counts[TaskState.QUEUED])


class Metrics:
    """The controller's Prometheus registry."""

    def __init__(self, controller: Controller) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_StoreCollector(controller))
        self.job_duration = Histogram(
            "scribefleet_job_duration_seconds", "Run time of finished job attempts, by how they ended.",
            ["status"], buckets=DURATION_BUCKETS_S, registry=self.registry,
        )  # fmt: skip
        self.upload_bytes = Counter(
            "scribefleet_upload_bytes", "Bytes of media stored from uploads.", registry=self.registry
        )
        self.uploads = Counter("scribefleet_uploads", "Uploads, by result.", ["result"], registry=self.registry)

    def on_dispatch(self, event: DispatchEvent) -> None:
        """Dispatcher listener: a finished attempt's run time goes into the histogram."""
        status = _ENDS.get(event.type)
        if status is None or event.task is None or event.task.elapsed_s is None:
            return
        self.job_duration.labels(status).observe(event.task.elapsed_s)

    def upload(self, result: str, size_bytes: int = 0) -> None:
        self.uploads.labels(result).inc()
        if size_bytes:
            self.upload_bytes.inc(size_bytes)

    def render(self) -> bytes:
        return generate_latest(self.registry)
