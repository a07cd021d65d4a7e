"""Deterministic answers for ``GET /get-user-details``, documented so tests can target them.

Location comes from the IP address: the three documentation networks of RFC 5737 map to fixed
places, loopback and private addresses to ``{"country": "ZZ"}`` ("local"), and anything else
to ``{"country": "US"}``. The user agent is read with a few plain rules (below): enough to
target a browser, an OS or a device type in tests, not a full UA parser.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

LOCATIONS: dict[str, dict[str, str]] = {
    "192.0.2.0/24": {"country": "US", "region": "California", "city": "San Francisco"},
    "198.51.100.0/24": {"country": "DE", "region": "Berlin", "city": "Berlin"},
    "203.0.113.0/24": {"country": "IN", "region": "Delhi", "city": "New Delhi"},
}
_NETWORKS = [(ipaddress.ip_network(net), place) for net, place in LOCATIONS.items()]

_BROWSERS = [
    ("Edge", r"Edg/([\d.]+)"),
    ("Firefox", r"Firefox/([\d.]+)"),
    ("Chrome", r"Chrome/([\d.]+)"),
    ("Safari", r"Version/([\d.]+).*Safari"),
]
_SYSTEMS = [
    ("Android", r"Android ([\d.]+)"),
    ("iOS", r"OS ([\d_]+) like Mac OS X"),
    ("Windows", r"Windows NT ([\d.]+)"),
    ("Mac OS X", r"Mac OS X ([\d_.]+)"),
    ("Linux", r"Linux()"),
]


def user_details(user_agent: str | None, ip_address: str | None) -> dict[str, Any]:
    details: dict[str, Any] = {}
    if ip_address:
        details["location"] = _location(ip_address)
    if user_agent:
        details["userAgent"] = _user_agent(user_agent)
    return details


def _location(ip_address: str) -> dict[str, str]:
    try:
        address = ipaddress.ip_address(ip_address)
    except ValueError:
        return {}
    for network, place in _NETWORKS:
        if address in network:
            return dict(place)
    if address.is_private or address.is_loopback:
        return {"country": "ZZ"}
    return {"country": "US"}


def _user_agent(ua: str) -> dict[str, str]:
    info = {"browser_string": "Other", "browser_version": "", "os": "Other", "os_version": ""}
    for name, pattern in _BROWSERS:
        found = re.search(pattern, ua)
        if found:
            info["browser_string"], info["browser_version"] = name, found.group(1)
            break
    for name, pattern in _SYSTEMS:
        found = re.search(pattern, ua)
        if found:
            info["os"], info["os_version"] = name, found.group(1).replace("_", ".")
            break
    mobile = re.search(r"Mobile|Android|iPhone", ua) is not None
    info["device_type"] = "tablet" if "iPad" in ua else "mobile" if mobile else "desktop"
    info["device"] = "iPhone" if "iPhone" in ua else "iPad" if "iPad" in ua else "Other"
    return info
