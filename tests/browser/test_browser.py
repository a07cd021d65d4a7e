"""The same decision in the browser: the shops' pages in headless Chromium, for members and
non-members, read by the package's browser module and by VWO's own web SDK seeded from the
payload. Both must say what the server decided, no variable's markup may run, a flag off the
allow-list must not reach the page, and the web SDK must send no impression of its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3

from examples.demo_setup import heap_cookie
from tests.support import DATA, ROOT, free_port, wait_until_serving
from vwo_heap_middleware.testing.gateway import LocalGateway, load_flags_file

SETTINGS = load_flags_file(DATA / "browser_flags.toml")
ALLOWED = ["premium_checkout", "new_banner", "checkout_color"]
GOLD = ["mira@example.net", "lee@example.net"]
VISITORS = [*GOLD, "someone@example.net", "other@example.org", "third@example.com"]
HOSTILE = "</script><script>alert(1)</script>"
SHOPS = {
    "fastapi": ["-m", "uvicorn", "examples.fastapi_app.app:app", "--port", "{port}"],
    "flask": ["-m", "gunicorn", "examples.flask_app.app:app", "--bind", "127.0.0.1:{port}"],
    "django": ["-m", "uvicorn", "examples.django_app.asgi:application", "--port", "{port}"],
}
READ_IN_THE_PAGE = """
async ({ keys, sdkKeys, settings, seed, gateway }) => {
  const module = await import("/vwo-heap/vwo_heap/flags.js");
  const flags = module.readFlags();
  const mine = {};
  for (const key of keys) {
    mine[key] = { enabled: flags.enabled(key), variables: flags.variables(key),
                  variation: flags.variation(key) };
  }
  const result = { mine, keys: flags.keys(), userId: flags.userId, uuid: flags.uuid };
  if (!seed) return result;
  result.seeded = module.seedVwoStorage(flags);
  const client = await window.vwoSdk.init({
    accountId: String(settings.accountId), sdkKey: settings.sdkKey, settings,
    gatewayService: { url: gateway }, logger: { level: "ERROR" },
  });
  result.theirs = {};
  for (const key of sdkKeys) {
    const flag = await client.getFlag(key, { id: flags.userId });
    const variables = {};
    for (const variable of flag.getVariables()) variables[variable.key] = variable.value;
    result.theirs[key] = { enabled: flag.isEnabled(), variables };
  }
  return result;
}
"""


@pytest.fixture(scope="module")
def gateway() -> Iterator[LocalGateway]:
    with LocalGateway(SETTINGS, {"gold_list": GOLD}) as gateway:
        yield gateway


def start_shop(name: str, gateway: LocalGateway, client_flags: str) -> tuple[Any, str]:
    port = free_port()
    env = {
        **os.environ,
        "VWO_ACCOUNT_ID": str(SETTINGS["accountId"]),
        "VWO_SDK_KEY": SETTINGS["sdkKey"],
        "VWO_GATEWAY_URL": gateway.url,
        "VWO_HEAP_FLAGS": "premium_checkout,new_banner",
        "VWO_HEAP_CLIENT_FLAGS": client_flags,
    }
    command = [sys.executable, *(part.format(port=port) for part in SHOPS[name])]
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    wait_until_serving(process, url)
    return process, url


@pytest.fixture(scope="module", params=sorted(SHOPS))
def shop(request: pytest.FixtureRequest, gateway: LocalGateway) -> Iterator[str]:
    process, url = start_shop(request.param, gateway, ",".join(ALLOWED))
    try:
        yield url
    finally:
        process.terminate()
        process.wait(15)


def server_decisions(url: str, identity: str) -> dict[str, Any]:
    answer = urllib3.request(
        "GET", f"{url}/api/flags?details=1", headers={"Cookie": heap_cookie(identity)}
    )
    assert answer.status == 200
    flags: dict[str, Any] = answer.json()["flags"]
    return flags


class Visit:
    """One visitor's page in a fresh browser context: what the page did, what it tried."""

    def __init__(self, browser: Any, url: str, identity: str, gateway: str) -> None:
        self.gateway = gateway
        self.context = browser.new_context()
        name, _, value = heap_cookie(identity).partition("=")
        self.context.add_cookies([{"name": name, "value": value, "url": url}])
        self.page = self.context.new_page()
        self.dialogs: list[str] = []
        self.elsewhere: list[str] = []  # requests that left the shop and the gateway (aborted)
        self.to_gateway: list[str] = []
        self.shown_bodies: list[str] = []
        self.page.on("dialog", self._dialog)
        self.page.route("**/*", self._route(url))
        self.page.goto(f"{url}/")
        self.page.wait_for_function(
            "!document.getElementById('browser-banner').textContent.includes('not run')"
        )

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)  # an alert() ran: a test fails on it
        dialog.dismiss()

    def _route(self, url: str) -> Any:
        def route(handled: Any) -> None:
            if handled.request.url.startswith(self.gateway):
                self.to_gateway.append(handled.request.url)
                if "variationShown" in handled.request.url:
                    self.shown_bodies.append(handled.request.post_data)
                handled.continue_()
            elif handled.request.url.startswith(url):
                handled.continue_()
            else:
                self.elsewhere.append(handled.request.url)
                handled.abort()

        return route

    def read(self, keys: list[str], seed: bool) -> dict[str, Any]:
        result: dict[str, Any] = self.page.evaluate(
            READ_IN_THE_PAGE,
            {
                "keys": keys,
                "sdkKeys": ALLOWED,  # the flags the page may know, seeded
                "settings": SETTINGS,
                "seed": seed,
                "gateway": self.gateway,
            },
        )
        return result

    def close(self) -> None:
        self.context.close()


@pytest.mark.parametrize("identity", VISITORS)
def test_the_browser_decides_as_the_server(
    browser: Any, web_sdk: Path, shop: str, gateway: LocalGateway, identity: str
) -> None:
    served = server_decisions(shop, identity)
    visit = Visit(browser, shop, identity, gateway.url)
    try:
        visit.page.add_script_tag(path=str(web_sdk))
        seen = visit.read([*ALLOWED, "internal_only"], seed=True)
        banner = visit.page.text_content("#browser-banner")
        page = visit.page.content()
    finally:
        visit.close()
    assert seen["userId"] == identity and seen["keys"] == ALLOWED
    for key in ALLOWED:
        server = served[key]
        expected = {
            "enabled": server["enabled"],
            "variables": server["variables"] if server["enabled"] else {},
        }
        mine = seen["mine"][key]
        assert {k: mine[k] for k in expected} == expected, (key, "the browser module")
        assert mine["variation"] == server["details"]["variation_name"], key
        theirs = seen["theirs"][key]
        assert theirs["enabled"] == server["enabled"], (key, "VWO's web SDK")
        if server["enabled"]:
            assert theirs["variables"] == server["variables"], (key, "VWO's web SDK")
    assert seen["mine"]["internal_only"] == {"enabled": False, "variables": {}, "variation": None}
    assert "internal_only" not in page and "server side only" not in page
    assert banner == f"In the browser: {HOSTILE}", "the variable arrived as text"
    assert visit.dialogs == [], "no script in a variable ran"
    sent = [*visit.to_gateway, *visit.elsewhere]
    assert [u for u in sent if "en=vwo_variationShown" in u] == [], visit.shown_bodies
    enabled = [key for key in ALLOWED if served[key]["enabled"]]
    assert seen["seeded"] == len(enabled), "a stored decision for each flag a rule gave"


def test_a_flag_off_the_allow_list_never_reaches_the_page(
    browser: Any, gateway: LocalGateway
) -> None:
    process, url = start_shop("fastapi", gateway, "new_banner")
    try:
        visit = Visit(browser, url, GOLD[0], gateway.url)
        try:
            seen = visit.read(["premium_checkout", "new_banner"], seed=False)
            page = visit.page.content()
        finally:
            visit.close()
    finally:
        process.terminate()
        process.wait(15)
    assert seen["keys"] == ["new_banner"]
    assert not seen["mine"]["premium_checkout"]["enabled"], "off the list: off in the browser"
    assert "premium_checkout" not in page.split('id="vwo-heap-flags"')[1].split("</script>")[0]
    assert json.loads(page.split('id="vwo-heap-flags">')[1].split("</script>")[0])[
        "flags"
    ].keys() == {"new_banner"}
