"""``VwoSdk``: one engine's view of the process-wide VWO SDK.

``load(settings)`` (start-up or update, checked that it took), ``evaluate(key, context, answers)``
(one ``get_flag`` call, its lookups answered from ``answers``) and ``release()``. The SDK keeps
its state in process-wide singletons, so every call of every engine holds one process-wide lock
(``SdkProcess``), and an engine whose client is not the one the singletons were last set up for
sets them up again first (several engines in one process: app factories, test suites).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any

from ..config import Config
from ..evaluation.impressions import SdkFacts
from ..evaluation.native import VERIFIED_SDKS
from ..evaluation.outcome import Answers, Event, Outcome
from ..identity import short_hash
from . import patches
from .patches import EMPTY_USER_DETAILS, Call, LogTransport
from .schema import settings_problem

logger = logging.getLogger("vwo_heap_middleware")

SDK_FAILED = "the VWO SDK failed on flag %r for user %s"


class SettingsRejected(Exception):
    """The VWO SDK would not take these settings; the message says why."""


class SdkProcess:
    """Everything this package keeps about the process-wide SDK: one object per process."""

    def __init__(self) -> None:
        self.lock = threading.Lock()  # patching and fork hooks
        self.sdk_lock = threading.Lock()  # every SDK call: its state is in singletons
        self.owner: VwoSdk | None = None  # whose client the SDK's singletons are set up for
        self.event_sink: Callable[[Event], None] | None = None  # the owner's, outside calls
        self.current_call: ContextVar[Call | None] = ContextVar("vwo_heap_sdk_call", default=None)
        self.patches: dict[str, bool] = {}  # patch name -> applied (empty: not installed yet)
        self.validated: tuple[object, bool] = (None, False)  # validate_once: the last settings
        self.fork_hooks = False
        self.held_for_fork = False

    def install(self) -> tuple[str, ...]:
        """Patch the SDK and make forks safe, once per process; returns the patches applied."""
        with self.lock:
            if not self.patches:
                self.patches = patches.install(self)
            if not self.fork_hooks and hasattr(os, "register_at_fork"):
                os.register_at_fork(
                    before=self._before_fork,
                    after_in_parent=self._after_fork,
                    after_in_child=self._after_fork,
                )
                self.fork_hooks = True
        return self.installed()

    def installed(self) -> tuple[str, ...]:
        return tuple(sorted(name for name, applied in self.patches.items() if applied))

    def _before_fork(self) -> None:
        """Fork only between SDK calls: a child must not inherit an SDK (or an import) half set
        up by the settings thread, which the child does not have."""
        self.held_for_fork = self.sdk_lock.acquire(timeout=5.0)

    def _after_fork(self) -> None:
        if self.held_for_fork:
            self.held_for_fork = False
            self.sdk_lock.release()


PROCESS = SdkProcess()


def sdk_version() -> str:
    from wingify.constants.Constants import Constants

    return str(Constants.SDK_VERSION)


def installed() -> tuple[str, ...]:
    """The patches applied to the SDK in this process, sorted."""
    return PROCESS.installed()


class VwoSdk:
    """One engine's VWO SDK client, over the process-wide SDK. Its events outside a
    ``get_flag`` call (the SDK's init event) go to ``event_sink``; those of a call come back in
    that call's ``Outcome``."""

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

    @property
    def sticky(self) -> bool:
        """True when the SDK keeps sticky decisions (a storage connector)."""
        return self._storage is not None

    def prepare(self) -> None:
        """Make the process's SDK usable: the patches, and fork safety (once per process)."""
        PROCESS.install()

    def release(self) -> None:
        """This engine closed: the SDK's singletons are no longer its, nor are later events."""
        with PROCESS.sdk_lock:
            if PROCESS.owner is self:
                PROCESS.owner = PROCESS.event_sink = None

    def load(self, settings: dict[str, Any]) -> None:
        """Start the SDK on ``settings``, or update it; raise ``SettingsRejected`` if refused."""
        problem = settings_problem(settings)
        if problem is not None:
            raise SettingsRejected(f"the settings fail the VWO SDK's schema: {problem}")
        PROCESS.validated = (settings, True)  # the SDK's own check of this object: done above
        with PROCESS.sdk_lock:
            if self._client is None or PROCESS.owner is not self:
                self._set_up(settings)
            else:
                self._client.update_settings(settings)  # logs and returns on failure
                if self._client.original_settings is not settings:
                    raise SettingsRejected("the VWO SDK did not accept the new settings")
            self._settings = settings

    def _set_up(self, settings: dict[str, Any]) -> None:
        """Set the SDK's singletons up for this engine (holding the SDK lock)."""
        from wingify.packages.storage.storage import Storage

        PROCESS.owner, PROCESS.event_sink = self, self._event_sink  # init sends an event
        Storage.get_instance().attach_connector(None)  # init keeps the last engine's otherwise
        client = _init_client(self._options(), settings)
        if client is None or getattr(client, "_settings", None) is None:
            PROCESS.owner = PROCESS.event_sink = None
            raise SettingsRejected("the VWO SDK did not accept the settings")
        self._client = client
        self._usage_pending = True

    def native_problem(self) -> str | None:
        """Why native evaluation must not stand in for this SDK, or None when it may."""
        version = sdk_version()
        if VERIFIED_SDKS.get(version) != ("inlist" in installed()):
            proven = ", ".join(VERIFIED_SDKS)
            return f"vwo-fme-python-sdk {version} is not a release it was proven on ({proven})"
        return None

    def facts(self) -> SdkFacts:
        """What the SDK puts in the impressions it sends, for a native evaluator."""
        from wingify.services.settings_manager import SettingsManager

        with PROCESS.sdk_lock:
            name = SettingsManager.get_instance().get_sdk_name()
        return SdkFacts(name, sdk_version(), self._config.account_id, self._config.sdk_key)

    def take_usage_meta(self) -> Mapping[str, Any] | None:
        """The SDK's usage block (``vwoMeta``), taken once after ``init``: it rides on the first
        impression, whoever sends it (the SDK then sends none)."""
        if not self._usage_pending:
            return None
        from wingify.utils.usage_stats_util import UsageStatsUtil

        with PROCESS.sdk_lock:
            self._usage_pending = False
            if PROCESS.owner is not self:
                return None
            stats = UsageStatsUtil()
            data = stats.get_usage_stats()
            stats.clear_usage_stats()
            return dict(data) if data else None

    def evaluate(self, key: str, context: Mapping[str, Any], answers: Answers) -> Outcome:
        """``get_flag(key, context)``, the SDK's own lookups answered from ``answers``."""
        call = Call(answers, missing=answers.user_details_missing)
        context = {**context, "_vwo": answers.user_details or EMPTY_USER_DETAILS}
        token = PROCESS.current_call.set(call)
        try:
            with PROCESS.sdk_lock:
                if PROCESS.owner is not self and self._settings is not None:
                    self._set_up(self._settings)  # another engine used the SDK since
                flag = self._client.get_flag(key, context)
            enabled = bool(flag.is_enabled())
            variables = {v["key"]: v["value"] for v in flag.get_variables() or []}
        except Exception:
            user = short_hash(str(context.get("id", "")), key=self._config.log_key)
            logger.exception(SDK_FAILED, key, user)
            return Outcome(False, events=tuple(call.events), missing=call.missing, error=True)
        finally:
            PROCESS.current_call.reset(token)
        found = MappingProxyType(variables)
        events, asked = tuple(call.events), tuple(call.asked)
        return Outcome(enabled, found, events, call.missing, call.failed, "sdk", asked)

    def events_of(self, call: Callable[[Any], object]) -> tuple[Event, ...]:
        """The events the SDK sends in ``call(client)`` (``track_event``, ``set_attribute``):
        the oracle the native event builders are checked against."""
        captured = Call(Answers())
        token = PROCESS.current_call.set(captured)
        try:
            with PROCESS.sdk_lock:
                if PROCESS.owner is not self and self._settings is not None:
                    self._set_up(self._settings)
                call(self._client)
        finally:
            PROCESS.current_call.reset(token)
        return tuple(captured.events)

    def _options(self) -> dict[str, Any]:
        level = self._config.sdk_log_level
        options = {
            "account_id": self._config.account_id,
            "sdk_key": self._config.sdk_key,
            "gateway_service": {"url": self._config.gateway_url},
            "logger": {
                "level": (level or "ERROR").upper(),
                "transport": LogTransport(level, PROCESS),
            },
        }
        if self._storage is not None:
            options["storage"] = self._storage
        return options


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
