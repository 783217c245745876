"""Prometheus metrics (served at /metrics): streams, audio, results (and the server time each
took, `chorus_processing_latency_seconds`: what results carry as processing_latency_ms),
errors, Batch Dispatch, and the process's own resources (memory, open fds, threads, event-loop
tasks: what a soak run watches for leaks).

One registry per App (tests start many servers in one process). Dispatcher numbers are read at
scrape time from its own counters, so the model step never touches prometheus_client (results
are counted as they are made).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
SECONDS_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)


def _buckets(values: Iterable[float], bounds: tuple[float, ...]) -> list[tuple[str, float]]:
    vals = list(values)
    out = [(str(b), float(sum(1 for v in vals if v <= b))) for b in bounds]
    return [*out, ("+Inf", float(len(vals)))]


class _DispatchCollector:
    def __init__(self, dispatcher: Any):
        self.dispatcher = dispatcher

    def collect(self) -> Iterable[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        m = self.dispatcher.metrics
        yield CounterMetricFamily("chorus_dispatch_steps", "model steps run", value=m.steps)
        yield CounterMetricFamily("chorus_dispatch_chunks", "stream chunks computed", value=m.chunks)
        yield CounterMetricFamily("chorus_dispatch_failed_chunks", "chunks whose batch failed",
                                  value=m.failed_chunks)
        yield CounterMetricFamily("chorus_dispatch_refused", "streams/chunks refused (capacity)",
                                  value=m.refused)
        yield CounterMetricFamily("chorus_dispatch_compute_seconds", "seconds in backend.step",
                                  value=m.compute_s)
        sizes = m.batch_sizes  # batch size -> steps
        cum = [(str(b), float(sum(n for k, n in sizes.items() if k <= b))) for b in BATCH_BUCKETS]
        yield HistogramMetricFamily("chorus_dispatch_batch_size", "streams per model step",
                                    buckets=[*cum, ("+Inf", float(sum(sizes.values())))],
                                    sum_value=float(sum(k * n for k, n in sizes.items())))
        yield HistogramMetricFamily("chorus_dispatch_queue_wait_seconds",
                                    "chunk wait before its batch starts (latest 100k)",
                                    buckets=_buckets(m.queue_wait_s, SECONDS_BUCKETS),
                                    sum_value=sum(m.queue_wait_s))
        yield HistogramMetricFamily("chorus_dispatch_step_seconds", "backend.step time (latest 100k)",
                                    buckets=_buckets(m.compute_s_per_step, SECONDS_BUCKETS),
                                    sum_value=sum(m.compute_s_per_step))
        yield GaugeMetricFamily("chorus_active_streams", "open streams",
                                value=self.dispatcher.active_streams)


class _RuntimeCollector:
    """Threads of the process and tasks alive on the server's event loop (set by App.start),
    read at scrape time; with prometheus_client's process collector (process_resident_memory_
    bytes, process_open_fds, ...), what a soak run samples to see leaks."""

    def __init__(self) -> None:
        self.loop: Any = None

    def collect(self) -> Iterable[Any]:
        import asyncio
        import threading

        from prometheus_client.core import GaugeMetricFamily

        yield GaugeMetricFamily("chorus_threads", "Python threads in the server process",
                                value=threading.active_count())
        if self.loop is not None:
            yield GaugeMetricFamily("chorus_asyncio_tasks", "tasks alive on the server's event loop",
                                    value=len(asyncio.all_tasks(self.loop)))


class Metrics:
    def __init__(self, dispatcher: Any):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

        self.registry = CollectorRegistry()
        self.registry.register(_DispatchCollector(dispatcher))
        self.runtime = _RuntimeCollector()
        self.registry.register(self.runtime)
        ProcessCollector(registry=self.registry)  # process_* (Linux /proc; nothing elsewhere)
        self.streams_total = Counter("chorus_streams", "streams opened", registry=self.registry)
        self.audio_seconds = Counter("chorus_audio_seconds", "audio received (source seconds)",
                                     registry=self.registry)
        self.partials = Counter("chorus_partials", "partial results sent", registry=self.registry)
        self.finals = Counter("chorus_finals", "final results sent", registry=self.registry)
        self.processing = Histogram(
            "chorus_processing_latency_seconds", "server time per result (its processing_latency_"
            "ms): the dispatch queue wait, model step and decoding of the chunk that made it",
            ["result"], buckets=SECONDS_BUCKETS, registry=self.registry)
        self._processing = {"partial": self.processing.labels("partial"),
                            "final": self.processing.labels("final")}
        self.errors = Counter("chorus_errors", "errors sent to clients", ["code"],
                              registry=self.registry)
        self.resumes = Counter("chorus_resume_events", "resume after reconnect: streams detached "
                               "(connection dropped), resumed, expired (window passed), failed "
                               "(resume refused)", ["event"], registry=self.registry)
        self.active_streams = Gauge("chorus_open_streams", "streams open (adapter view)",
                                    registry=self.registry)

    def observe_events(self, events: Iterable[Any]) -> None:
        from server.session import Final

        for e in events:
            final = isinstance(e, Final)
            (self.finals if final else self.partials).inc()
            self._processing["final" if final else "partial"].observe(e.processing_latency_ms / 1000)

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


# figures of one process (memory, fds, threads, tasks): labelled by worker, never summed
PER_PROCESS = ("process_", "python_", "chorus_threads", "chorus_asyncio_tasks")


def merge_exposition(texts: dict[int, str]) -> bytes:
    """Several workers' /metrics (worker index -> Prometheus text) -> one exposition: counters,
    gauges and histograms summed sample by sample (the server's totals), `_created` the
    earliest, per-process families kept apart with a `worker` label."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import Metric
    from prometheus_client.parser import text_string_to_metric_families

    families: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for worker, text in sorted(texts.items()):
        for fam in text_string_to_metric_families(text):
            families.setdefault(fam.name, Metric(fam.name, fam.documentation, fam.type))
            acc = values.setdefault(fam.name, {})
            own = fam.name.startswith(PER_PROCESS)
            for s in fam.samples:
                labels = {**s.labels, "worker": str(worker)} if own else s.labels
                key = (s.name, tuple(sorted(labels.items())))
                if key not in acc:
                    acc[key] = s.value
                elif s.name.endswith("_created"):
                    acc[key] = min(acc[key], s.value)
                else:
                    acc[key] += s.value
    for name, fam in families.items():
        for (sample, pairs), value in values[name].items():
            fam.add_sample(sample, dict(pairs), value)

    class _Merged:
        def collect(self) -> list[Metric]:
            return list(families.values())

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Merged())
    return generate_latest(registry)
