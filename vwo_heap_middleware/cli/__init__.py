"""``vwo-heap`` (also ``python -m vwo_heap_middleware``): why a visitor gets a flag, whether the
code's flag keys exist, and what the settings hold.

Configured from the app's environment (``VWO_ACCOUNT_ID``, ``VWO_SDK_KEY``, ``VWO_GATEWAY_URL``,
``VWO_HEAP_*``), or offline from files (``--flags FILE [--segments FILE]``). Exit status: 0
clean, 1 problems found (``check``) or the flag unknown (``explain``), 2 a configuration, file
or gateway error, said in one line; never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from ..browser import strict_json
from ..config import Config
from ..decision import RULE_TYPES, Reason
from ..engine import FlagEngine
from ..evaluation.flag_index import FlagIndex
from ..gateway.client import GatewayClient, GatewayError
from ..identity import HeapIdentity, clean_identity, identity_refusal
from ..offline.gateway import OfflineGateway
from ..visitor import Visitor
from . import usage

logger = logging.getLogger("vwo_heap_middleware")


DESCRIPTION = (
    "Why a visitor gets a flag, whether your code's flag keys exist, and what the VWO settings\n"
    "hold. Reads the app's environment (VWO_ACCOUNT_ID, VWO_SDK_KEY, VWO_GATEWAY_URL,\n"
    "VWO_HEAP_*), or works offline from files (--flags FILE [--segments FILE])."
)
EPILOG = (
    "exit status: 0 clean; 1 problems found (check) or an unknown flag (explain);\n"
    "2 a configuration, file or gateway error, said in one line.\n"
    "also: python -m vwo_heap_middleware"
)


class Failed(Exception):
    """A problem the command reports in one line, exiting with status 2."""


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.ERROR,
        format="vwo-heap: %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    try:
        result: int = args.command(args, out)
        return result
    except Failed as problem:
        print(f"vwo-heap: {problem}", file=sys.stderr)
        return 2
    except Exception as error:  # an error is one line and status 2; --verbose shows where
        logger.debug("vwo-heap failed", exc_info=True)
        print(f"vwo-heap: {type(error).__name__}: {error}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vwo-heap",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--flags", metavar="FILE", help="offline: a flags file (TOML or JSON)")
    parser.add_argument("--segments", metavar="FILE", help="offline: Heap segments (JSON, CSV)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for VWO")
    parser.add_argument("--verbose", action="store_true", help="the engine's log, at DEBUG")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    explain = commands.add_parser("explain", help="why a visitor gets a flag")
    explain.add_argument("flag", help="the flag key")
    explain.add_argument("--identity", help="the Heap identity (heap.identify)")
    explain.add_argument("--user-id", help="the VWO user id (default: the identity)")
    explain.add_argument(
        "--var", action="append", default=[], metavar="NAME=VALUE", help="a custom variable"
    )
    explain.add_argument("--user-agent", help="the visitor's User-Agent (location/UA rules)")
    explain.add_argument("--ip", help="the visitor's IP address (location rules)")
    explain.add_argument("--json", action="store_true", help="the explanation as JSON")
    explain.set_defaults(command=explain_command)

    check = commands.add_parser("check", help="the flag keys code and templates use")
    check.add_argument(
        "paths", nargs="*", default=["."], help="files and folders to read (default: .)"
    )
    check.add_argument("--json", action="store_true", help="the problems as JSON")
    check.set_defaults(command=check_command)

    settings = commands.add_parser("settings", help="the flags, rules and segments in use")
    settings.add_argument("--raw", action="store_true", help="the settings JSON")
    settings.set_defaults(command=settings_command)
    return parser


def explain_command(args: argparse.Namespace, out: TextIO) -> int:
    config = _config(args)
    visitor = _visitor(config, args)
    engine = _engine(config, args.timeout)
    try:
        explanation = engine.explain(args.flag, visitor, timeout=args.timeout)
    finally:
        engine.close()
    if args.json:
        print(strict_json(explanation.to_dict(), indent=2, default=str), file=out)
    else:
        print("\n".join(explanation.lines()), file=out)
    return 1 if explanation.decision.reason is Reason.UNKNOWN_FLAG else 0


def check_command(args: argparse.Namespace, out: TextIO) -> int:
    config = _config(args)
    settings = _settings(config, args.timeout)
    engine = _engine(config, args.timeout)
    try:
        by_sdk = engine.readiness()["decided_by_sdk"]
    finally:
        engine.close()
    try:
        found = usage.usages(args.paths)
    except usage.Unreadable as error:
        raise Failed(str(error)) from None
    problems = usage.problems(found, settings)
    used = sorted({u.flag for u in found if not u.event} & set(usage.flag_variables(settings)))
    notes = [f"{key} is decided by the VWO SDK: {by_sdk[key]}" for key in used if key in by_sdk]
    if args.json:
        document = {
            "problems": [p.to_dict() for p in problems],
            "notes": notes,
            "flags_used": used,
            "places": len(found),
        }
        print(strict_json(document, indent=2), file=out)
    else:
        for problem in problems:
            print(f"{problem.usage.where}: {problem.message}", file=out)
        for note in notes:
            print(f"note: {note}", file=out)
        verdict = f"{len(problems)} problem(s)" if problems else "no problems"
        print(f"{len(found)} flag references, {len(used)} flags: {verdict}", file=out)
    return 1 if problems else 0


def settings_command(args: argparse.Namespace, out: TextIO) -> int:
    settings = _settings(_config(args), args.timeout)
    if args.raw:
        print(strict_json(settings, indent=2), file=out)
        return 0
    index = FlagIndex.from_settings(settings)
    variables = usage.flag_variables(settings)
    print(f"account {settings.get('accountId')}, revision {index.revision}", file=out)
    for key in sorted(index.flags):
        needs, rules = index.flags[key], index.rules.get(key)
        kinds = ", ".join(f"{n}: {t}" for n, t in variables.get(key, {}).items()) or "none"
        print(f"{key}  (variables {kinds})", file=out)
        for rule in sorted(rules.rules.values(), key=lambda r: r.index) if rules else []:
            names = ", ".join(str(name) for _, name in rule.variations.values())
            kind = RULE_TYPES.get(rule.type, rule.type)
            print(f"  #{rule.index + 1} {rule.key} ({kind}): {names}", file=out)
        for variable, list_id in needs.lists:
            print(f"  Heap segment {list_id!r} through custom variable {variable!r}", file=out)
        if needs.user_details:
            print("  reads location or the parsed user agent (gateway user details)", file=out)
    return 0


def _config(args: argparse.Namespace) -> Config:
    overrides: dict[str, Any] = {}
    if args.flags:
        overrides = {"offline_flags": args.flags, "offline_segments": args.segments}
    elif args.segments:
        raise Failed("--segments goes with --flags (offline)")
    try:
        return Config.from_env(os.environ, **overrides)
    except (TypeError, ValueError) as error:
        raise Failed(f"configuration: {error}") from None


def _settings(config: Config, timeout: float) -> dict[str, Any]:
    """The settings as the engine would load them (the raw JSON)."""
    try:
        if config.offline_flags is not None:
            return OfflineGateway(config.offline_flags, config.offline_segments).settings
        client = GatewayClient(config)
        try:
            return client.fetch_settings(timeout)
        finally:
            client.close()
    except GatewayError as error:
        raise Failed(f"cannot load VWO settings from {config.gateway_url}: {error}") from None
    except (OSError, ValueError) as error:
        raise Failed(f"cannot read the flags file: {error}") from None


def _engine(config: Config, timeout: float) -> FlagEngine:
    try:
        engine = FlagEngine(config)
    except (OSError, ValueError) as error:
        raise Failed(f"cannot read the flags file: {error}") from None
    if not engine.wait_ready(timeout):
        why = engine.readiness()["last_error"] or "no answer"
        engine.close()
        raise Failed(f"cannot load VWO settings from {config.gateway_url}: {why}")
    return engine


def _visitor(config: Config, args: argparse.Namespace) -> Visitor:
    """The visitor the middleware would build from this identity, user id and variables."""
    for option, given in (("--identity", args.identity), ("--user-id", args.user_id)):
        refused = identity_refusal(given) if given is not None else None
        if refused is not None:
            raise Failed(f"{option} refused: {refused} (the middleware would refuse it too)")
    identity = clean_identity(args.identity) if args.identity else None
    user_id = clean_identity(args.user_id) if args.user_id else identity
    heap = HeapIdentity(identity, args.user_id, "command line")
    custom: dict[str, Any] = {}
    for assignment in args.var:
        name, equals, value = assignment.partition("=")
        if not equals or not name:
            raise Failed(f"--var takes NAME=VALUE, got {assignment!r}")
        custom[name] = _value(value)
    if user_id is None:
        return Visitor(heap, None, None)
    if identity is not None:
        custom[config.custom_variable] = identity
    context: dict[str, Any] = {"id": user_id, "custom_variables": custom}
    if args.user_agent:
        context["user_agent"] = args.user_agent
    if args.ip:
        context["ip_address"] = args.ip
    return Visitor(heap, user_id, context)


def _value(text: str) -> Any:
    """A custom variable's value: a number or true/false when it reads as one, else the text."""
    if text in ("true", "false"):
        return text == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text
