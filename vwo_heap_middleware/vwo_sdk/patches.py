"""The patches that make vwo-fme-python-sdk usable in a web server, the probe that finds its
``inlist`` defect, and the shims the patched SDK calls back into.

``install(process)`` applies them once per process; each shim reads the current ``Call`` (the
answers the engine looked up for this ``get_flag``) from the process state it is given.
``tests/vwo_sdk/test_patches.py`` checks each against the installed SDK: that it works, and (for
defects) that the stock SDK still needs it.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

from ..evaluation.flag_index import INLIST
from ..evaluation.outcome import Answers, Event

logger = logging.getLogger("vwo_heap_middleware")
sdk_logger = logging.getLogger("vwo_heap_middleware.sdk")

NO_SPOOL = "an SDK event with no engine to take it (no engine uses the SDK now): not sent"

PATCHES: Mapping[str, str] = MappingProxyType(
    {
        # SDK <= 1.65.0 searches ``inlist\([^)]*\)`` (no capture group) then requires a group:
        # every ``inlist`` operand is False and the gateway is never asked. Applied only when a
        # probe of the installed SDK finds the defect.
        "inlist": "inlist operands never match",
        # The SDK asks the gateway for list membership and user details inside ``get_flag``,
        # with 3 retries and 2-8 s sleeps; here they are answered from lookups made beforehand.
        "gateway_lookups": "membership and user details come from the engine",
        # ``get_flag`` re-validates the whole settings JSON on every call (half its CPU time).
        "validate_once": "schema validation of the settings on every get_flag call",
        # Each impression starts a new ThreadPoolExecutor; here the send runs at once and only
        # hands the event over (no network on the request path).
        "event_sender": "a new thread pool per impression",
        # ``init`` fetches settings (blocking) and starts a non-daemon polling timer that keeps
        # the process alive; the engine fetches and refreshes settings itself.
        "prefetched_settings": "blocking init and a non-daemon polling timer",
        # Events go through ``requests`` with 2, 4 and 8 s sleeps between retries, then are lost;
        # here they go to the engine's spool, which batches and retries without losing them.
        "event_client": "14 s of retry sleeps per failed event, then the event is lost",
    }
)
EMPTY_USER_DETAILS: Mapping[str, Any] = MappingProxyType({"location": {}, "userAgent": {}})


@dataclass
class Call:
    """One ``get_flag`` call: the answers it may use, and what the shims saw during it."""

    answers: Answers
    missing: bool = False
    failed: bool = False  # the SDK logged an error during the call
    events: list[Event] = field(default_factory=list)
    asked: list[tuple[str, str]] = field(default_factory=list)  # memberships, in order


class ProcessState(Protocol):
    """What the shims read of the process's SDK state (``client.SdkProcess``)."""

    current_call: ContextVar[Call | None]
    event_sink: Callable[[Event], None] | None
    validated: tuple[object, bool]


def install(process: ProcessState) -> dict[str, bool]:
    """Apply every patch (``inlist`` only where the probe finds the defect); returns which."""
    applied = dict.fromkeys(set(PATCHES) - {"inlist"}, True)  # prefetched_settings: per init
    applied["inlist"] = has_inlist_defect()
    if applied["inlist"]:
        _patch_inlist()
    _patch_gateway_lookups(process)
    _patch_validate_once(process)
    _patch_event_sender()
    _patch_event_client(process)
    return applied


def gateway_lookup(
    process: ProcessState, query_params: Mapping[str, Any], endpoint: str, context: Any
) -> Any:
    """Stands in for the SDK's ``get_from_gateway_service``: answers from the current call."""
    from wingify.enums.url_enum import UrlEnum

    call = process.current_call.get()
    if call is None:  # not inside evaluate(): never block a caller on the network
        return False
    if endpoint == UrlEnum.ATTRIBUTE_CHECK.value:
        key = (str(query_params.get("listId")), str(query_params.get("attribute")))
        call.asked.append(key)
        answer = call.answers.memberships.get(key)
        if answer is None:
            call.missing = True
            return False
        return answer
    if endpoint == UrlEnum.GET_USER_DATA.value:
        if call.answers.user_details is None:
            call.missing = True
            return dict(EMPTY_USER_DETAILS)
        return dict(call.answers.user_details)
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


def _patch_gateway_lookups(process: ProcessState) -> None:
    from wingify.packages.segmentation_evaluator.core import segmentation_manager
    from wingify.packages.segmentation_evaluator.evaluators import segment_operand_evaluator

    shim = functools.partial(gateway_lookup, process)
    segment_operand_evaluator.get_from_gateway_service = shim
    segmentation_manager.get_from_gateway_service = shim


def _patch_validate_once(process: ProcessState) -> None:
    from wingify.services.settings_manager import SettingsManager

    stock = SettingsManager.is_settings_valid

    def is_settings_valid(settings: Any) -> bool:
        seen, result = process.validated
        if settings is not None and settings is seen:
            return result
        result = bool(stock(settings))
        process.validated = (settings, result)  # holds the object: identity stays meaningful
        return result

    SettingsManager.is_settings_valid = staticmethod(is_settings_valid)


def _patch_event_sender() -> None:
    from wingify.packages.network_layer.manager.network_manager import NetworkManager

    def execute_in_background(self: Any, func: Callable[[], object]) -> None:
        func()  # it only hands the event to the spool: no thread, no network

    NetworkManager.execute_in_background = execute_in_background


def _patch_event_client(process: ProcessState) -> None:
    from wingify.packages.network_layer.manager.network_manager import NetworkManager

    stock = NetworkManager.attach_client

    def attach_client(self: Any) -> None:
        stock(self)
        self.client = _SdkNetworkClient(process)  # from init on, its init event included

    NetworkManager.attach_client = attach_client


class LogTransport:
    """Routes the SDK's log lines to ``logging`` (``vwo_heap_middleware.sdk``), or drops them.

    SDK messages can contain raw user ids, so they stay off unless ``sdk_log_level`` is set.
    """

    def __init__(self, level: str | None, process: ProcessState) -> None:
        self._process = process
        self.enabled = level is not None
        self.level = (level or "ERROR").upper()
        self.config: dict[str, Any] = {}  # the SDK's LogManager reads it

    def log(self, level: str, message: str) -> None:
        call = self._process.current_call.get()
        if call is not None and str(level).upper() == "ERROR":
            call.failed = True  # the SDK swallows its failures: this is how they show
        if self.enabled:
            sdk_logger.log(getattr(logging, str(level).upper(), logging.INFO), "%s", message)


class _SdkNetworkClient:
    """The SDK's ``NetworkClient`` (``get``/``post`` a ``RequestModel``): an event posted during
    a ``get_flag`` call joins that call's outcome; any other (its init event) goes to the
    current engine's event sink. Either way the engine's spool sends it later, in a batch."""

    def __init__(self, process: ProcessState) -> None:
        self._process = process

    def get(self, request_model: Any) -> Any:
        return self._capture(request_model)

    def post(self, request_model: Any) -> Any:
        return self._capture(request_model)

    def _capture(self, request_model: Any) -> Any:
        from wingify.packages.network_layer.models.response_model import ResponseModel

        body = request_model.get_body()
        query = request_model.get_query() or {}
        call, sink = self._process.current_call.get(), self._process.event_sink
        if isinstance(body, dict) and (call is not None or sink is not None):
            event = Event.of(body, {str(k): str(v) for k, v in query.items()})
            if call is not None:
                call.events.append(event)
            elif sink is not None:
                sink(event)
        else:
            logger.debug(NO_SPOOL)
        answer = ResponseModel()  # taken: the spool answers for its delivery from here on
        answer.set_status_code(200)
        answer.set_data({"status": "queued"})
        return answer
