"""Generated VWO settings, users and membership answers for the native evaluator's
differential suite; ``Differential`` runs them through the real SDK and the evaluator."""

from __future__ import annotations

import copy
import itertools
import json
import math
import random
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from murmurhash import mrmr

from vwo_heap_middleware.config import Config
from vwo_heap_middleware.evaluation.native import Fallback, NativeSettings
from vwo_heap_middleware.evaluation.outcome import Answers, Event
from vwo_heap_middleware.vwo_sdk import VwoSdk

LISTS = ("vip", "beta", "list-3")
NAMES = ("heap_identity", "plan", "age", "version", "email")
VALUES: tuple[Any, ...] = (
    "vip@example.com",
    "Pro",
    "pro",
    "PRO",
    "12",
    "12.0",
    "1e3",
    "1000",
    "\u0661\u0662",  # Arabic-Indic 12
    "1.2.10",
    "1.10",
    "2",
    "x.1",
    "1.a",
    "1.x",
    "",
    None,
    True,
    False,
    7,
    3.5,
    "\u00fcn\u00ef",
    "a,b",
    " 12 ",
    "nan",
    "inf",
    "user-1",
    "\u00b2",
)
OPERANDS = (
    "Pro",
    "12",
    "1000",
    "True",
    "",
    "lower(PRO)",
    "lower(True)",
    "lower(12.0)",
    "wildcard(*ro)",
    "wildcard(P*)",
    "wildcard(*r*)",
    "wildcard(pro)",
    "wildcard(*)",
    "regex(^P.o$)",
    "regex([)",
    "regex(1.50)",
    "regex(\u00fc)",
    "gt(10)",
    "gte(1.2.10)",
    "lt(2)",
    "lte(1.10)",
    "gt(1.2)",
    "lt(1.a)",
    "inlist(vip)",
    "inlist(beta)",
    "inlist(list-3)",
    "inlist()",
    "1e3",
    "nan",
    "gt(..)",  # the SDK raises comparing "1.x" with it: the evaluator must hand such calls over
)
WEIGHTS: tuple[list[float], ...] = (
    [50, 50],
    [33.33, 33.33, 33.34],
    [10, 0, 90],
    [0, 0],
    [25.5, 74.5],
    [100],
    [40, 40, 40],
    [1, 2, 3, 94],
    [99.999, 0.001],
)
ACCOUNT = 777
SDK_KEY = "diff-key"
_VWO = uuid.uuid5(uuid.NAMESPACE_URL, "https://vwo.com")


def hashed(user_id: str, account: Any) -> str:
    """The SDK's visitor UUID, computed here independently of both evaluators."""
    return uuid.uuid5(uuid.uuid5(_VWO, str(account)), user_id).hex.upper()


class Generator:
    """Random but reproducible settings and users (``seed``)."""

    def __init__(self, seed: int) -> None:
        self.r = random.Random(seed)
        self.known_users = [f"user-{n}" for n in range(6)]

    def operand(self) -> str:
        return self.r.choice(OPERANDS)

    def leaf(self, account: Any) -> dict[str, Any]:
        roll = self.r.random()
        if roll < 0.8:
            return {"custom_variable": {self.r.choice(NAMES): self.operand()}}
        if roll < 0.95:
            users = self.r.sample(self.known_users, 2)
            users.append(hashed(self.r.choice(self.known_users), account))
            return {"user": " , ".join(users)}
        return {"mystery_operator": "x"}

    def segment(self, account: Any, depth: int = 0) -> dict[str, Any]:
        roll = self.r.random()
        if depth >= 3 or roll < 0.45:
            return self.leaf(account)
        if roll < 0.65:
            return {"and": [self.segment(account, depth + 1) for _ in range(self.r.randint(1, 3))]}
        if roll < 0.9:
            return {"or": [self.segment(account, depth + 1) for _ in range(self.r.randint(1, 3))]}
        return {"not": self.segment(account, depth + 1)}

    def maybe_segment(self, account: Any, chance: float = 0.6) -> dict[str, Any]:
        return self.segment(account) if self.r.random() < chance else {}

    def variables(self, cid: int, vid: int) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = [
            {"id": 1, "key": "color", "type": "string", "value": f"c{cid}v{vid}"}
        ]
        if self.r.random() < 0.3:
            found.append({"id": 2, "key": "limits", "type": "json", "value": {"n": vid}})
        return found

    def campaign(self, cid: int, kind: str, account: Any) -> dict[str, Any]:
        r = self.r
        campaign: dict[str, Any] = {
            "id": cid,
            "key": f"campaign{cid}",
            "name": f"campaign{cid}",
            "status": "RUNNING",
            "type": kind,
            "segments": {},
            "isForcedVariationEnabled": False,
            "isAlwaysCheckSegment": False,
            "percentTraffic": 100,
        }
        if r.random() < 0.3:
            campaign["salt"] = r.choice(["salt-a", "salt-b", ""])
        if r.random() < 0.3:
            campaign["isUserListEnabled"] = True
        if kind == "FLAG_ROLLOUT":
            variation = {
                "id": 1,
                "name": "rollout",
                "weight": r.choice([100, 50, 0, 33.33, 99.99, 1, 75]),
                "segments": self.maybe_segment(account),
                "variables": self.variables(cid, 1),
            }
            if r.random() < 0.3:
                variation["salt"] = r.choice(["v-salt", ""])
            campaign["variations"] = [variation]
        elif kind == "FLAG_TESTING":
            weights = r.choice(WEIGHTS)
            campaign["percentTraffic"] = r.choice([100, 50, 0, 1, 99.5, 80])
            campaign["segments"] = self.maybe_segment(account, 0.5)
            campaign["isForcedVariationEnabled"] = r.random() < 0.4
            campaign["variations"] = [
                {
                    "id": vid,
                    "name": f"variation-{vid}",
                    "weight": weight,
                    "segments": self.maybe_segment(account, 0.5),
                    "variables": self.variables(cid, vid),
                }
                for vid, weight in enumerate(weights, start=1)
            ]
        else:
            campaign["variations"] = [
                {
                    "id": vid,
                    "name": f"personal-{vid}",
                    "weight": r.choice([100, 60, 0]),
                    "segments": self.maybe_segment(account),
                    "variables": self.variables(cid, vid),
                }
                for vid in range(1, r.randint(1, 2) + 1)
            ]
        return campaign

    def settings(self) -> dict[str, Any]:
        r = self.r
        account: Any = r.choice([ACCOUNT, ACCOUNT, 31337])  # not always the init account
        campaigns, features = [], []
        cid = 0
        for fid in range(1, r.randint(1, 4) + 1):
            rules = []
            for _ in range(r.randint(0, 4)):
                cid += 1
                kind = r.choice(
                    ["FLAG_ROLLOUT", "FLAG_ROLLOUT", "FLAG_TESTING", "FLAG_PERSONALIZE"]
                )
                campaign = self.campaign(cid, kind, account)
                campaigns.append(campaign)
                rule: dict[str, Any] = {"type": kind, "ruleKey": f"rule{cid}", "campaignId": cid}
                if kind != "FLAG_TESTING" or r.random() < 0.2:
                    rule["variationId"] = r.choice([v["id"] for v in campaign["variations"]])
                rules.append(rule)
            if r.random() < 0.1:
                rules.append({"type": "FLAG_ROLLOUT", "ruleKey": "gone", "campaignId": 999})
            feature: dict[str, Any] = {
                "id": fid,
                "key": f"flag{fid}",
                "name": f"flag{fid}",
                "type": "FEATURE_FLAG",
                "status": "ON",
                "metrics": [],
                "rules": rules,
            }
            if r.random() < 0.2:
                feature["impactCampaign"] = {"campaignId": 500 + fid, "type": "IMPACT"}
            features.append(feature)
        settings = {
            "version": 1,
            "accountId": account,
            "sdkKey": SDK_KEY,
            "features": features,
            "campaigns": campaigns,
        }
        if r.random() < 0.2:
            settings["isWebConnectivityEnabled"] = False
        return settings

    def edge_settings(self) -> dict[str, Any]:
        """One rule per flag, no segments, fractional weights and traffic: with
        ``edge_contexts`` every range boundary is decided for some user."""
        shapes: list[tuple[str, list[float], float]] = [
            ("FLAG_TESTING", [33.33, 33.33, 33.34], 100),
            ("FLAG_TESTING", [99.999, 0.001], 100),
            ("FLAG_TESTING", [10, 0, 90], 99.5),
            ("FLAG_ROLLOUT", [33.33], 100),
            ("FLAG_ROLLOUT", [50], 100),
            ("FLAG_PERSONALIZE", [60], 100),
        ]
        campaigns, features = [], []
        for cid, (kind, weights, traffic) in enumerate(shapes, start=1):
            campaign = self.campaign(cid, kind, ACCOUNT)
            campaign.update(segments={}, percentTraffic=traffic, isForcedVariationEnabled=False)
            campaign["variations"] = [
                {"id": vid, "name": f"v{vid}", "weight": w, "variables": self.variables(cid, vid)}
                for vid, w in enumerate(weights, start=1)
            ]
            campaigns.append(campaign)
            rule = {"type": kind, "ruleKey": f"rule{cid}", "campaignId": cid}
            features.append(
                {
                    "id": cid,
                    "key": f"edge{cid}",
                    "name": f"edge{cid}",
                    "type": "FEATURE_FLAG",
                    "status": "ON",
                    "metrics": [],
                    "rules": [rule],
                }
            )
        return {
            "version": 1,
            "accountId": ACCOUNT,
            "sdkKey": SDK_KEY,
            "features": features,
            "campaigns": campaigns,
        }

    def user_id(self) -> str:
        r = self.r
        n = r.randint(0, 10**6)
        hexa = uuid.UUID(int=r.getrandbits(128)).hex
        return r.choice(
            [
                f"user-{n}",
                r.choice(self.known_users),
                f"\u00fcn\u00ef-{n}",
                "D" + hexa.upper(),
                "J" + hexa,
                "D" + hexa + "\n",
                f"{n:08d}",
                f" spaced {n} ",
                "\U0001f600" * 3,
            ]
        )

    def context(self) -> dict[str, Any]:
        r = self.r
        custom = {name: r.choice(VALUES) for name in r.sample(NAMES, r.randint(0, len(NAMES)))}
        context: dict[str, Any] = {"id": self.user_id(), "custom_variables": custom}
        if r.random() < 0.1:
            context["bucketingSeed"] = r.choice(["seed-1", "seed-2", "  ", 5])
        if r.random() < 0.2:
            context["user_agent"] = "Mozilla/5.0 (X11; Linux x86_64)"
        if r.random() < 0.2:
            context["ip_address"] = r.choice(["203.0.113.9", ""])
        if r.random() < 0.1:
            context["session_id"] = 1234567
        return context

    def edge_contexts(
        self, settings: Mapping[str, Any], per_campaign: int = 3
    ) -> list[dict[str, Any]]:
        """Users whose buckets land on or next to a traffic or variation range boundary:
        where an off-by-one or a floor for a ceil shows."""
        found = []
        for campaign in settings["campaigns"]:
            salt = campaign.get("salt") or campaign["id"]
            if campaign["type"] == "FLAG_TESTING":
                weights = [v["weight"] for v in campaign["variations"]]
                ends = [
                    list(itertools.accumulate(min(rounded(w * 100), 10000) for w in weights))
                    for rounded in (math.ceil, math.floor)
                ]
                key, top = f"{salt}_{settings['accountId']}_{{}}", 10000
                edges = {e + d for end in ends[0] for e in (end,) for d in (0, 1)}
                edges |= {
                    v for a, b in zip(*ends, strict=True) for v in range(min(a, b), max(a, b) + 2)
                }
                traffic = campaign["percentTraffic"]
            else:
                first = campaign["variations"][0]
                key, top, edges = f"{first.get('salt') or campaign['id']}_{{}}", 100, set()
                traffic = first["weight"]
            edges |= {math.floor(traffic) + d for d in (-1, 0, 1)} if top == 100 else set()
            hits = 0
            for _ in range(6000):
                user = f"edge-{self.r.randint(0, 10**9)}"
                if _bucket(key.format(user), top) in edges:
                    context = self.context()
                    context["id"] = user
                    context.pop("bucketingSeed", None)
                    found.append(context)
                    hits += 1
                    if hits == per_campaign:
                        break
        return found

    def memberships(self, context: Mapping[str, Any]) -> dict[tuple[str, str], bool]:
        answers = {}
        for value in context["custom_variables"].values():
            for list_id in LISTS:
                if self.r.random() < 0.9:  # else unknown: the evaluators must say "missing"
                    answers[(list_id, "" if value is None else str(value))] = self.r.random() < 0.5
        return answers


def _bucket(key: str, top: int) -> int:
    ratio: float = (mrmr.hash(key, 1) & 0xFFFFFFFF) / 2**32
    return math.floor(top * ratio + 1)


def normalized(event: Event, context: Mapping[str, Any]) -> str:
    """An event without its timestamps, random number and usage block, as compact JSON in
    the order the keys were written."""
    query = {k: v for k, v in event.query.items() if k not in ("eTime", "random")}
    body = copy.deepcopy(dict(event.body))
    d = body["d"]
    d["msgId"] = d["msgId"].rsplit("-", 1)[0]
    d["event"].pop("time")
    d["event"]["props"].pop("vwoMeta", None)
    if not context.get("session_id"):
        d.pop("sessionId")
    return json.dumps([query, body], ensure_ascii=False)


@dataclass
class Tally:
    cases: int = 0
    native: int = 0  # decided natively and compared
    fallbacks: int = 0  # the evaluator handed the call to the SDK
    unsupported: int = 0  # flags the evaluator leaves to the SDK
    enabled: int = 0
    impressions: int = 0
    mismatches: list[str] = field(default_factory=list)


class Differential:
    """Runs cases through the real (patched) SDK and the native evaluator, and compares."""

    def __init__(self) -> None:
        config = Config(account_id=str(ACCOUNT), sdk_key=SDK_KEY, gateway_url="http://127.0.0.1:9")
        self.sdk = VwoSdk(config, lambda event: None)
        self.sdk.prepare()

    def settings_cases(
        self, settings: dict[str, Any], contexts: list[dict[str, Any]], gen: Generator
    ) -> Iterator[tuple[str, dict[str, Any], dict[tuple[str, str], bool]]]:
        for context in contexts:
            answers = gen.memberships(context)
            for feature in settings["features"]:
                yield feature["key"], context, answers

    def run(self, settings: dict[str, Any], cases: Any, tally: Tally, max_cases: int) -> None:
        self.sdk.load(settings)
        native = NativeSettings(settings, self.sdk.facts())
        for key, context, answers in cases:
            if tally.cases >= max_cases:
                return
            tally.cases += 1
            if key not in native.flags:
                tally.unsupported += 1
                continue
            oracle = self.sdk.evaluate(key, context, Answers(answers))
            try:
                mine = native.evaluate(key, context, Answers(answers))
            except Fallback:
                tally.fallbacks += 1
                continue
            tally.native += 1
            tally.enabled += oracle.enabled
            tally.impressions += len(oracle.events)
            theirs = (
                oracle.error,
                oracle.enabled,
                dict(oracle.variables),
                oracle.missing,
                [normalized(e, context) for e in oracle.events],
                sorted(set(oracle.asked)),  # the segments a decision's details name
            )
            ours = (
                False,
                mine.enabled,
                dict(mine.variables),
                mine.missing,
                [normalized(e, context) for e in mine.events],
                sorted(set(mine.asked)),
            )
            if theirs != ours and len(tally.mismatches) < 20:
                where = json.dumps({"settings": settings, "flag": key, "context": context})
                tally.mismatches.append(f"SDK {theirs}\nnative {ours}\ncase {where[:3000]}")
            elif theirs != ours:
                tally.mismatches.append("...")


def run_generated(seed: int, cases: int, users_per_settings: int = 25) -> Tally:
    gen = Generator(seed)
    tally = Tally()
    diff = Differential()
    for round_ in itertools.count():
        if tally.cases >= cases:
            break
        if round_ % 10 == 0:
            settings = gen.edge_settings()
            contexts = gen.edge_contexts(settings, per_campaign=12)
        else:
            settings = gen.settings()
            contexts = [gen.context() for _ in range(users_per_settings)]
            contexts += gen.edge_contexts(settings)
        diff.run(settings, diff.settings_cases(settings, contexts, gen), tally, cases)
    return tally
