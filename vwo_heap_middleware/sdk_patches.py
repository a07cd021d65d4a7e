"""Every change this project makes to ``vwo-fme-python-sdk``, in one place.

Each patch says which SDK versions it was written against and why it exists; ``install()``
applies them once per process. ``tests/test_sdk_patches.py`` checks each against the installed
SDK: that it works, and (for defects) that the stock SDK still needs it.

1. ``inlist``: SDK <= 1.65.0 searches ``inlist\\([^)]*\\)``, a pattern without a capture
   group, then requires a group: every ``inlist`` operand evaluates False and the gateway is never
   asked, so Heap segment targeting cannot work. Applied only when a probe of the installed
   SDK shows the defect.
2. ``gateway_lookups``: the SDK asks the gateway for list membership and user details inside
   ``get_flag``, with 3 retries and 2-8 s sleeps. The engine fetches both beforehand (short
   timeout, cache, circuit breaker) and the SDK's lookups read those answers: no network I/O
   inside ``get_flag``.
3. ``validate_once``: ``get_flag`` re-validates the whole settings JSON against a JSON schema on
   every call (about half its CPU time). The result is kept per settings object.
4. ``event_sender``: each impression starts a new ``ThreadPoolExecutor``; sends go to the
   engine's single bounded sender instead (same send functions, same payloads).
5. ``prefetched_settings`` (a builder the SDK accepts as ``vwoBuilder``): the engine fetches the
   settings itself, so ``init`` never blocks on the network, and the SDK's non-daemon polling
   timer, which keeps the process alive forever, is never started.
6. ``event_client``: the SDK sends events with ``requests`` and retries 3 times with 2, 4 and
   8 s sleeps, holding the sender for 14 s per event while the gateway is down; ``requests``
   also costs several times the CPU of a pooled ``urllib3`` call. Events go through
   ``EventClient`` instead: same URL, headers and JSON body, two quick retries.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import urllib3

logger = logging.getLogger("vwo_heap_middleware")
sdk_logger = logging.getLogger("vwo_heap_middleware.sdk")

INLIST = re.compile(r"inlist\(([^)]+)\)")
EMPTY_USER_DETAILS: Mapping[str, Any] = {"location": {}, "userAgent": {}}


@dataclass(frozen=True)
class Patch:
    name: str
    versions: str
    why: str


PATCHES = (
    Patch("inlist", "<= 1.65.0 (when the probe finds the defect)", "inlist operands never match"),
    Patch("gateway_lookups", "all", "membership and user details come from the engine"),
    Patch("validate_once", "all", "schema validation of the settings on every get_flag call"),
    Patch("event_sender", "all", "a new thread pool per impression"),
    Patch("prefetched_settings", "all", "blocking init and a non-daemon polling timer"),
    Patch("event_client", "all", "14 s of retry sleeps per failed event, and requests' CPU cost"),
)


@dataclass
class SdkCall:
    """What one ``get_flag`` call may know beyond its context: answers fetched beforehand."""

    memberships: Mapping[tuple[str, str], bool | None] = field(default_factory=dict)
    user_details: Mapping[str, Any] | None = None
    missing: bool = False


current_call: ContextVar[SdkCall | None] = ContextVar("vwo_heap_sdk_call", default=None)
_event_sink: list[Callable[[Callable[[], object]], None]] = []
_installed: dict[str, bool] = {}
_install_lock = threading.Lock()


def sdk_version() -> str:
    from wingify.constants.Constants import Constants

    return str(Constants.SDK_VERSION)


def installed() -> Mapping[str, bool]:
    """Which patches ``install()`` applied (name -> applied)."""
    return dict(_installed)


def set_event_sink(sink: Callable[[Callable[[], object]], None] | None) -> None:
    _event_sink[:] = [sink] if sink is not None else []


def gateway_lookup(query_params: Mapping[str, Any], endpoint: str, context: Any) -> Any:
    """Stands in for the SDK's ``get_from_gateway_service``: answers from ``current_call``."""
    from wingify.enums.url_enum import UrlEnum

    call = current_call.get()
    if call is None:  # not inside the engine: never block a caller on the network
        return False
    if endpoint == UrlEnum.ATTRIBUTE_CHECK.value:
        answer = call.memberships.get(
            (str(query_params.get("listId")), str(query_params.get("attribute")))
        )
        if answer is None:
            call.missing = True
            return False
        return answer
    if endpoint == UrlEnum.GET_USER_DATA.value:
        if call.user_details is None:
            call.missing = True
            return dict(EMPTY_USER_DETAILS)
        return dict(call.user_details)
    call.missing = True
    return False


def has_inlist_defect() -> bool:
    """Probe the installed SDK: does an ``inlist`` operand ever reach the gateway?"""
    from wingify.packages.segmentation_evaluator.evaluators import (
        segment_operand_evaluator as module,
    )

    asked: list[Any] = []

    class _Silent:
        def __getattr__(self, name: str) -> Callable[..., None]:
            return lambda *args, **kwargs: None

    class _Context:
        def get_vwo_uuid(self) -> str:
            return "probe"

        def get_session_id(self) -> int:
            return 0

    def record(query: Any, endpoint: Any, context: Any) -> bool:
        asked.append(query)
        return True

    saved = module.get_from_gateway_service, module.LogManager, module.SettingsManager
    module.get_from_gateway_service = record
    module.LogManager = type("LogManager", (), {"get_instance": staticmethod(_Silent)})
    module.SettingsManager = type("SettingsManager", (), {"get_instance": staticmethod(_Silent)})
    try:
        evaluator = module.SegmentOperandEvaluator()
        evaluator.evaluate_custom_variable_dsl({"v": "inlist(probe_list)"}, {"v": "x"}, _Context())
    except Exception:
        logger.debug("inlist probe raised", exc_info=True)
    finally:
        module.get_from_gateway_service, module.LogManager, module.SettingsManager = saved
    return not any(str(query.get("listId")) == "probe_list" for query in asked)


def install() -> Mapping[str, bool]:
    """Apply the patches once per process; later calls return what was applied."""
    with _install_lock:
        if not _installed:
            _installed["inlist"] = has_inlist_defect()
            if _installed["inlist"]:
                _patch_inlist()
            _patch_gateway_lookups()
            _patch_validate_once()
            _patch_event_sender()
            # The builder (init_client) and the event client (use_event_client) apply per init.
            _installed.update(
                gateway_lookups=True,
                validate_once=True,
                event_sender=True,
                prefetched_settings=True,
                event_client=True,
            )
        return dict(_installed)


def _patch_inlist() -> None:
    from wingify.enums.url_enum import UrlEnum
    from wingify.packages.segmentation_evaluator.evaluators import (
        segment_operand_evaluator as module,
    )
    from wingify.packages.segmentation_evaluator.utils.segment_util import get_key_value
    from wingify.services.settings_manager import SettingsManager

    stock = module.SegmentOperandEvaluator.evaluate_custom_variable_dsl

    def evaluate_custom_variable_dsl(
        self: Any, dsl_operand_value: Any, properties: Any, context: Any
    ) -> Any:
        name, operand = get_key_value(dsl_operand_value)
        if not isinstance(operand, str) or "inlist" not in operand:
            return stock(self, dsl_operand_value, properties, context)
        match = INLIST.search(operand)
        if name not in properties or match is None:
            return False
        manager = SettingsManager.get_instance()
        answer = module.get_from_gateway_service(
            {
                "attribute": self.pre_process_tag_value(properties[name]),
                "listId": match.group(1),
                "accountId": manager.account_id if manager else None,
                "sdkKey": manager.sdk_key if manager else None,
            },
            UrlEnum.ATTRIBUTE_CHECK.value,
            context,
        )
        return bool(answer) and answer != "false"

    module.SegmentOperandEvaluator.evaluate_custom_variable_dsl = evaluate_custom_variable_dsl


def _patch_gateway_lookups() -> None:
    from wingify.packages.segmentation_evaluator.core import segmentation_manager
    from wingify.packages.segmentation_evaluator.evaluators import segment_operand_evaluator

    segment_operand_evaluator.get_from_gateway_service = gateway_lookup
    segmentation_manager.get_from_gateway_service = gateway_lookup


def _patch_validate_once() -> None:
    from wingify.services.settings_manager import SettingsManager

    stock = SettingsManager.is_settings_valid
    last: list[tuple[object, bool]] = [(None, False)]

    def is_settings_valid(settings: Any) -> bool:
        seen, result = last[0]
        if settings is not None and settings is seen:
            return result
        result = bool(stock(settings))
        last[0] = (settings, result)  # holds the object, so identity stays meaningful
        return result

    SettingsManager.is_settings_valid = staticmethod(is_settings_valid)


def _patch_event_sender() -> None:
    from wingify.packages.network_layer.manager.network_manager import NetworkManager

    stock = NetworkManager.execute_in_background

    def execute_in_background(self: Any, func: Callable[[], object]) -> None:
        if _event_sink:
            _event_sink[0](func)
        else:
            stock(self, func)

    NetworkManager.execute_in_background = execute_in_background


class LogTransport:
    """Routes the SDK's log lines to ``logging`` (``vwo_heap_middleware.sdk``), or drops them.

    SDK messages can contain raw user ids, so they stay off unless ``sdk_log_level`` is set.
    """

    config: dict[str, Any] = {}

    def __init__(self, level: str | None) -> None:
        self.enabled = level is not None
        self.level = (level or "ERROR").upper()

    def log(self, level: str, message: str) -> None:
        if self.enabled:
            sdk_logger.log(getattr(logging, str(level).upper(), logging.INFO), "%s", message)


class EventClient:
    """Stands in for the SDK's ``NetworkClient`` (its ``get``/``post`` on a ``RequestModel``)."""

    def __init__(self) -> None:
        retry = urllib3.Retry(
            total=2,
            backoff_factor=0.2,
            allowed_methods=None,
            status_forcelist=(500, 502, 503, 504),
            raise_on_status=False,
        )
        self._pool = urllib3.PoolManager(num_pools=2, maxsize=4, retries=retry)

    def get(self, request_model: Any) -> Any:
        return self._send("GET", request_model)

    def post(self, request_model: Any) -> Any:
        return self._send("POST", request_model)

    def _send(self, method: str, request_model: Any) -> Any:
        from wingify.packages.network_layer.models.response_model import ResponseModel

        answer = ResponseModel()
        options = request_model.get_options()
        headers = dict(options.get("headers") or {})
        body = None
        if options.get("json") is not None:
            body = json.dumps(options["json"]).encode()
            headers["Content-Type"] = "application/json"
        try:
            response = self._pool.request(
                method,
                options["url"],
                body=body,
                headers=headers,
                timeout=urllib3.Timeout(total=options.get("timeout") or 3.0),
            )
        except urllib3.exceptions.HTTPError as exc:
            answer.set_error(type(exc).__name__)
            return answer
        answer.set_status_code(response.status)
        answer.set_headers(dict(response.headers))
        text = response.data.decode("utf-8", "replace")
        try:
            answer.set_data(
                json.loads(text)
                if response.headers.get("Content-Type", "").startswith("application/json")
                else text
            )
        except ValueError:
            answer.set_data(text)
        if not 200 <= response.status < 300:
            answer.set_error(f"HTTP {response.status}")
        return answer


def use_event_client() -> None:
    """Give the SDK's network manager (after ``init``, or in a forked child) an ``EventClient``."""
    from wingify.packages.network_layer.manager.network_manager import NetworkManager

    if NetworkManager._instance is not None:
        NetworkManager._instance.client = EventClient()


def init_client(options: dict[str, Any], settings: dict[str, Any]) -> Any:
    """``vwo.init`` with settings the engine already fetched, and no polling timer."""
    import vwo
    from wingify.wingify_builder import WingifyBuilder

    class PrefetchedSettingsBuilder(WingifyBuilder):  # type: ignore[misc]
        def get_settings(self, force: bool = False) -> dict[str, Any]:
            self.setting_file_manager.is_settings_valid_on_init = True
            self.setting_file_manager.settings_fetch_time = 0
            return settings

        def check_and_poll(self) -> None:
            """The engine refreshes settings itself."""

    options = {**options, "is_via_vwo": True}  # what vwo.init sets: VWO's branding and hosts
    options["vwoBuilder"] = PrefetchedSettingsBuilder(options)
    client = vwo.init(options)
    use_event_client()
    return client
