"""The one door to ``vwo-fme-python-sdk``: no other module imports ``vwo`` or ``wingify``.

``VwoSdk`` is one engine's view of the SDK: ``load(settings)`` (start-up or update, checked that
it took), ``evaluate(key, context, answers) -> Outcome`` (one ``get_flag`` call, answered from
gateway lookups made beforehand) and ``release()``. The SDK keeps its state in process-wide
singletons, so every call of every engine holds one process-wide lock, and an engine whose
client is not the one the singletons were last set up for sets them up again first (several
engines in one process: app factories, test suites).

The released SDK cannot do Heap segment targeting in a web server as it is. ``install()``
applies these patches once per process; ``tests/test_vwo_sdk.py`` checks each against the
installed SDK: that it works, and (for defects) that the stock SDK still needs it.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .config import Config
from .events import Event
from .flag_index import INLIST
from .native_evaluator import VERIFIED_SDKS, SdkFacts
from .visitor import short_hash

logger = logging.getLogger("vwo_heap_middleware")
sdk_logger = logging.getLogger("vwo_heap_middleware.sdk")

SDK_FAILED = "the VWO SDK failed on flag %r for user %s"
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
        # hands the event to the engine's spool (no network on the request path).
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

MembershipKey = tuple[str, str]  # (attribute list id, attribute value)


class SettingsRejected(Exception):
    """The VWO SDK would not take these settings; the message says why."""


@dataclass(frozen=True)
class Answers:
    """What a ``get_flag`` call may know beyond its context: gateway answers fetched before."""

    memberships: Mapping[MembershipKey, bool | None] = field(default_factory=dict)
    user_details: Mapping[str, Any] | None = None
    user_details_missing: bool = False  # wanted, but the lookup gave nothing


@dataclass(frozen=True, slots=True)
class Outcome:
    """One ``get_flag`` call. ``missing``: the SDK asked for an answer the engine lacked;
    ``events``: what it sent (already in the spool)."""

    enabled: bool
    variables: Mapping[str, Any]
    missing: bool = False
    error: bool = False
    events: tuple[Event, ...] = ()


@dataclass
class _Call:
    answers: Answers
    missing: bool = False
    failed: bool = False  # the SDK logged an error during the call
    events: list[Event] = field(default_factory=list)


_current_call: ContextVar[_Call | None] = ContextVar("vwo_heap_sdk_call", default=None)
_event_sink: list[Callable[[Event], None]] = []
_installed: dict[str, bool] = {}
_process_lock = threading.Lock()  # patches and hooks
_sdk_lock = threading.Lock()  # every SDK call in the process: its state is in singletons
_current: list[VwoSdk | None] = [None]  # whose client the SDK's singletons are set up for
_fork_hooks: list[bool] = []  # registered once, by the first prepare()
_validated: list[tuple[object, bool]] = [(None, False)]  # validate_once: the last settings


def sdk_version() -> str:
    from wingify.constants.Constants import Constants

    return str(Constants.SDK_VERSION)


def installed() -> tuple[str, ...]:
    """The patches ``install()`` applied, sorted."""
    return tuple(sorted(name for name, applied in _installed.items() if applied))


def settings_problem(settings: object) -> str | None:
    """Why the installed SDK's settings schema rejects ``settings``, or None if it accepts it."""
    import jsonschema
    from wingify.models.schemas.settings_schema import SETTINGS_FILE_SCHEMA

    if not isinstance(settings, dict):
        return "settings must be a JSON object"
    error = jsonschema.exceptions.best_match(
        jsonschema.Draft7Validator(SETTINGS_FILE_SCHEMA).iter_errors(settings)
    )
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "top level"
    return f"not valid VWO settings at {where}: {error.message}"


def install() -> tuple[str, ...]:
    """Apply the patches once per process; returns the names applied."""
    with _process_lock:
        if not _installed:
            _installed["inlist"] = has_inlist_defect()
            if _installed["inlist"]:
                _patch_inlist()
            _patch_gateway_lookups()
            _patch_validate_once()
            _patch_event_sender()
            _patch_event_client()
            # prefetched_settings applies per init (VwoSdk.load).
            _installed.update(dict.fromkeys(set(PATCHES) - {"inlist"}, True))
    return installed()


class VwoSdk:
    """One engine's VWO SDK client, over the process-wide SDK."""

    def __init__(
        self, config: Config, event_sink: Callable[[Event], None], storage: Any = None
    ) -> None:
        self._config = config
        self._event_sink = event_sink
        self._storage = storage  # the SDK's storage connector: sticky decisions (Redis)
        self._client: Any = None
        self._settings: dict[str, Any] | None = None
        self._usage_pending = False  # the SDK's usage block waits for its first impression

    @property
    def loaded(self) -> bool:
        return self._client is not None

    def prepare(self) -> None:
        """Make the process's SDK usable: the patches, and fork safety (once per process)."""
        with _process_lock:
            if not _fork_hooks and hasattr(os, "register_at_fork"):
                os.register_at_fork(
                    before=_before_fork, after_in_parent=_after_fork, after_in_child=_after_fork
                )
                _fork_hooks.append(True)
        install()

    def release(self) -> None:
        """This engine closed: the SDK's singletons are no longer its, nor are later events."""
        with _sdk_lock:
            if _current[0] is self:
                _current[0] = None
                _event_sink.clear()

    def load(self, settings: dict[str, Any]) -> None:
        """Start the SDK on ``settings``, or update it; raise ``SettingsRejected`` if refused."""
        problem = settings_problem(settings)
        if problem is not None:
            raise SettingsRejected(f"the settings fail the VWO SDK's schema: {problem}")
        _validated[0] = (settings, True)  # the SDK's own check of this object: done above
        with _sdk_lock:
            if self._client is None or _current[0] is not self:
                self._set_up(settings)
            else:
                self._client.update_settings(settings)  # logs and returns on failure
                if self._client.original_settings is not settings:
                    raise SettingsRejected("the VWO SDK did not accept the new settings")
            self._settings = settings

    def _set_up(self, settings: dict[str, Any]) -> None:
        """Set the SDK's singletons up for this engine (holding ``_sdk_lock``)."""
        from wingify.packages.storage.storage import Storage

        _current[0] = self
        _event_sink[:] = [self._event_sink]  # before init: it sends an event of its own
        Storage.get_instance().attach_connector(None)  # init keeps the last engine's otherwise
        client = _init_client(self._options(), settings)
        if client is None or getattr(client, "_settings", None) is None:
            _current[0] = None
            raise SettingsRejected("the VWO SDK did not accept the settings")
        self._client = client
        self._usage_pending = True

    def native_problem(self) -> str | None:
        """Why native evaluation must not stand in for this SDK, or None when it may."""
        version = sdk_version()
        if VERIFIED_SDKS.get(version) != ("inlist" in installed()):
            proven = ", ".join(VERIFIED_SDKS)
            return f"vwo-fme-python-sdk {version} is not a release it was proven on ({proven})"
        if self._storage is not None:
            return "sticky decisions (Redis storage) are kept by the SDK"
        return None

    def native_facts(self) -> SdkFacts:
        """What the SDK puts in the impressions it sends, for a native evaluator."""
        from wingify.services.settings_manager import SettingsManager

        with _sdk_lock:
            name = SettingsManager.get_instance().get_sdk_name()
        config = self._config
        return SdkFacts(name, sdk_version(), config.account_id, config.sdk_key, self._usage_meta)

    def _usage_meta(self) -> Mapping[str, Any] | None:
        """The SDK's usage block (``vwoMeta``), taken once: it rides on the first impression
        after ``init``, whoever sends it."""
        if not self._usage_pending:
            return None
        from wingify.utils.usage_stats_util import UsageStatsUtil

        with _sdk_lock:
            self._usage_pending = False
            if _current[0] is not self:
                return None
            stats = UsageStatsUtil()
            data = stats.get_usage_stats()
            stats.clear_usage_stats()
            return data or None

    def evaluate(
        self, key: str, context: Mapping[str, Any], answers: Answers, user_id: str
    ) -> Outcome:
        """``get_flag(key, context)``, the SDK's own lookups answered from ``answers``."""
        call = _Call(answers, missing=answers.user_details_missing)
        context = {**context, "_vwo": answers.user_details or EMPTY_USER_DETAILS}
        token = _current_call.set(call)
        try:
            with _sdk_lock:
                if _current[0] is not self and self._settings is not None:
                    self._set_up(self._settings)  # another engine used the SDK since
                flag = self._client.get_flag(key, context)
            enabled = bool(flag.is_enabled())
            variables = {v["key"]: v["value"] for v in flag.get_variables() or []}
        except Exception:
            logger.exception(SDK_FAILED, key, short_hash(user_id, key=self._config.log_key))
            return Outcome(False, MappingProxyType({}), call.missing, True, tuple(call.events))
        finally:
            _current_call.reset(token)
        found = MappingProxyType(variables)
        return Outcome(enabled, found, call.missing, call.failed, tuple(call.events))

    def _options(self) -> dict[str, Any]:
        level = self._config.sdk_log_level
        options = {
            "account_id": self._config.account_id,
            "sdk_key": self._config.sdk_key,
            "gateway_service": {"url": self._config.gateway_url},
            "logger": {"level": (level or "ERROR").upper(), "transport": LogTransport(level)},
        }
        if self._storage is not None:
            options["storage"] = self._storage
        return options


_held_for_fork: list[bool] = []


def _before_fork() -> None:
    """Fork only between SDK calls: a child must not inherit an SDK (or an import) half set up
    by the settings thread, which the child does not have."""
    if _sdk_lock.acquire(timeout=5.0):
        _held_for_fork.append(True)


def _after_fork() -> None:
    if _held_for_fork:
        _held_for_fork.clear()
        _sdk_lock.release()


def gateway_lookup(query_params: Mapping[str, Any], endpoint: str, context: Any) -> Any:
    """Stands in for the SDK's ``get_from_gateway_service``: answers from the current call."""
    from wingify.enums.url_enum import UrlEnum

    call = _current_call.get()
    if call is None:  # not inside evaluate(): never block a caller on the network
        return False
    if endpoint == UrlEnum.ATTRIBUTE_CHECK.value:
        answer = call.answers.memberships.get(
            (str(query_params.get("listId")), str(query_params.get("attribute")))
        )
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


def _patch_gateway_lookups() -> None:
    from wingify.packages.segmentation_evaluator.core import segmentation_manager
    from wingify.packages.segmentation_evaluator.evaluators import segment_operand_evaluator

    segment_operand_evaluator.get_from_gateway_service = gateway_lookup
    segmentation_manager.get_from_gateway_service = gateway_lookup


def _patch_validate_once() -> None:
    from wingify.services.settings_manager import SettingsManager

    stock = SettingsManager.is_settings_valid

    def is_settings_valid(settings: Any) -> bool:
        seen, result = _validated[0]
        if settings is not None and settings is seen:
            return result
        result = bool(stock(settings))
        _validated[0] = (settings, result)  # holds the object, so identity stays meaningful
        return result

    SettingsManager.is_settings_valid = staticmethod(is_settings_valid)


def _patch_event_sender() -> None:
    from wingify.packages.network_layer.manager.network_manager import NetworkManager

    def execute_in_background(self: Any, func: Callable[[], object]) -> None:
        func()  # it only hands the event to the spool: no thread, no network

    NetworkManager.execute_in_background = execute_in_background


def _patch_event_client() -> None:
    from wingify.packages.network_layer.manager.network_manager import NetworkManager

    stock = NetworkManager.attach_client

    def attach_client(self: Any) -> None:
        stock(self)
        self.client = _SdkNetworkClient()  # from init on, the SDK's own init event included

    NetworkManager.attach_client = attach_client


class LogTransport:
    """Routes the SDK's log lines to ``logging`` (``vwo_heap_middleware.sdk``), or drops them.

    SDK messages can contain raw user ids, so they stay off unless ``sdk_log_level`` is set.
    """

    def __init__(self, level: str | None) -> None:
        self.enabled = level is not None
        self.level = (level or "ERROR").upper()
        self.config: dict[str, Any] = {}  # the SDK's LogManager reads it

    def log(self, level: str, message: str) -> None:
        call = _current_call.get()
        if call is not None and str(level).upper() == "ERROR":
            call.failed = True  # the SDK swallows its failures: this is how they show
        if self.enabled:
            sdk_logger.log(getattr(logging, str(level).upper(), logging.INFO), "%s", message)


class _SdkNetworkClient:
    """The SDK's ``NetworkClient`` (``get``/``post`` a ``RequestModel``): each event it posts
    goes to the current engine's spool, which sends it later in a batch."""

    def get(self, request_model: Any) -> Any:
        return self._capture(request_model)

    def post(self, request_model: Any) -> Any:
        return self._capture(request_model)

    def _capture(self, request_model: Any) -> Any:
        from wingify.packages.network_layer.models.response_model import ResponseModel

        body = request_model.get_body()
        query = request_model.get_query() or {}
        if isinstance(body, dict) and _event_sink:
            event = Event(body, {str(k): str(v) for k, v in query.items()})
            _event_sink[0](event)
            call = _current_call.get()
            if call is not None:
                call.events.append(event)
        else:
            logger.debug(NO_SPOOL)
        answer = ResponseModel()  # taken: the spool answers for its delivery from here on
        answer.set_status_code(200)
        answer.set_data({"status": "queued"})
        return answer


def _init_client(options: dict[str, Any], settings: dict[str, Any]) -> Any:
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
    return vwo.init(options)
