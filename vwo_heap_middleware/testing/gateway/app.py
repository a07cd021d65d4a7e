"""The local gateway as a WSGI application: VWO's gateway protocol, records and fault injection."""

from __future__ import annotations

import json
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from ...offline.flags_file import validate_settings
from ...offline.segments_file import Segments, build_segments
from .errors import GatewayDataError
from .user_details import user_details

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

ENDPOINTS = (
    "settings",
    "events",
    "batch_events",
    "check_attribute",
    "user_details",
    "get_alias",
    "set_alias",
)
ATTRIBUTE_SYNC = "vwo_syncVisitorProp"
RECORD_LIMIT = 10_000
MALFORMED_BODY = b'{"this is": not json'


@dataclass(frozen=True)
class Fault:
    """What one endpoint does wrong: wait ``latency`` seconds, answer ``status``, or send junk."""

    latency: float = 0.0
    status: int | None = None
    malformed: bool = False


class Faults:
    """Per-endpoint faults, switchable while the gateway serves."""

    def __init__(self) -> None:
        self._faults: dict[str, Fault] = {}
        self._lock = threading.Lock()
        self._cleared = {endpoint: threading.Event() for endpoint in ENDPOINTS}

    def set(
        self,
        endpoint: str,
        *,
        latency: float = 0.0,
        status: int | None = None,
        malformed: bool = False,
    ) -> None:
        if endpoint not in ENDPOINTS:
            raise ValueError(f"unknown endpoint {endpoint!r}; use one of {', '.join(ENDPOINTS)}")
        if latency < 0 or (status is not None and not 100 <= status <= 599):
            raise ValueError("latency must be >= 0 and status an HTTP status code")
        with self._lock:
            self._faults[endpoint] = Fault(latency, status, malformed)
            self._cleared[endpoint].clear()

    def clear(self, endpoint: str | None = None) -> None:
        """Remove one endpoint's fault, or all; its requests waiting out a latency return now."""
        with self._lock:
            for name in ENDPOINTS if endpoint is None else [endpoint]:
                self._faults.pop(name, None)
                if name in self._cleared:
                    self._cleared[name].set()

    def get(self, endpoint: str) -> Fault | None:
        return self._faults.get(endpoint)

    def wait(self, endpoint: str, seconds: float) -> None:
        self._cleared[endpoint].wait(seconds)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {name: asdict(fault) for name, fault in self._faults.items()}


class Recorder:
    """What the gateway received, for tests and the demo (``GET /_gateway/records``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.requests: Counter[str] = Counter()
            self.events: Counter[str] = Counter()
            self.event_log: deque[dict[str, Any]] = deque(maxlen=RECORD_LIMIT)
            self.membership_lookups: deque[dict[str, Any]] = deque(maxlen=RECORD_LIMIT)
            self.alias_calls: deque[dict[str, Any]] = deque(maxlen=RECORD_LIMIT)
            self.custom_events = self.attribute_syncs = 0
            self.lookup_peers: set[str] = set()  # client addresses that asked for lookups

    def request(self, endpoint: str, peer: str = "") -> None:
        with self._lock:
            self.requests[endpoint] += 1
            if endpoint in ("check_attribute", "user_details") and len(self.lookup_peers) < 65536:
                self.lookup_peers.add(peer)

    def event(self, name: str, query: Mapping[str, str], body: object) -> None:
        with self._lock:
            self.events[name] += 1
            if name == ATTRIBUTE_SYNC:
                self.attribute_syncs += 1
            elif _props(body).get("isCustomEvent") is True:
                self.custom_events += 1
            self.event_log.append({"name": name, "query": dict(query), "body": body})

    def alias_call(self, endpoint: str, query: Mapping[str, str], body: object) -> None:
        with self._lock:
            self.alias_calls.append({"endpoint": endpoint, "query": dict(query), "body": body})

    def membership(self, list_id: str, attribute: str, member: bool, known_list: bool) -> None:
        with self._lock:
            self.membership_lookups.append(
                {
                    "list_id": list_id,
                    "attribute": attribute,
                    "member": member,
                    "known_list": known_list,
                }
            )

    def snapshot(self, summary: bool = False) -> dict[str, Any]:
        with self._lock:
            counts = {
                "requests": dict(self.requests),
                "events": dict(self.events),
                "custom_events": self.custom_events,
                "attribute_syncs": self.attribute_syncs,
            }
            if summary:
                return counts
            return {
                **counts,
                "event_log": list(self.event_log),
                "membership_lookups": list(self.membership_lookups),
                "alias_calls": list(self.alias_calls),
                "lookup_connections": len(self.lookup_peers),  # distinct client (address, port)
            }


class GatewayApp:
    """WSGI app speaking the VWO gateway protocol over in-memory settings and segments."""

    def __init__(
        self,
        settings: Mapping[str, Any],
        segments: Segments | Mapping[str, Iterable[str]] | None = None,
        *,
        enable_control: bool = False,
        on_refuse: Callable[[float], None] | None = None,
    ) -> None:
        self.faults = Faults()
        self.recorder = Recorder()
        self.enable_control = enable_control
        self._on_refuse = on_refuse
        self.set_settings(settings)
        self.set_segments(segments or {})
        self.aliases: dict[str, str] = {}  # alias id -> the user id it stands for
        self._aliases_lock = threading.Lock()
        rules = [
            Rule("/server-side/v2-settings", endpoint="settings", methods=["GET"]),
            Rule("/server-side/v2-pull", endpoint="settings", methods=["GET"]),
            Rule("/events/t", endpoint="events", methods=["POST"]),
            Rule("/server-side/batch-events-v2", endpoint="batch_events", methods=["POST"]),
            Rule("/check-attribute", endpoint="check_attribute", methods=["GET"]),
            Rule("/get-user-details", endpoint="user_details", methods=["GET"]),
            Rule("/user-alias/getAliasUserId", endpoint="get_alias", methods=["GET"]),
            Rule("/user-alias/setUserAlias", endpoint="set_alias", methods=["POST"]),
            Rule("/_gateway/health", endpoint="health", methods=["GET"]),
            Rule("/_gateway/records", endpoint="records", methods=["GET"]),
            Rule("/_gateway/faults", endpoint="control_faults", methods=["GET", "POST", "DELETE"]),
            Rule("/_gateway/settings", endpoint="control_settings", methods=["PUT"]),
            Rule("/_gateway/segments", endpoint="control_segments", methods=["PUT"]),
            Rule("/_gateway/refuse", endpoint="control_refuse", methods=["POST"]),
        ]
        self.url_map = Map(rules)

    def set_settings(self, settings: Mapping[str, Any]) -> None:
        validate_settings(dict(settings), source="settings")
        self.settings_body = json.dumps(settings).encode()
        self.account_id = str(settings.get("accountId", ""))
        self.sdk_key = settings.get("sdkKey")

    def set_segments(self, segments: Segments | Mapping[str, Iterable[str]]) -> None:
        self.segments = build_segments(segments)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request = Request(environ)
        if request.method == "OPTIONS":  # a browser's preflight (VWO's web SDK on a page)
            response = Response(status=204)
            wanted = request.headers.get("Access-Control-Request-Headers")
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
            if wanted:
                response.headers["Access-Control-Allow-Headers"] = wanted
        else:
            try:
                endpoint, _ = self.url_map.bind_to_environ(environ).match()
                response = self.dispatch(str(endpoint), request)
            except (NotFound, MethodNotAllowed) as exc:
                response = exc.get_response()
            except HTTPException as exc:  # pragma: no cover - defensive
                response = exc.get_response()
        # Any page may call it, as VWO's own gateway lets web SDKs do: a development server.
        response.headers["Access-Control-Allow-Origin"] = "*"
        return response(environ, start_response)

    def dispatch(self, endpoint: str, request: Request) -> Response:
        if endpoint in ENDPOINTS:
            peer = f"{request.remote_addr}:{request.environ.get('REMOTE_PORT', '')}"
            self.recorder.request(endpoint, peer)
            fault = self.faults.get(endpoint)
            if fault is not None:
                if fault.latency:
                    self.faults.wait(endpoint, fault.latency)
                if fault.status is not None:
                    return _json({"error": f"injected fault: HTTP {fault.status}"}, fault.status)
                if fault.malformed:
                    return Response(MALFORMED_BODY, content_type="application/json")
        elif endpoint.startswith("control_") and not self.enable_control:
            return _json({"error": "control endpoints are off; start with --enable-control"}, 404)
        handler: Callable[[Request], Response] = getattr(self, f"on_{endpoint}")
        return handler(request)

    def on_settings(self, request: Request) -> Response:
        account = request.args.get("a")
        if account is not None and self.account_id and account != self.account_id:
            return _json({"error": f"unknown account {account}"}, 400)
        if self.sdk_key and request.args.get("i") not in (None, self.sdk_key):
            return _json({"error": "sdk key does not match this account"}, 400)
        return Response(self.settings_body, content_type="application/json")

    def on_events(self, request: Request) -> Response:
        body = request.get_json(silent=True)
        self.recorder.event(request.args.get("en", ""), request.args, body)
        return _json({"status": "ok"})

    def on_batch_events(self, request: Request) -> Response:
        body = request.get_json(silent=True)
        events = body.get("ev", []) if isinstance(body, dict) else []
        for event in events if isinstance(events, list) else []:
            name = (
                event.get("d", {}).get("event", {}).get("name", "")
                if isinstance(event, dict)
                else ""
            )
            self.recorder.event(str(name), request.args, event)
        return _json({"status": "ok"})

    def on_check_attribute(self, request: Request) -> Response:
        list_id = request.args.get("listId", "")
        attribute = request.args.get("attribute", "")
        members = self.segments.get(list_id)
        member = members is not None and attribute in members
        self.recorder.membership(list_id, attribute, member, members is not None)
        return _json(member)

    def on_user_details(self, request: Request) -> Response:
        return _json(user_details(request.args.get("userAgent"), request.args.get("ipAddress")))

    def on_get_alias(self, request: Request) -> Response:
        """``userId``: a JSON array of ids; the records of those that are aliases."""
        self.recorder.alias_call("get", request.args, None)
        try:
            ids = json.loads(request.args.get("userId", ""))
        except ValueError:
            ids = None
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            return _json({"error": "userId must be a JSON array of user ids"}, 400)
        with self._aliases_lock:
            found = [(i, self.aliases.get(i)) for i in ids]
        return _json([{"userId": user, "aliasId": alias} for alias, user in found if user])

    def on_set_alias(self, request: Request) -> Response:
        """Body ``{"userId", "aliasId"}``: ``aliasId`` now stands for ``userId`` (a second
        link of an alias replaces the first, so a client that does not ask first is seen)."""
        body = request.get_json(silent=True)
        self.recorder.alias_call("set", request.args, body)
        user_id, alias_id = _text(body, "userId"), _text(body, "aliasId")
        if not (user_id and alias_id):
            return _json({"error": 'send {"userId": ..., "aliasId": ...}'}, 400)
        if user_id == alias_id:
            return _json({"error": "userId and aliasId cannot be the same"}, 400)
        with self._aliases_lock:
            self.aliases[alias_id] = user_id
        return _json({"isAliasSet": True})

    def on_health(self, request: Request) -> Response:
        return _json({"status": "ok"})

    def on_records(self, request: Request) -> Response:
        return _json(self.recorder.snapshot(summary="summary" in request.args))

    def on_control_faults(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.faults.clear(request.args.get("endpoint"))
        elif request.method == "POST":
            body = request.get_json(silent=True)
            if not isinstance(body, dict):
                return _json({"error": "send a JSON object"}, 400)
            try:
                self.faults.set(
                    str(body.get("endpoint")),
                    latency=float(body.get("latency", 0)),
                    status=body.get("status"),
                    malformed=bool(body.get("malformed", False)),
                )
            except (TypeError, ValueError) as exc:
                return _json({"error": str(exc)}, 400)
        return _json(self.faults.to_dict())

    def on_control_settings(self, request: Request) -> Response:
        return self._replace(request, self.set_settings)

    def on_control_segments(self, request: Request) -> Response:
        return self._replace(request, self.set_segments)

    def on_control_refuse(self, request: Request) -> Response:
        seconds = request.args.get("seconds", type=float)
        if self._on_refuse is None or seconds is None or not 0 < seconds <= 600:
            return _json({"error": "give ?seconds= from 0 to 600"}, 400)
        self._on_refuse(seconds)
        return _json({"refusing_for": seconds})

    def _replace(self, request: Request, setter: Callable[[Any], None]) -> Response:
        try:
            setter(request.get_json(force=True))
        except (GatewayDataError, HTTPException) as exc:
            return _json({"error": str(exc)}, 400)
        return _json({"status": "ok"})


def _text(body: object, key: str) -> str:
    """``body[key]`` when it is a non-blank string, else ``""``."""
    value = body.get(key) if isinstance(body, dict) else None
    return value if isinstance(value, str) and value.strip() else ""


def _props(body: object) -> Mapping[str, Any]:
    """An event's ``d.event.props`` (empty when it has none)."""
    for key in ("d", "event", "props"):
        body = body.get(key) if isinstance(body, dict) else None
    return body if isinstance(body, dict) else {}


def _json(value: object, status: int = 200) -> Response:
    return Response(json.dumps(value), status=status, content_type="application/json")
