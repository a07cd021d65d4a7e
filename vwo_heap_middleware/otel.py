"""OpenTelemetry for the engine (the ``[otel]`` extra: ``opentelemetry-api`` only).

On with ``Config(otel=True)`` or ``VWO_HEAP_OTEL=true``; the app configures the SDK and exporters.

- Each decision a request reads adds a ``feature_flag.evaluation`` event to the current span,
  with the semantic conventions' attributes (``feature_flag.key``,
  ``feature_flag.provider.name``, ``feature_flag.result.variant`` (the variation's name, or
  on/off), ``value``, ``reason``, ``feature_flag.version`` (the settings revision),
  ``error.type``) and the rule (``vwo_heap.rule.key``, ``vwo_heap.rule.type``); never the raw
  identity, at most its hash as ``feature_flag.context.id``
  (``Config(otel_context_id=True)``).
- Gateway lookups and settings loads are ``CLIENT`` spans.
- Metrics: decisions by flag and reason, gateway call duration, decision-cache hit ratio,
  circuit-breaker state, events sent/queued/dropped, settings revision age.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Observation

from .config import Config
from .decision import PROVIDER_NAME, FlagDecision
from .identity import short_hash
from .observers import Observer, RequestView


class EngineView(Protocol):
    """What the telemetry reads of an engine (``engine.FlagEngine``)."""

    config: Config

    @property
    def closed(self) -> bool: ...

    def stats(self) -> dict[str, int]: ...


INSTRUMENTATION = "vwo_heap_middleware"
EVALUATION_EVENT = "feature_flag.evaluation"


class FlagTelemetry(Observer):
    """Traces and metrics of one engine; ``FlagEngine`` adds it when ``Config.otel`` is on.

    The metric instruments exist once per process; each engine's observations carry
    ``vwo_heap.engine`` (a number in the order engines were built).
    """

    def __init__(self, engine: EngineView) -> None:
        self.engine = engine
        self._context_id = engine.config.otel_context_id
        self._log_key = engine.config.log_key
        self._tracer = trace.get_tracer(INSTRUMENTATION)
        self._hits = self._total = 0
        self._loaded_at: float | None = None
        with _lock:
            if not _instruments:
                _instruments.append(_Instruments())
            self._label = {"vwo_heap.engine": len(_engines) + 1}
            _engines.add(self)
        self._decisions = _instruments[0].decisions
        self._gateway = _instruments[0].gateway

    def flag_read(self, flags: RequestView, decision: FlagDecision) -> None:
        span = trace.get_current_span()
        if not span.is_recording():
            return
        attributes: dict[str, str | bool | int] = {
            "feature_flag.key": decision.key,
            "feature_flag.provider.name": PROVIDER_NAME,
            "feature_flag.result.variant": decision.variant,
            "feature_flag.result.value": decision.enabled,
            "feature_flag.result.reason": _reason(decision),
        }
        if decision.reason.error_type is not None:
            attributes["error.type"] = decision.reason.error_type
        details = decision.details
        if details.rule_key is not None:
            attributes["vwo_heap.rule.key"] = details.rule_key
        if details.rule_type is not None:
            attributes["vwo_heap.rule.type"] = details.rule_type
        if details.revision is not None:
            attributes["feature_flag.version"] = details.revision
        if self._context_id and flags.user_id:
            attributes["feature_flag.context.id"] = short_hash(flags.user_id, key=self._log_key)
        span.add_event(EVALUATION_EVENT, attributes)

    def decided(self, decisions: Mapping[str, FlagDecision], cached: int) -> None:
        self._hits += cached
        self._total += len(decisions)
        for decision in decisions.values():
            self._decisions.add(
                1,
                {
                    "feature_flag.key": decision.key,
                    "feature_flag.result.reason": decision.reason.evaluation_reason.lower(),
                    "vwo_heap.reason": decision.reason.value,
                },
            )

    def lookup_done(self, kind: str, seconds: float, failed: bool) -> None:
        attributes = {"vwo_heap.gateway.call": kind}
        if failed:
            attributes["error.type"] = "gateway_error"
        self._gateway.record(seconds, attributes)
        end = time.time_ns()
        span = self._tracer.start_span(
            f"vwo gateway {kind}",
            kind=trace.SpanKind.CLIENT,
            start_time=end - int(seconds * 1e9),
            attributes=attributes,
        )
        if failed:
            span.set_status(trace.StatusCode.ERROR)
        span.end(end_time=end)

    def settings_loaded(self, revision: str, flags: int) -> None:
        self._loaded_at = time.monotonic()

    def observations(self) -> dict[str, list[Observation]]:
        """This engine's gauges and observable counters, for the process-wide instruments."""
        stats = self.engine.stats()
        label = self._label
        found = {
            "circuit_open": [Observation(stats["circuit_open"], label)],
            "queued": [Observation(stats["events_queued"], label)],
            "events": [
                Observation(stats[f"events_{state}"], {**label, "vwo_heap.event.state": state})
                for state in ("sent", "dropped", "held")
            ],
            "hit_ratio": [],
            "settings_age": [],
        }
        if self._total:
            found["hit_ratio"].append(Observation(self._hits / self._total, label))
        if self._loaded_at is not None:
            found["settings_age"].append(Observation(time.monotonic() - self._loaded_at, label))
        return found


class _Instruments:
    def __init__(self) -> None:
        meter = metrics.get_meter(INSTRUMENTATION)
        self.decisions = meter.create_counter(
            "vwo_heap.decisions", unit="{decision}", description="Flag decisions by flag and reason"
        )
        self.gateway = meter.create_histogram(
            "vwo_heap.gateway.duration", unit="s", description="Calls to the VWO gateway"
        )
        gauges = {
            "vwo_heap.decision_cache.hit_ratio": ("hit_ratio", "1", "Decisions from the cache"),
            "vwo_heap.gateway.circuit_open": ("circuit_open", "1", "1 while the breaker is open"),
            "vwo_heap.events.queued": ("queued", "{event}", "SDK events not sent yet"),
            "vwo_heap.settings.age": ("settings_age", "s", "Since the last settings load"),
        }
        for name, (part, unit, description) in gauges.items():
            meter.create_observable_gauge(
                name, [_observe(part)], unit=unit, description=description
            )
        meter.create_observable_counter(
            "vwo_heap.events", [_observe("events")], unit="{event}", description="SDK events"
        )


def _observe(part: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def callback(options: CallbackOptions) -> Iterable[Observation]:
        for telemetry in list(_engines):
            if not telemetry.engine.closed:
                yield from telemetry.observations()[part]

    return callback


_lock = threading.Lock()
_instruments: list[_Instruments] = []
_engines: weakref.WeakSet[FlagTelemetry] = weakref.WeakSet()


def _reason(decision: FlagDecision) -> str:
    """``feature_flag.result.reason``: OpenFeature's reason in lower case, or ``stale``."""
    if decision.stale and decision.reason.error_code is None:
        return "stale"
    return decision.reason.evaluation_reason.lower()
