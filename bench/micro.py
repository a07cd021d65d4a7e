"""Micro-figures, in microseconds: identity parsing + context, a warm and a cold decision, a
conversion (``track``), and a new (visitor, flag) decision in-process, native and by the SDK;
a request's whole share for a returning and a new visitor (CPU of the request's thread); and
what cached visitors cost the garbage collector.

Run as ``python -m bench.micro GATEWAY_URL``; prints one JSON object.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from vwo_heap_middleware import Config, FlagEngine, RequestFacts, build_visitor, open_request
from vwo_heap_middleware.evaluation.custom_events import conversion
from vwo_heap_middleware.evaluation.impressions import Impressions
from vwo_heap_middleware.evaluation.native import NativeSettings
from vwo_heap_middleware.evaluation.outcome import Answers, Event
from vwo_heap_middleware.gateway.events import EventSpool
from vwo_heap_middleware.offline.flags_file import load_flags_file
from vwo_heap_middleware.vwo_sdk import VwoSdk

from .load import USER_AGENT

COOKIE = (
    '_ga=GA1.1.1234567890.1732800000; theme=dark; cart={"items":2}; '
    "_hp5_meta.1234=%7B%22userId%22%3A%224835702585115963%22%2C%22sessionId%22%3A%223859385729357291%22"
    "%2C%22sessionProperties%22%3A%7B%7D%2C%22identity%22%3A%22ret-1%40example.com%22%7D; "
    "_hp5_let.1234=1732800123456; session=abcdef0123456789"
)


def request_figures(config: Config) -> dict[str, float]:
    """A request's whole share, as an adapter runs it (``open_request``, the page's two
    reads, the response's headers, ``close``), in the request thread's CPU: a returning
    visitor (recalled), and a new one (its membership asked of the gateway, over HTTP)."""
    engine = FlagEngine(config)
    engine.start()
    engine.wait_ready(10)

    def request(identity: str) -> None:
        facts = RequestFacts(identity_header=identity.encode(), user_agent=USER_AGENT)
        with open_request(engine, facts) as flags:
            flags.enabled("premium_checkout")
            flags.get("new_banner")
            flags.response_headers()

    for n in range(100):
        request(f"ret-{n % 50}@example.com")
    returning = per_call(lambda n: request(f"ret-{n % 50}@example.com"), 50_000, time.thread_time)
    for n in range(200):
        request(f"warm-{n}@example.com")
    new = per_call(lambda n: request(f"new-{n}@example.com"), 3_000, time.thread_time)
    engine.close()
    return {"returning_request_cpu_us": round(returning, 2), "new_request_cpu_us": round(new, 1)}


def per_call(
    function: Callable[[int], object], calls: int, clock: Callable[[], float] = time.perf_counter
) -> float:
    """µs per call, by ``clock`` (``time.thread_time``: this thread's CPU, without the waits)."""
    started = clock()
    for n in range(calls):
        function(n)
    return (clock() - started) / calls * 1e6


def new_decision(config: Config, evaluation: str, calls: int = 5000) -> float:
    """A new (visitor, flag) decided in-process, with its membership answer already known: the
    cost of deciding (and making its impression), without the lookup."""
    engine = FlagEngine(dataclasses.replace(config, evaluation=evaluation))
    engine.start()
    engine.wait_ready(10)
    identity = "ret-1@example.com"  # a member: the flag is on, an impression is made
    visitors = [
        build_visitor(
            engine.config, RequestFacts(identity_header=identity, user_agent=USER_AGENT), None
        )
        for _ in range(2)
    ]
    engine.decide(visitors[0], ["premium_checkout"], timeout=2.0)  # the lookup, cached now
    base = visitors[1]  # the same identity and membership answer, a new VWO user id each
    fresh = [
        dataclasses.replace(
            base, user_id=f"user-{n}", context={**(base.context or {}), "id": f"user-{n}"}
        )
        for n in range(calls)
    ]
    took = per_call(lambda n: engine.decide(fresh[n], ["premium_checkout"]), calls)
    engine.close()
    return took


def evaluation(config: Config, calls: int = 5000) -> dict[str, float]:
    """One new (visitor, flag) evaluated, its membership answer given: the native evaluator
    against the SDK's ``get_flag`` (both make the impression)."""
    settings = load_flags_file(Path(__file__).parent / "flags.toml")
    sdk = VwoSdk(config, lambda event: None)
    sdk.prepare()
    sdk.load(settings)
    native = NativeSettings(settings, sdk.facts())
    answers = Answers({("heap_premium_users", "ret-1@example.com"): True})
    contexts = [
        {"id": f"user-{n}", "custom_variables": {"heap_identity": "ret-1@example.com"}}
        for n in range(calls)
    ]
    native_us = per_call(lambda n: native.evaluate("premium_checkout", contexts[n], answers), calls)
    sdk_us = per_call(lambda n: sdk.evaluate("premium_checkout", contexts[n], answers), calls // 5)
    # What each costs the request, for a new visitor (its uuid5 made anew): an impression made,
    # against a conversion (flags.track) made; each is then spooled alike (``spool_add_us``).
    facts = sdk.facts()
    impressions = Impressions(facts, web_connectivity=True)
    impression_us = per_call(lambda n: impressions.make(contexts[n], f"user-{n}", [(7, 2)]), calls)
    conversion_us = per_call(
        lambda n: conversion(
            facts, contexts[n], "purchase", {"revenue": 12.5}, web_connectivity=True
        ),
        calls,
    )
    sdk.release()
    return {
        "native_evaluation_us": round(native_us, 2),
        "sdk_evaluation_us": round(sdk_us, 2),
        "impression_made_us": round(impression_us, 2),
        "conversion_made_us": round(conversion_us, 2),
    }


def _add_nth(spool: EventSpool, events: list[Event], n: int) -> None:
    spool.add(events[n])


def spool_figures(gateway_url: str, calls: int = 50_000) -> dict[str, float]:
    """What keeping one impression costs, in memory and with a state directory (its line
    written to the OS before ``add`` returns; no fsync): ``add`` alone, the request's share,
    timed while the gateway is down (the sender thread idle in its back-off); and the process's
    CPU per event with the gateway up, sending included."""
    props = {"id": 1, "variation": "1"}
    events = [
        Event.of(
            {"d": {"msgId": f"m{n}", "visId": f"V{n}", "event": {"name": "x", "props": props}}},
            {"en": "vwo_variationShown", "a": "123456", "env": "bench-sdk-key"},
        )
        for n in range(calls)
    ]
    figures = {}
    for name in ("memory", "state_dir"):
        with tempfile.TemporaryDirectory() as state_dir:
            directory = state_dir if name == "state_dir" else None
            down = EventSpool(calls + 1, "http://127.0.0.1:9", state_dir=directory)
            down.start()
            add = functools.partial(_add_nth, down, events)
            figures[f"spool_add_{name}_us"] = round(per_call(add, calls), 2)
            down.close(0.0)
        with tempfile.TemporaryDirectory() as state_dir:
            directory = state_dir if name == "state_dir" else None
            up = EventSpool(calls + 1, gateway_url, state_dir=directory)
            up.start()
            started = time.process_time()
            for event in events:
                up.add(event)
            up.flush(60.0)
            cpu_us = (time.process_time() - started) / calls * 1e6
            figures[f"spool_cpu_per_event_{name}_us"] = round(cpu_us, 2)
            up.close(5.0)
    return figures


def gc_figures(visitors: int = 200_000) -> dict[str, float]:
    """What caching visitors costs the garbage collector: tracked objects kept per cached
    visitor, and one full collection with ``visitors`` of them cached (offline engine: the
    same caches, no network)."""
    here = Path(__file__).parent
    config = Config(
        offline_flags=here / "flags.toml",
        offline_segments=here / "segments.json",
        flags=("premium_checkout", "new_banner"),
        cache_size=visitors * 5,  # nobody evicted: every visitor stays cached
    )
    engine = FlagEngine(config)

    def visit(n: int) -> None:
        facts = RequestFacts(identity_header=f"gc-{n}@example.com", peer="203.0.113.7")
        with open_request(engine, facts) as flags:
            flags.enabled("premium_checkout")

    for n in range(1000):
        visit(n)
    gc.collect()
    gc.collect()
    before = len(gc.get_objects())
    for n in range(1000, 1000 + visitors):
        visit(n)
    gc.collect()
    gc.collect()
    kept = (len(gc.get_objects()) - before) / visitors
    started = time.perf_counter()
    gc.collect()
    full_ms = (time.perf_counter() - started) * 1000
    # The documented production setting: gc.freeze() once start-up is over (the frameworks,
    # the SDK, the settings); then the same visitors cached, and one full collection.
    gc.freeze()
    for n in range(1000 + visitors, 1000 + 2 * visitors):
        visit(n)
    started = time.perf_counter()
    gc.collect()
    frozen_ms = (time.perf_counter() - started) * 1000
    gc.unfreeze()
    engine.close()
    return {
        "gc_tracked_objects_per_cached_visitor": round(kept, 3),
        f"gc_full_collection_ms_with_{visitors}_cached_visitors": round(full_ms, 2),
        f"gc_full_collection_ms_with_{visitors}_more_after_gc_freeze": round(frozen_ms, 2),
    }


def main() -> None:
    gateway_url = sys.argv[1]
    config = Config(
        account_id="123456",
        sdk_key="bench-sdk-key",
        gateway_url=gateway_url,
        flags=("premium_checkout", "new_banner"),
    )
    facts = RequestFacts(cookie=COOKIE, user_agent=USER_AGENT, peer="203.0.113.7")
    parse_us = per_call(lambda n: build_visitor(config, facts, None), 20_000)
    new_facts = [
        RequestFacts(
            cookie=COOKIE.replace("ret-1", f"new-{n}"), user_agent=USER_AGENT, peer="203.0.113.7"
        )
        for n in range(20_000)
    ]
    parse_new_us = per_call(lambda n: build_visitor(config, new_facts[n], None), 20_000)

    engine = FlagEngine(config)
    engine.start()
    engine.wait_ready(10)
    visitor = build_visitor(config, facts, None)
    engine.decide(visitor, ["premium_checkout"])
    warm_us = per_call(lambda n: engine.decide(visitor, ["premium_checkout"]), 20_000)

    def cold(n: int) -> None:
        fresh = build_visitor(
            config,
            RequestFacts(
                identity_header=f"cold-{n}@example.com", user_agent=USER_AGENT, peer="203.0.113.7"
            ),
            None,
        )
        engine.decide(fresh, ["premium_checkout"], timeout=2.0)

    cold_us = per_call(cold, 300)
    # A conversion (flags.track): built and spooled as an impression is; no lookup.
    track_us = per_call(lambda n: engine.track(visitor, "purchase", {"revenue": 12.5}), 20_000)
    engine.close()
    new_us = {mode: new_decision(config, mode) for mode in ("native", "sdk")}
    with tempfile.TemporaryDirectory() as state_dir:
        journaled = dataclasses.replace(config, state_dir=state_dir)
        new_us["native_state_dir"] = new_decision(journaled, "native")
    spooled = spool_figures(gateway_url)
    evaluated = evaluation(config)
    requests = request_figures(config)
    collector = gc_figures()
    print(
        json.dumps(
            {
                "identity_and_context_us": round(parse_us, 2),
                "identity_and_context_new_cookie_us": round(parse_new_us, 2),
                "warm_decision_us": round(warm_us, 2),
                "cold_decision_us": round(cold_us, 1),
                "track_conversion_us": round(track_us, 2),
                "new_decision_native_us": round(new_us["native"], 2),
                "new_decision_sdk_us": round(new_us["sdk"], 2),
                "new_decision_native_state_dir_us": round(new_us["native_state_dir"], 2),
                **spooled,
                **evaluated,
                **requests,
                **collector,
            }
        )
    )


if __name__ == "__main__":
    main()
