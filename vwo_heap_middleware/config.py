"""``Config``: everything the middleware needs, validated once, shared by every adapter."""

from __future__ import annotations

import difflib
import functools
import hashlib
import importlib
import ipaddress
import logging
import os
import re
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

IdentityResolver = Callable[[Any], Any]
"""``resolver(request) -> str | None`` (or an awaitable of it under ASGI): the trusted identity."""

ContextEnricher = Callable[[Any], Mapping[str, object]]
"""``enricher(request) -> {name: value}``: extra VWO custom variables for the request."""

IDENTITY_SOURCES = ("resolver", "header", "cookie")
REDIS_SCHEMES = (
    "redis://",
    "rediss://",
    "unix://",
    "redis+cluster://",
    "rediss+cluster://",
    "redis+sentinel://",
    "rediss+sentinel://",
)
EVALUATIONS = ("native", "sdk", "shadow")
CLIENT_USER_IDS = ("raw", "hashed", "none")
FLAG_KEY = re.compile(r"^[A-Za-z0-9_.-]{1,255}$")
"""What a VWO flag key (and a custom variable name) may be."""
DEFAULT_CUSTOM_VARIABLE = "heap_identity"
_HEADER = re.compile(r"^[A-Za-z0-9-]{1,100}$")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class FlagDefault:
    """What a flag is when no decision can be had (no user, not ready, timeout, error)."""

    enabled: bool = False
    variables: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Config:
    """Settings for the engine and the middleware; every field is checked on construction.

    ``account_id``, ``sdk_key`` and ``gateway_url`` locate the VWO account and its gateway
    service. ``custom_variable`` must equal the name in the VWO rule
    ``custom_variable <name> inlist(<list>)``. ``flags`` are evaluated on every request.

    Cookie and header identities are sent by the visitor and can name anyone: when a flag guards
    something that matters, give ``identity_resolver`` (your login session) and set
    ``trust_client_identity=False``.
    """

    # Where VWO is: the account, the project's SDK key, and the gateway service (required,
    # unless the engine is offline).
    account_id: str = ""
    sdk_key: str = ""
    gateway_url: str = ""
    # CA certificates (a PEM file) an https:// gateway's certificate is checked against; None:
    # the system's (a gateway behind your own CA needs this).
    gateway_ca_file: str | None = None
    # The custom variable of the VWO rule ``custom_variable <name> inlist(<list>)``.
    custom_variable: str = DEFAULT_CUSTOM_VARIABLE
    # Flag keys decided for every request; others are decided when first read.
    flags: tuple[str, ...] = ()
    # Flag keys the browser may see (``client_payload``, the template helpers); none by default:
    # the payload tells visitors their flags. They are decided for every request too.
    client_flags: tuple[str, ...] = ()
    # The VWO user id in the page's payload (an e-mail with a login resolver): ``raw``, ``hashed``
    # (keyed with the SDK key: stable, not reversible) or ``none`` (no userId, uuid or storage).
    client_user_id: str = "raw"
    # Only this Heap app's cookies count; None: any Heap app's.
    heap_app_id: str | None = None
    # The request header API and mobile clients send the identity in.
    identity_header: str = "X-Heap-Identity"
    # Which identity sources count, in precedence order.
    identity_sources: tuple[str, ...] = IDENTITY_SOURCES
    # False: ignore Heap cookies and the header (anyone can forge them); only the resolver.
    trust_client_identity: bool = True
    # ``resolver(request) -> identity | None``: the trusted, server-side identity.
    identity_resolver: IdentityResolver | None = None
    # ``fallback(request) -> user id | None`` for visitors with no Heap identity or userId.
    fallback_user_id: Callable[[Any], str | None] | None = None
    # ``enricher(request) -> {name: value}``: more VWO custom variables.
    context_enricher: ContextEnricher | None = None
    # VWO user aliasing (the gateway's ``/user-alias`` endpoints, the SDK's
    # ``is_aliasing_enabled``): a visitor who logs in keeps the bucket their Heap anonymous
    # ``userId`` had. Links are made from the resolver's identity only, unless
    # ``alias_client_identities`` (Heap's cookie and the header can name anyone).
    aliasing: bool = False
    alias_client_identities: bool = False
    # Proxies (IPs or networks) whose X-Forwarded-For/Forwarded headers are believed.
    trusted_proxies: tuple[str, ...] = ()
    # What each flag is when no decision can be had; off with no variables if not listed.
    flag_defaults: Mapping[str, FlagDefault] = field(default_factory=dict)
    # Seconds a request waits for its flags at most; then defaults, reason ``timeout``.
    evaluation_timeout: float = 0.2
    # Seconds a new process's first decision (and the ASGI lifespan) waits for the first
    # settings answer; a gateway that refuses answers at once, a slow one within this.
    startup_wait: float = 2.0
    # Seconds one gateway lookup (segment membership or user details) may take.
    lookup_timeout: float = 0.1
    # Seconds a "member" answer is cached.
    membership_ttl: float = 300.0
    # Seconds a "not a member" answer is cached.
    non_membership_ttl: float = 60.0
    # Seconds a visitor's user details (location, parsed user agent) are cached.
    user_details_ttl: float = 300.0
    # How old a cached lookup answer may be and still serve while the gateway fails.
    stale_membership_ttl: float = 3600.0
    # Seconds a decision is reused at most (same visitor, context and settings revision); one
    # made on segment answers lives only as long as they do (the membership TTLs).
    decision_ttl: float = 86400.0
    # Entries per cache (decisions, memberships, user details); returning visitors: a fifth.
    cache_size: int = 100_000
    # Seconds between settings refreshes from the gateway.
    settings_refresh_interval: float = 60.0
    # Events (impressions) kept for sending at most: 5 minutes of 500 impressions/s; beyond
    # that, new ones are dropped, counted and logged. While the gateway fails they wait here.
    event_spool_size: int = 150_000
    # Seconds close() (lifespan shutdown, exit) spends sending what is spooled.
    flush_timeout: float = 5.0
    # Request headers the identity_resolver, fallback_user_id and context_enricher read (a
    # session cookie, Authorization): a response that depends on the visitor lists them in Vary.
    resolver_reads: tuple[str, ...] = ("Cookie",)
    # Responses that read flags get ``Cache-Control: private`` unless they set their own.
    cache_control_private: bool = True
    # Add ``Server-Timing: flags;dur=<ms>`` to responses.
    server_timing: bool = False
    # Add ``X-Flags`` listing the decisions (debugging only: it tells visitors their flags).
    debug_header: bool = False
    # Who decides flags: "native" (this project's evaluator, proven equal to the SDK; flags it
    # does not cover go to the SDK), "sdk" (the SDK for everything), or "shadow" (the SDK
    # decides, the evaluator runs beside it and any difference is logged).
    evaluation: str = "native"
    # Let the VWO SDK log at this level; off by default (its lines may hold raw user ids).
    sdk_log_level: str | None = None
    # OpenTelemetry span events, client spans and metrics (needs the [otel] extra).
    otel: bool = False
    # With otel: add a short hash of the user id to each evaluation event (never the identity).
    otel_context_id: bool = False
    # Redis shared by every worker and host (the [redis] extra): memberships, sticky
    # decisions, one impression per visitor and flag. None: each worker on its own.
    redis_url: str | None = None
    # TLS (``rediss://``, ``rediss+cluster://``, ``rediss+sentinel://``): the CA certificates
    # (PEM) Redis's certificate is checked against (None: the system's), and a client
    # certificate and its key when Redis asks for one.
    redis_ca_file: str | None = None
    redis_cert_file: str | None = None
    redis_key_file: str | None = None
    # Seconds one Redis call may take; slower or down, the engine goes on without Redis.
    redis_timeout: float = 0.05
    # Prefix of every Redis key (then the account id).
    redis_prefix: str = "vwo-heap"
    # Seconds a visitor keeps the variation they were bucketed into (sticky decisions).
    sticky_ttl: float = 90 * 86400.0
    # A directory the process may write (None: nothing on disk): impressions are journaled there
    # before the response (a killed process's are sent by the next one), and each settings
    # revision that loads is kept for a start while the gateway is down.
    state_dir: str | None = None
    # Bytes the impression journal may take in state_dir; events beyond it are dropped, counted.
    spool_max_bytes: int = 256 * 1024 * 1024
    # A settings JSON (exported at deploy time) to start from when the gateway is down and
    # nothing newer was kept.
    bootstrap_settings: str | None = None
    # Seconds kept settings (state dir, Redis, bootstrap file) stay usable at a cold start.
    kept_settings_max_age: float = 7 * 86400.0
    # Offline: decide from this flags TOML or settings JSON (a path, or the parsed document),
    # with no gateway and no network; impressions are counted, not sent.
    offline_flags: str | os.PathLike[str] | Mapping[str, Any] | None = None
    # Offline: Heap segments, ``{"<list id>": ["<identity>", ...]}`` (JSON or CSV path, or a dict).
    offline_segments: str | os.PathLike[str] | Mapping[str, Any] | None = None
    proxy_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if self.gateway_ca_file is not None:
            try:
                ssl.create_default_context(cafile=self.gateway_ca_file)
            except (OSError, ValueError, TypeError):  # ssl.SSLError is an OSError
                raise _invalid(
                    "gateway_ca_file",
                    "gateway_ca_file must be a readable PEM file of CA certificates, "
                    f"got {self.gateway_ca_file!r}",
                ) from None
        for name in ("offline_flags", "offline_segments"):
            source = getattr(self, name)
            if not (source is None or isinstance(source, Mapping) or os.path.isfile(source)):
                raise _invalid(name, f"{name} must be a readable file, got {source!r}")
        self._check_location()
        self._check_rest()

    @property
    def offline(self) -> bool:
        return self.offline_flags is not None

    def _check_location(self) -> None:
        """Online, the account, SDK key and gateway are required. Offline each is optional: what
        is given is checked and used, the engine fills the rest in from the settings file."""
        fix = object.__setattr__
        if self.account_id or not self.offline:
            account_id = str(self.account_id).strip() if self.account_id is not None else ""
            if not account_id.isdigit():
                raise _invalid(
                    "account_id",
                    f"account_id must be your VWO account id (digits), got {self.account_id!r}",
                )
            fix(self, "account_id", account_id)
        given = self.sdk_key or not self.offline
        if given and (not isinstance(self.sdk_key, str) or not self.sdk_key.strip()):
            raise _invalid(
                "sdk_key", "sdk_key must be the SDK key of your VWO project (a non-empty string)"
            )
        if self.aliasing and self.offline:
            raise _invalid(
                "aliasing",
                "aliasing needs the VWO gateway (its /user-alias endpoints): offline files hold "
                "no aliases; unset VWO_HEAP_ALIASING, or give a gateway_url, not offline_flags",
            )
        if self.gateway_url or not self.offline:
            try:
                fix(self, "gateway_url", _gateway_url(self.gateway_url))
            except ValueError as exc:
                raise _invalid("gateway_url", str(exc)) from None

    def _check_rest(self) -> None:
        fix = object.__setattr__
        if not isinstance(self.custom_variable, str) or not FLAG_KEY.match(self.custom_variable):
            raise _invalid(
                "custom_variable",
                "custom_variable must be the custom variable name of your VWO rule "
                f"(letters, digits, _ . -), got {self.custom_variable!r}",
            )
        keys = {}
        for name in ("flags", "client_flags"):
            value = getattr(self, name)
            keys[name] = (value,) if isinstance(value, str) else tuple(value)
            for key in keys[name]:
                if not isinstance(key, str) or not FLAG_KEY.match(key):
                    raise _invalid(name, f"{name} must be VWO feature flag keys, got {key!r}")
        fix(self, "client_flags", tuple(dict.fromkeys(keys["client_flags"])))
        fix(self, "flags", tuple(dict.fromkeys(keys["flags"] + keys["client_flags"])))
        if self.heap_app_id is not None and not (
            isinstance(self.heap_app_id, str) and self.heap_app_id.isdigit()
        ):
            raise _invalid(
                "heap_app_id",
                f"heap_app_id must be your Heap app id (digits), got {self.heap_app_id!r}",
            )
        if not isinstance(self.identity_header, str) or not _HEADER.match(self.identity_header):
            raise _invalid(
                "identity_header",
                f"identity_header must be an HTTP header name, got {self.identity_header!r}",
            )
        sources = tuple(self.identity_sources)
        if not sources or set(sources) - set(IDENTITY_SOURCES) or len(set(sources)) != len(sources):
            raise _invalid(
                "identity_sources",
                f"identity_sources must list some of {', '.join(IDENTITY_SOURCES)} once each, "
                f"got {self.identity_sources!r}",
            )
        fix(self, "identity_sources", sources)
        for name in ("identity_resolver", "fallback_user_id", "context_enricher"):
            if getattr(self, name) is not None and not callable(getattr(self, name)):
                raise _invalid(name, f"{name} must be a callable taking the request", TypeError)
        fix(self, "trusted_proxies", tuple(self.trusted_proxies))
        try:
            fix(self, "proxy_networks", tuple(_network(p) for p in self.trusted_proxies))
        except ValueError as exc:
            raise _invalid("trusted_proxies", str(exc)) from None
        defaults = {}
        for key, default in dict(self.flag_defaults).items():
            if not isinstance(default, FlagDefault):
                raise _invalid(
                    "flag_defaults", f"flag_defaults[{key!r}] must be a FlagDefault", TypeError
                )
            defaults[key] = FlagDefault(default.enabled, MappingProxyType(dict(default.variables)))
        fix(self, "flag_defaults", MappingProxyType(defaults))
        if self.client_user_id not in CLIENT_USER_IDS:
            raise _invalid(
                "client_user_id",
                f"client_user_id must be one of {', '.join(CLIENT_USER_IDS)}, "
                f"got {self.client_user_id!r}",
            )
        if self.evaluation not in EVALUATIONS:
            raise _invalid(
                "evaluation",
                f"evaluation must be one of {', '.join(EVALUATIONS)}, got {self.evaluation!r}",
            )
        for name in ("evaluation_timeout", "lookup_timeout"):
            _number(self, name, low=0.001, high=60.0)
        for name in (
            "membership_ttl",
            "non_membership_ttl",
            "user_details_ttl",
            "stale_membership_ttl",
            "decision_ttl",
        ):
            _number(self, name, low=0.0, high=7 * 86400.0)
        _number(self, "settings_refresh_interval", low=1.0, high=86400.0)
        _number(self, "flush_timeout", low=0.0, high=600.0)
        _number(self, "startup_wait", low=0.0, high=60.0)
        _number(self, "redis_timeout", low=0.001, high=10.0)
        _number(self, "sticky_ttl", low=1.0, high=3650 * 86400.0)
        _number(self, "kept_settings_max_age", low=0.0, high=3650 * 86400.0)
        if self.state_dir is not None:
            state_dir = os.fspath(self.state_dir)
            if not state_dir or (os.path.exists(state_dir) and not os.path.isdir(state_dir)):
                raise _invalid(
                    "state_dir",
                    f"state_dir must be a directory the process may write, got {state_dir!r}",
                )
            fix(self, "state_dir", state_dir)
        if self.bootstrap_settings is not None and not os.path.isfile(self.bootstrap_settings):
            raise _invalid(
                "bootstrap_settings",
                "bootstrap_settings must be a readable settings JSON file, "
                f"got {self.bootstrap_settings!r}",
            )
        if self.redis_url is not None and not str(self.redis_url).startswith(REDIS_SCHEMES):
            raise _invalid(
                "redis_url",
                f"redis_url must start with one of {', '.join(REDIS_SCHEMES)} "
                f"(see docs/scale-out.md), got {str(self.redis_url).split('://')[0]!r}://...",
            )
        for name in ("redis_ca_file", "redis_cert_file", "redis_key_file"):
            if getattr(self, name) is not None and not os.path.isfile(getattr(self, name)):
                raise _invalid(
                    name, f"{name} must be a readable PEM file, got {getattr(self, name)!r}"
                )
        if (self.redis_cert_file is None) != (self.redis_key_file is None):
            raise _invalid(
                "redis_cert_file",
                "redis_cert_file and redis_key_file go together (a client certificate)",
            )
        if not isinstance(self.redis_prefix, str) or not FLAG_KEY.match(self.redis_prefix):
            raise _invalid(
                "redis_prefix", f"redis_prefix must be a name, got {self.redis_prefix!r}"
            )
        reads = (
            (self.resolver_reads,) if isinstance(self.resolver_reads, str) else self.resolver_reads
        )
        for header in reads:
            if not isinstance(header, str) or not _HEADER.match(header):
                raise _invalid(
                    "resolver_reads", f"resolver_reads must be header names, got {header!r}"
                )
        fix(self, "resolver_reads", tuple(reads))
        for name, most in (
            ("cache_size", 10_000_000),
            ("event_spool_size", 10_000_000),
            ("spool_max_bytes", 2**40),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
                raise _invalid(
                    name, f"{name} must be a whole number from 1 to {most}, got {value!r}"
                )

    @property
    def header_identity_allowed(self) -> bool:
        return self.trust_client_identity and "header" in self.identity_sources

    @property
    def hooks(self) -> bool:
        """True when an app hook (resolver, fallback user id, enricher) shapes visitors."""
        hooks = (self.identity_resolver, self.fallback_user_id, self.context_enricher)
        return any(hook is not None for hook in hooks)

    @functools.cached_property
    def log_key(self) -> bytes:
        """The key of the identity hashes in logs and telemetry (from the SDK key: stable for
        a deployment, unknown to whoever reads the logs)."""
        return hashlib.blake2b(f"vwo-heap-log:{self.sdk_key}".encode(), digest_size=32).digest()

    @functools.cached_property
    def vary(self) -> tuple[str, ...]:
        """The request headers a visitor's flags can depend on, for ``Vary``."""
        headers: list[str] = []
        if "cookie" in self.identity_sources:  # untrusted, it still gives the bucketing id
            headers.append("Cookie")
        if self.header_identity_allowed:
            headers.append(self.identity_header)
        if self.hooks:
            headers += self.resolver_reads
        unique = {h.lower(): h for h in reversed(headers)}  # once each, the first spelling
        return tuple(unique[h.lower()] for h in dict.fromkeys(h.lower() for h in headers))

    def default_for(self, key: str) -> FlagDefault:
        return self.flag_defaults.get(key, _OFF)

    @classmethod
    def from_env(cls, environ: Mapping[str, Any] | None = None, **overrides: Any) -> Config:
        """Build a Config from ``VWO_*``/``HEAP_*`` variables (``os.environ`` by default).

        Keyword arguments win over the environment; values may be strings (environment) or
        native values (a Flask ``app.config``). Errors name the variable to fix.
        """
        source = os.environ if environ is None else environ
        _say_unknown(source)
        values: dict[str, Any] = {}
        for variable, (name, parse) in ENVIRONMENT.items():
            if source.get(variable) is not None and name not in overrides:  # None: unset
                raw = source[variable]
                try:
                    values[name] = parse(raw)
                except ValueError as exc:
                    raise ValueError(f"{variable}: {exc}, got {raw!r}") from None
        offline = "offline_flags" in values or overrides.get("offline_flags") is not None
        for required in ("VWO_ACCOUNT_ID", "VWO_SDK_KEY", "VWO_GATEWAY_URL"):
            name = ENVIRONMENT[required][0]
            if not offline and name not in values and name not in overrides:
                raise ValueError(
                    f"{required} is not set: it is required (or VWO_HEAP_OFFLINE_FLAGS, offline)"
                )
        values.update(overrides)
        try:
            return cls(**values)
        except (TypeError, ValueError) as exc:
            field_name = getattr(exc, "config_field", None)
            if field_name in VARIABLES and field_name not in overrides:
                raise type(exc)(f"{VARIABLES[field_name]}: {exc}") from None
            raise


_OFF = FlagDefault()


def _invalid(name: str, message: str, kind: type[Exception] = ValueError) -> Exception:
    """An error about field ``name``; ``from_env`` names the variable to fix from it."""
    error = kind(message)
    error.config_field = name  # type: ignore[attr-defined]
    return error


def _gateway_url(url: object) -> str:
    if not isinstance(url, str):
        raise ValueError("gateway_url must be the URL of your VWO gateway service")
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"gateway_url must be an http:// or https:// URL, got {url!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(
            "gateway_url must be scheme://host[:port] only: the VWO SDK ignores a path, "
            f"got {url!r}"
        )
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"gateway_url has an invalid port, got {url!r}") from None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}" + (f":{port}" if port else "")


def _network(value: object) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(str(value).strip(), strict=False)
    except ValueError:
        raise ValueError(
            f"trusted_proxies must hold IP addresses or networks like 10.0.0.0/8, got {value!r}"
        ) from None


def _number(config: Config, name: str, *, low: float, high: float) -> None:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise _invalid(
            name, f"{name} must be a number of seconds from {low:g} to {high:g}, got {value!r}"
        )
    object.__setattr__(config, name, float(value))


def _text(value: Any) -> str:
    return str(value).strip()


def _list(value: Any) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else list(value)
    return tuple(str(item).strip() for item in items if str(item).strip())


def _seconds(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError("must be a number of seconds") from None


def _whole(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError("must be a whole number") from None


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE | _FALSE:
        return text in _TRUE
    raise ValueError("must be true or false")


def _optional(value: Any) -> str | None:
    text = str(value).strip()
    return text or None


def import_hook(value: Any) -> Any:
    """An app hook given as a callable, or as a dotted path (``shop.identity.heap_identity`` or
    ``shop.identity:heap_identity``) imported now: settings can name a function without
    importing it (Django's settings load before its apps' models)."""
    if not isinstance(value, str):
        return value
    path = value.strip()
    module, _, name = path.rpartition(":") if ":" in path else path.rpartition(".")
    if not module or not name:
        raise ValueError(f"must be a callable or a dotted path to one, got {value!r}")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"cannot import {path!r} ({type(error).__name__}: {error})") from None


UNKNOWN_VARIABLE = "%s is not a setting vwo-heap-middleware knows%s: ignored (said once)"
_unknown_said: set[str] = set()


def _say_unknown(source: Mapping[str, Any]) -> None:
    """One warning per ``VWO_HEAP_*`` name nobody reads (a typo), with a did-you-mean."""
    for name in source:
        if not (isinstance(name, str) and name.startswith("VWO_HEAP_")):
            continue
        if name in ENVIRONMENT or name in _unknown_said or name in NOT_CONFIG:
            continue
        _unknown_said.add(name)
        known = {known.removeprefix("VWO_HEAP_"): known for known in ENVIRONMENT}
        close = difflib.get_close_matches(name.removeprefix("VWO_HEAP_"), known, n=1, cutoff=0.75)
        hint = f" (did you mean {known[close[0]]}?)" if close else ""
        logging.getLogger("vwo_heap_middleware").warning(UNKNOWN_VARIABLE, name, hint)


ENVIRONMENT: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "VWO_ACCOUNT_ID": ("account_id", _text),
    "VWO_SDK_KEY": ("sdk_key", _text),
    "VWO_GATEWAY_URL": ("gateway_url", _text),
    "VWO_HEAP_GATEWAY_CA_FILE": ("gateway_ca_file", _optional),
    "VWO_HEAP_CUSTOM_VARIABLE": ("custom_variable", _text),
    "VWO_HEAP_FLAGS": ("flags", _list),
    "VWO_HEAP_CLIENT_FLAGS": ("client_flags", _list),
    "VWO_HEAP_CLIENT_USER_ID": ("client_user_id", _text),
    "HEAP_APP_ID": ("heap_app_id", _optional),
    "VWO_HEAP_IDENTITY_HEADER": ("identity_header", _text),
    "VWO_HEAP_IDENTITY_SOURCES": ("identity_sources", _list),
    "VWO_HEAP_TRUST_CLIENT_IDENTITY": ("trust_client_identity", _flag),
    "VWO_HEAP_TRUSTED_PROXIES": ("trusted_proxies", _list),
    "VWO_HEAP_ALIASING": ("aliasing", _flag),
    "VWO_HEAP_ALIAS_CLIENT_IDENTITIES": ("alias_client_identities", _flag),
    "VWO_HEAP_EVALUATION_TIMEOUT": ("evaluation_timeout", _seconds),
    "VWO_HEAP_LOOKUP_TIMEOUT": ("lookup_timeout", _seconds),
    "VWO_HEAP_MEMBERSHIP_TTL": ("membership_ttl", _seconds),
    "VWO_HEAP_NON_MEMBERSHIP_TTL": ("non_membership_ttl", _seconds),
    "VWO_HEAP_USER_DETAILS_TTL": ("user_details_ttl", _seconds),
    "VWO_HEAP_STALE_MEMBERSHIP_TTL": ("stale_membership_ttl", _seconds),
    "VWO_HEAP_DECISION_TTL": ("decision_ttl", _seconds),
    "VWO_HEAP_CACHE_SIZE": ("cache_size", _whole),
    "VWO_HEAP_SETTINGS_REFRESH": ("settings_refresh_interval", _seconds),
    "VWO_HEAP_EVENT_SPOOL_SIZE": ("event_spool_size", _whole),
    "VWO_HEAP_FLUSH_TIMEOUT": ("flush_timeout", _seconds),
    "VWO_HEAP_STARTUP_WAIT": ("startup_wait", _seconds),
    "VWO_HEAP_RESOLVER_READS": ("resolver_reads", _list),
    "VWO_HEAP_CACHE_CONTROL_PRIVATE": ("cache_control_private", _flag),
    "VWO_HEAP_SERVER_TIMING": ("server_timing", _flag),
    "VWO_HEAP_DEBUG_HEADER": ("debug_header", _flag),
    "VWO_HEAP_EVALUATION": ("evaluation", _text),
    "VWO_HEAP_SDK_LOG_LEVEL": ("sdk_log_level", _optional),
    "VWO_HEAP_OTEL": ("otel", _flag),
    "VWO_HEAP_OTEL_CONTEXT_ID": ("otel_context_id", _flag),
    "VWO_HEAP_REDIS_URL": ("redis_url", _optional),
    "VWO_HEAP_REDIS_TIMEOUT": ("redis_timeout", _seconds),
    "VWO_HEAP_REDIS_CA_FILE": ("redis_ca_file", _optional),
    "VWO_HEAP_REDIS_CERT_FILE": ("redis_cert_file", _optional),
    "VWO_HEAP_REDIS_KEY_FILE": ("redis_key_file", _optional),
    "VWO_HEAP_REDIS_PREFIX": ("redis_prefix", _text),
    "VWO_HEAP_STICKY_TTL": ("sticky_ttl", _seconds),
    "VWO_HEAP_STATE_DIR": ("state_dir", _optional),
    "VWO_HEAP_SPOOL_MAX_BYTES": ("spool_max_bytes", _whole),
    "VWO_HEAP_BOOTSTRAP_SETTINGS": ("bootstrap_settings", _optional),
    "VWO_HEAP_KEPT_SETTINGS_MAX_AGE": ("kept_settings_max_age", _seconds),
    "VWO_HEAP_IDENTITY_RESOLVER": ("identity_resolver", import_hook),
    "VWO_HEAP_FALLBACK_USER_ID": ("fallback_user_id", import_hook),
    "VWO_HEAP_CONTEXT_ENRICHER": ("context_enricher", import_hook),
    "VWO_HEAP_OFFLINE_FLAGS": ("offline_flags", _optional),
    "VWO_HEAP_OFFLINE_SEGMENTS": ("offline_segments", _optional),
}
"""Environment variable -> (Config field, parser). The README documents each."""
NOT_CONFIG = frozenset(
    {"VWO_HEAP_CHROMIUM", "VWO_HEAP_DIFFERENTIAL_CASES", "VWO_HEAP_DIFFERENTIAL_SEED"}
)
"""``VWO_HEAP_*`` names this project's own tests read: not settings, not typos."""
VARIABLES = {name: variable for variable, (name, _) in ENVIRONMENT.items()}
