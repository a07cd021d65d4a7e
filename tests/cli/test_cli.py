"""``vwo-heap``: explain names what the running shop serves (online against the local gateway
and offline from the files), check finds a misspelt key, settings summarises; every failure is
one line and a non-zero status."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
import urllib3

from examples.demo_setup import heap_cookie
from tests.support import (
    DEMO_FLAGS,
    DEMO_SEGMENTS,
    ROOT,
    free_port,
    gateway_env,
    wait_until_serving,
)
from vwo_heap_middleware.cli import usage
from vwo_heap_middleware.testing.gateway import LocalGateway

VISITORS = ["ada@example.com", "grace@example.com", "linus.t@example.org", "bob@example.com"]
FLAGS = ["premium_checkout", "new_banner"]
OFFLINE = ["--flags", str(DEMO_FLAGS), "--segments", str(DEMO_SEGMENTS)]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vwo_heap_middleware", *args],
        cwd=ROOT,
        env=env or gateway_env(None),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def shop() -> Iterator[tuple[LocalGateway, str]]:
    """The FastAPI shop on uvicorn, its X-Flags header on, against the demo gateway."""
    with LocalGateway.from_files(flags_file=DEMO_FLAGS, segments_file=DEMO_SEGMENTS) as gateway:
        port = free_port()
        env = gateway_env(
            gateway, VWO_HEAP_DEBUG_HEADER="true", VWO_HEAP_FLAGS="premium_checkout,new_banner"
        )
        command = [sys.executable, "-m", "uvicorn", "examples.fastapi_app.app:app", "--port"]
        with subprocess.Popen(
            [*command, str(port), "--log-level", "warning"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ) as server:
            url = f"http://127.0.0.1:{port}"
            try:
                wait_until_serving(server, url)
                yield gateway, url
            finally:
                server.terminate()
                server.wait(15)


def served(url: str, identity: str) -> dict[str, dict[str, str]]:
    """What the shop serves a visitor, per flag, as its X-Flags header says it."""
    response = urllib3.request("GET", f"{url}/", headers={"Cookie": heap_cookie(identity)})
    assert response.status == 200
    flags: dict[str, dict[str, str]] = {}
    for entry in response.headers["X-Flags"].split(", "):
        key, _, parts = entry.partition("=")
        fields = parts.split(";")
        named = dict(part.split("=", 1) for part in fields[2:] if "=" in part)
        named["state"] = fields[0]
        segments = [unquote(p.split("=", 1)[1]) for p in fields if p.startswith("segment=")]
        named["segment"] = ",".join(segments)
        flags[unquote(key)] = named
    return flags


def explained(document: dict[str, Any]) -> dict[str, str]:
    details = document["decision"]["details"]
    found = {"state": "on" if document["decision"]["enabled"] else "off"}
    if details["rule_key"] is not None:
        found["rule"] = details["rule_key"]
        found["variation"] = details["variation_name"]
    found["segment"] = ",".join(f"{k}:{v}" for k, v in details["segments"].items())
    return found


@pytest.mark.parametrize("where", ["online", "offline"])
def test_explain_names_what_the_running_shop_serves(
    where: str, shop: tuple[LocalGateway, str]
) -> None:
    gateway, url = shop
    for identity in VISITORS:
        serving = served(url, identity)
        for flag in FLAGS:
            args = ["explain", flag, "--identity", identity, "--json"]
            done = (
                run(*OFFLINE, *args) if where == "offline" else run(*args, env=gateway_env(gateway))
            )
            assert done.returncode == 0, done.stderr
            document = json.loads(done.stdout)
            assert explained(document) == {
                k: v for k, v in serving[flag].items() if k != "cached" and v != ""
            } | (
                {"segment": serving[flag]["segment"]}
                if serving[flag]["segment"]
                else {"segment": ""}
            ), (
                identity,
                flag,
            )
            assert document["rules"][0]["verdict"].startswith(
                "gave variation" if serving[flag]["state"] == "on" else "not in the segment"
            )


def test_explain_prints_each_check(shop: tuple[LocalGateway, str]) -> None:
    gateway, _ = shop
    done = run(
        "explain", "premium_checkout", "--identity", "bob@example.com", env=gateway_env(gateway)
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "premium_checkout: OFF (not_targeted)"
    assert (
        "[no ] custom variable 'heap_identity' = 'bob@example.com' in Heap segment "
        "'heap_premium_users': not_member" in done.stdout
    )
    assert "=> not in the segment" in done.stdout


def test_check_passes_on_the_shop_and_finds_a_misspelt_key(tmp_path: Path) -> None:
    clean = run(*OFFLINE, "check", "examples/")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert clean.stdout.strip().endswith("no problems")
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    planted = tmp_path / "examples" / "test_premium.py"
    planted.write_text(
        "from vwo_heap_middleware.testing import override_flags\n\n\n"
        "def test_premium(client):\n"
        '    with override_flags({"premum_checkout": True}):\n'
        '        assert client.get("/premium").status_code == 200\n',
        encoding="utf-8",
    )
    found = run(*OFFLINE, "check", str(tmp_path / "examples"), "--json")
    assert found.returncode == 1, found.stderr
    (problem,) = json.loads(found.stdout)["problems"]
    assert problem["path"] == str(planted) and problem["line"] == 5
    assert problem["message"] == "unknown flag 'premum_checkout' (did you mean 'premium_checkout'?)"


def test_check_names_unknown_variables_and_defaults_of_the_wrong_type(tmp_path: Path) -> None:
    (tmp_path / "views.py").write_text(
        "def page(flags):\n"
        '    flags.variable("premium_checkout", "discount_pct", "15%")\n'
        '    flags.variable("premium_checkout", "tier", "x")\n'
        '    return flags.variable("premium_checkout", "discount_pct", 0)\n',
        encoding="utf-8",
    )
    (tmp_path / "page.html").write_text(
        '{% load vwo_heap %}{% flag_variable "new_banner" "colour" "red" %}\n'
        "{{ flags.variable('new_banner', 'text', true) }}\n",
        encoding="utf-8",
    )
    done = run(*OFFLINE, "check", str(tmp_path))
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert lines[:4] == [
        f"{tmp_path / 'page.html'}:1: flag 'new_banner' has no variable 'colour' "
        "(did you mean 'color'?)",
        f"{tmp_path / 'page.html'}:2: the default of new_banner.text is bool (True); "
        "VWO's variable is string",
        f"{tmp_path / 'views.py'}:2: the default of premium_checkout.discount_pct is str "
        "('15%'); VWO's variable is integer",
        f"{tmp_path / 'views.py'}:3: flag 'premium_checkout' has no variable 'tier' "
        "(did you mean 'tier_label'?)",
    ]
    assert lines[-1] == "5 flag references, 2 flags: 4 problem(s)"


def test_settings_summarises_and_gives_the_raw_json() -> None:
    summary = run(*OFFLINE, "settings")
    assert summary.returncode == 0, summary.stderr
    assert "premium_checkout  (variables tier_label: string, discount_pct: integer)" in (
        summary.stdout
    )
    assert "  Heap segment 'heap_premium_users' through custom variable 'heap_identity'" in (
        summary.stdout
    )
    raw = run(*OFFLINE, "settings", "--raw")
    assert json.loads(raw.stdout)["accountId"] == 123456


@pytest.mark.parametrize(
    ("args", "env", "says", "status"),
    [
        (
            ["settings"],
            {"VWO_ACCOUNT_ID": "1", "VWO_SDK_KEY": "k", "VWO_GATEWAY_URL": "http://127.0.0.1:9"},
            "cannot load VWO settings from http://127.0.0.1:9",
            2,
        ),
        (
            ["--flags", "/nonexistent.toml", "settings"],
            {},
            "offline_flags must be a readable file",
            2,
        ),
        (["settings"], {}, "VWO_ACCOUNT_ID is not set", 2),
        ([*OFFLINE, "explain", "nope", "--identity", "a@b.c"], {}, "", 1),
        ([*OFFLINE, "explain", "new_banner", "--var", "x"], {}, "--var takes NAME=VALUE", 2),
    ],
)
def test_failures_are_one_line_and_a_status(
    args: list[str], env: dict[str, str], says: str, status: int
) -> None:
    done = run("--timeout", "2", *args, env=gateway_env(None, **env))
    assert done.returncode == status, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert says in done.stderr


def test_a_refused_key_says_so(shop: tuple[LocalGateway, str]) -> None:
    gateway, _ = shop
    done = run("--timeout", "3", "settings", env={**gateway_env(gateway), "VWO_SDK_KEY": "wrong"})
    assert done.returncode == 2
    assert "sdk key does not match this account" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def strict(text: str) -> Any:
    """``text`` parsed as strict JSON (``NaN``/``Infinity`` refused, as ``JSON.parse`` does)."""

    def refuse(constant: str) -> Any:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_explain_json_is_strict_json() -> None:
    done = run(*OFFLINE, "explain", "new_banner", "--identity", "a@b.c", "--var", "x=nan", "--json")
    assert done.returncode == 0, done.stderr
    assert strict(done.stdout)["context"]["custom_variables"]["x"] is None


@pytest.mark.parametrize(
    ("identity", "why"),
    [("a\x01b", "control characters"), ("x" * 300, "longer than 255"), ("NULL", "no identity")],
    ids=["control", "too-long", "null"],
)
def test_explain_says_a_refused_identity_was_refused(identity: str, why: str) -> None:
    """Issue: it said "no Heap identity or user id" and exited 0."""
    done = run(*OFFLINE, "explain", "new_banner", "--identity", identity)
    assert done.returncode == 2 and "--identity refused" in done.stderr and why in done.stderr


def test_check_refuses_a_path_it_cannot_read(tmp_path: Path) -> None:
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    for path in (tmp_path / "no-such-dir", loop):
        done = run(*OFFLINE, "check", str(path))
        assert done.returncode == 2, done.stdout + done.stderr
        assert "cannot read" in done.stderr and "Traceback" not in done.stderr


def test_check_on_hostile_trees(tmp_path: Path) -> None:
    """A FIFO named like a template is skipped (it blocked for ever); a 3,000-term chain is an
    error (status 2, one line), not a traceback with status 1."""
    os.mkfifo(tmp_path / "waits.html")
    (tmp_path / "ok.html").write_text("{{ flags.enabled('new_banner') }}")
    done = run(*OFFLINE, "check", str(tmp_path))
    assert done.returncode == 0 and "1 flag references" in done.stdout, done.stderr
    (tmp_path / "deep.py").write_text("x = " + " + ".join(["1"] * 3000) + "\n")
    done = run(*OFFLINE, "check", str(tmp_path))
    assert done.returncode == 2 and "nested too deeply" in done.stderr
    assert "Traceback" not in done.stderr


def test_check_numbers_lines_in_linear_time(tmp_path: Path) -> None:
    line = "<p>{{ flags.enabled('new_banner') }}</p>\n"
    template = tmp_path / "big.html"
    template.write_text(line * 100_000)  # 4 MB, 100,000 references (27 s before)
    started = time.monotonic()
    found = usage.usages([template])
    assert time.monotonic() - started < 10.0
    assert [u.line for u in found[-2:]] == [99_999, 100_000]


def test_check_reads_client_flags_and_override_variables(tmp_path: Path) -> None:
    """Issue: misspelt client flags and override variables passed unnoticed."""
    (tmp_path / "settings.py").write_text(
        'VWO_HEAP = {"flags": ("premium_checkout",), "client_flags": ("new_baner",)}\n',
        encoding="utf-8",
    )
    (tmp_path / ".env").write_text("VWO_HEAP_CLIENT_FLAGS=new_banner,premium_chekout\n")
    (tmp_path / "test_views.py").write_text(
        "def test_it(flag_overrides):\n"
        '    flag_overrides.set("premium_checkout", enabled=True, variables={"tier": "Gold"})\n',
        encoding="utf-8",
    )
    done = run(*OFFLINE, "check", str(tmp_path))
    assert done.returncode == 1
    said = done.stdout
    assert "unknown flag 'premium_chekout' (did you mean 'premium_checkout'?)" in said
    assert "unknown flag 'new_baner' (did you mean 'new_banner'?)" in said
    assert "flag 'premium_checkout' has no variable 'tier' (did you mean 'tier_label'?)" in said


def test_explain_suggests_the_flag_meant() -> None:
    done = run(*OFFLINE, "explain", "premium_chekout", "--identity", "a@b.c")
    assert done.returncode == 1 and "did you mean 'premium_checkout'?" in done.stdout


def test_help_is_whole_and_every_option_says_what_it_is() -> None:
    """Issue: ``--help`` was cut mid-sentence with reST markup; several options had no help."""
    import argparse

    from vwo_heap_middleware.cli import _parser

    top = run("--help").stdout
    assert "``" not in top and "exit status" in top and "offline from files" in top
    parser = _parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for name, command in commands.choices.items():
        for action in command._actions:
            assert action.help, f"vwo-heap {name} {action.dest} has no help text"


def test_check_names_a_conversion_no_flag_measures(tmp_path: Path) -> None:
    (tmp_path / "views.py").write_text(
        "def buy(request):\n"
        '    request.state.flags.track("purchase", {"revenue": 1})\n'
        '    request.state.flags.track("purchse")\n',
        encoding="utf-8",
    )
    done = run(*OFFLINE, "check", str(tmp_path))
    assert done.returncode == 1
    assert done.stdout.splitlines()[0] == (
        f"{tmp_path / 'views.py'}:3: no flag measures the event 'purchse' "
        "(did you mean 'purchase'?)"
    )


def test_explain_says_when_the_user_id_came_through_an_alias(demo_gateway: LocalGateway) -> None:
    demo_gateway.app.aliases["grace@example.com"] = "8001002003004005"  # linked at a login
    env = gateway_env(demo_gateway, VWO_HEAP_ALIASING="true")
    done = run("explain", "premium_checkout", "--identity", "grace@example.com", env=env)
    assert done.returncode == 0, done.stderr
    assert "user id '8001002003004005'" in done.stdout
    assert "the user id came through an alias: VWO links 'grace@example.com' to it" in done.stdout
    plain = run("explain", "premium_checkout", "--identity", "grace@example.com", "--json", env=env)
    assert json.loads(plain.stdout)["alias_of"] == "grace@example.com"
