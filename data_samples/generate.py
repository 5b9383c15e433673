"""Write the realistic sample scenarios ``orders.jsonl`` and ``accounts.jsonl``.

Deterministic: the same seed writes byte-identical files, so the committed
files can always be regenerated and reviewed as a diff::

    python data_samples/generate.py            # rewrite both next to this file
    python data_samples/generate.py --check    # exit 1 if they differ from a fresh run

Two domains as an aether deployment would store them:

* orders (``order-…``): OrderPlaced, ItemAdded, ItemRemoved, DiscountApplied,
  PaymentReceived, OrderShipped, OrderDelivered, OrderCancelled, RefundIssued;
  a snapshot every ``ORDER_SNAPSHOT_EVERY`` events.
* accounts (``account-…``): AccountOpened, Deposited, Withdrawn,
  InterestCredited, OverdraftLimitChanged, AccountFrozen, AccountUnfrozen,
  AccountClosed; balances add up; a snapshot every ``ACCOUNT_SNAPSHOT_EVERY``
  events.

Most events carry what real deployments add around the six keys of the Go
store's JSON (``commandId``, ``metadata``): they go to the scenario's
``extra`` and must survive a load and an export.

Time. Each lifecycle is simulated over ``SIMULATED_DAYS`` days, then the
whole stream is compressed into the last ``WINDOW_SECONDS`` before the
moment it is seeded (``"at": "now-…ms"``), keeping order. Why: a seeded
message is stored *now*, and an event whose timestamp is more than five
minutes from its store time is a ``clock_skew`` finding. Compressed, the
files are free of findings whenever they are seeded; only the two that
every stream the Go store creates gets remain (``immutability_not_enforced``
and ``retention_expiry``), declared in each file's ``expect`` line.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SEED = 20261127
SIMULATED_DAYS = 30
# Under the 5-minute clock_skew threshold with a minute to spare.
WINDOW_SECONDS = 240
N_ORDERS = 180
N_ACCOUNTS = 90
ORDER_SNAPSHOT_EVERY = 5
ACCOUNT_SNAPSHOT_EVERY = 10
EXPECT = {"immutability_not_enforced": 1, "retention_expiry": 1}
DAY = 86_400.0

CATALOGUE = [
    ("SKU-1001", "Espresso beans 1 kg", 18.90), ("SKU-1002", "Filter coffee 500 g", 8.50),
    ("SKU-2001", "Ceramic mug", 9.90), ("SKU-2002", "Travel mug", 21.00),
    ("SKU-3001", "Burr grinder", 129.00), ("SKU-3002", "Pour-over kettle", 54.00),
    ("SKU-4001", "Paper filters (100)", 4.20), ("SKU-4002", "Descaler", 7.80),
    ("SKU-5001", "Green tea 250 g", 11.40), ("SKU-5002", "Chai spice mix", 6.30),
]
CITIES = [("DE", "Berlin"), ("DE", "Hamburg"), ("FR", "Lyon"), ("NL", "Utrecht"), ("AT", "Vienna"), ("PL", "Kraków")]
SOURCES = ["checkout-api", "mobile-app", "back-office", "batch-settlement"]


@dataclass
class Step:
    """One scenario line before serialising; ``t`` is simulated seconds."""

    t: float
    op: str
    actor: str
    version: int
    type: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] | None = None


def money(value: float) -> float:
    return round(value + 1e-9, 2)


class Actor:
    """Collects one actor's steps: versions count up, snapshots every N events."""

    def __init__(self, actor_id: str, start: float, snapshot_every: int, state: Callable[[], dict[str, Any]]):
        self.id, self.t, self.every, self.state = actor_id, start, snapshot_every, state
        self.version = 0
        self.steps: list[Step] = []

    def emit(self, rng: random.Random, kind: str, data: dict[str, Any], *, after: float, source: str) -> None:
        self.t += after
        self.version += 1
        extra: dict[str, Any] | None = None
        if rng.random() < 0.85:  # most come from a command handler; a few from jobs without one
            extra = {"commandId": f"cmd-{rng.getrandbits(48):012x}",
                     "metadata": {"source": source, "correlationId": f"corr-{rng.getrandbits(32):08x}"}}
        self.steps.append(Step(self.t, "event", self.id, self.version, kind, data, extra))
        if self.version % self.every == 0:
            self.steps.append(Step(self.t + 0.001, "snapshot", self.id, self.version, data=self.state()))


# --- orders ---------------------------------------------------------------------------------


def simulate_order(rng: random.Random, number: int, customers: list[str]) -> list[Step]:
    """One order's lifecycle: placed, filled, paid, shipped, delivered; or
    cancelled on the way (and refunded when it was paid)."""
    state: dict[str, Any] = {"status": "placed", "items": {}, "total": 0.0, "paid": 0.0}
    order = Actor(f"order-{number}", rng.uniform(0, SIMULATED_DAYS * 0.9) * DAY, ORDER_SNAPSHOT_EVERY,
                  lambda: json.loads(json.dumps(state)))
    customer = rng.choice(customers)
    country, city = rng.choice(CITIES)
    channel = rng.choices(["web", "mobile", "store"], [6, 3, 1])[0]
    source = "mobile-app" if channel == "mobile" else "checkout-api"
    state["customerId"] = customer
    order.emit(rng, "OrderPlaced", {"customerId": customer, "channel": channel, "currency": "EUR",
                                    "shippingAddress": {"country": country, "city": city}}, after=0, source=source)

    def add_item() -> None:
        sku, name, price = rng.choice(CATALOGUE)
        quantity = rng.choices([1, 2, 3], [6, 3, 1])[0]
        state["items"][sku] = state["items"].get(sku, 0) + quantity
        state["total"] = money(state["total"] + quantity * price)
        order.emit(rng, "ItemAdded", {"sku": sku, "name": name, "quantity": quantity, "unitPrice": price},
                   after=rng.uniform(5, 300), source=source)

    for _ in range(rng.choices([1, 2, 3, 4, 5], [3, 4, 3, 2, 1])[0]):
        add_item()
    if rng.random() < 0.15 and len(state["items"]) > 1:
        sku = rng.choice(sorted(state["items"]))
        price = next(p for s, _, p in CATALOGUE if s == sku)
        quantity = state["items"].pop(sku)
        state["total"] = money(state["total"] - quantity * price)
        order.emit(rng, "ItemRemoved", {"sku": sku, "quantity": quantity}, after=rng.uniform(10, 600), source=source)
    if rng.random() < 0.2:
        percent = rng.choice([5, 10, 15])
        state["total"] = money(state["total"] * (100 - percent) / 100)
        order.emit(rng, "DiscountApplied", {"code": f"SAVE{percent}", "percent": percent}, after=rng.uniform(5, 120),
                   source=source)
    if rng.random() < 0.06:  # abandoned before paying
        state["status"] = "cancelled"
        order.emit(rng, "OrderCancelled", {"reason": "payment_timeout"}, after=rng.uniform(0.5, 2) * DAY,
                   source="batch-settlement")
        return order.steps
    payment = f"pay-{rng.getrandbits(40):010x}"
    state.update(status="paid", paid=state["total"])
    order.emit(rng, "PaymentReceived", {"paymentId": payment, "amount": state["total"],
                                        "method": rng.choices(["card", "paypal", "invoice"], [5, 3, 1])[0]},
               after=rng.uniform(30, 900), source="checkout-api")
    if rng.random() < 0.08:  # cancelled after paying: refunded
        state["status"] = "cancelled"
        order.emit(rng, "OrderCancelled", {"reason": rng.choice(["customer_request", "out_of_stock"])},
                   after=rng.uniform(0.1, 1) * DAY, source="back-office")
        order.emit(rng, "RefundIssued", {"paymentId": payment, "amount": state["paid"]},
                   after=rng.uniform(0.2, 2) * DAY, source="batch-settlement")
        return order.steps
    state["status"] = "shipped"
    carrier = rng.choice(["DHL", "UPS", "DPD", "GLS"])
    order.emit(rng, "OrderShipped", {"carrier": carrier, "trackingNumber": f"{carrier}{rng.getrandbits(36):011d}"},
               after=rng.uniform(0.2, 2) * DAY, source="back-office")
    if rng.random() < 0.9:
        state["status"] = "delivered"
        order.emit(rng, "OrderDelivered", {"receivedBy": rng.choice(["customer", "neighbour", "parcel locker"])},
                   after=rng.uniform(1, 4) * DAY, source="back-office")
    return order.steps


# --- accounts ---------------------------------------------------------------------------------


def simulate_account(rng: random.Random, number: int, customers: list[str]) -> list[Step]:
    """One account: opened, a stream of deposits and withdrawals that never
    overdraw past the limit, interest for savings, perhaps a freeze, and for
    some a withdrawal of the rest and a close."""
    kind = rng.choices(["checking", "savings"], [3, 1])[0]
    state: dict[str, Any] = {"status": "open", "balance": 0.0, "kind": kind, "overdraftLimit": 0.0}
    account = Actor(f"account-{number}", rng.uniform(0, SIMULATED_DAYS * 0.3) * DAY, ACCOUNT_SNAPSHOT_EVERY,
                    lambda: dict(state))
    owner = rng.choice(customers)
    state["owner"] = owner
    account.emit(rng, "AccountOpened", {"owner": owner, "currency": "EUR", "kind": kind}, after=0, source="back-office")
    end = SIMULATED_DAYS * DAY
    mean_gap = rng.uniform(0.8, 2.5) * DAY / (1.5 if kind == "checking" else 1)

    def move(kind_: str, amount: float, reference: str, source: str, gap: float) -> None:
        state["balance"] = money(state["balance"] + (amount if kind_ != "Withdrawn" else -amount))
        account.emit(rng, kind_, {"amount": money(amount), "reference": reference, "balanceAfter": state["balance"]},
                     after=gap, source=source)

    while True:
        gap = rng.expovariate(1 / mean_gap)
        if account.t + gap > end or account.version >= 45:
            break
        roll = rng.random()
        if state["status"] == "frozen":
            state["status"] = "open"
            account.emit(rng, "AccountUnfrozen", {"reviewedBy": f"agent-{rng.randint(1, 12)}"}, after=gap,
                         source="back-office")
        elif roll < 0.005:
            state["status"] = "frozen"
            account.emit(rng, "AccountFrozen", {"reason": "suspicious_activity"}, after=gap, source="back-office")
        elif roll < 0.02 and kind == "checking":
            state["overdraftLimit"] = float(rng.choice([0, 250, 500, 1000]))
            account.emit(rng, "OverdraftLimitChanged", {"limit": state["overdraftLimit"]}, after=gap,
                         source="back-office")
        elif roll < 0.08 and kind == "savings" and state["balance"] > 0:
            rate = rng.choice([0.015, 0.02, 0.025])
            amount = money(state["balance"] * rate / 12)
            if amount >= 0.01:
                state["balance"] = money(state["balance"] + amount)
                account.emit(rng, "InterestCredited", {"amount": amount, "rate": rate, "balanceAfter": state["balance"]},
                             after=gap, source="batch-settlement")
        elif roll < 0.5 or state["balance"] + state["overdraftLimit"] < 20:
            amount = rng.choice([rng.uniform(20, 400), rng.uniform(1500, 3500)]) if kind == "checking" else rng.uniform(50, 1000)
            move("Deposited", money(amount), rng.choice(["salary", "transfer", "cash"]), "batch-settlement", gap)
        else:
            room = state["balance"] + state["overdraftLimit"]
            move("Withdrawn", money(rng.uniform(5, min(room, 800))), rng.choice(["card", "atm", "transfer"]),
                 "mobile-app", gap)
    if rng.random() < 0.12 and state["status"] == "open":
        if state["balance"] > 0:
            move("Withdrawn", state["balance"], "closing transfer", "back-office", rng.uniform(60, 3600))
        elif state["balance"] < 0:
            move("Deposited", -state["balance"], "settle overdraft", "back-office", rng.uniform(60, 3600))
        state["status"] = "closed"
        account.emit(rng, "AccountClosed", {"finalBalance": state["balance"], "reason": "customer_request"},
                     after=rng.uniform(60, 3600), source="back-office")
    return account.steps


# --- files ----------------------------------------------------------------------------------------


def compress(steps: list[Step]) -> Iterator[dict[str, Any]]:
    """Steps in time order, their simulated times mapped into the last
    ``WINDOW_SECONDS`` before seeding as ``now-<ms>ms``."""
    ordered = sorted(steps, key=lambda s: (s.t, s.actor, s.op != "event", s.version))
    first, last = ordered[0].t, ordered[-1].t
    scale = WINDOW_SECONDS * 1000 / max(last - first, 1.0)
    for step in ordered:
        ago = round((last - step.t) * scale)
        line: dict[str, Any] = {"op": step.op, "actor": step.actor}
        if step.op == "event":
            line.update(type=step.type, version=step.version, at=f"now-{ago}ms", data=step.data)
            if step.extra:
                line["extra"] = step.extra
        else:
            line.update(version=step.version, at=f"now-{ago}ms", state=step.data)
        yield line


def render(name: str, description: str, steps: list[Step]) -> str:
    actors = {s.actor for s in steps}
    events = sum(s.op == "event" for s in steps)
    header = [
        f"# {name}: {description}",
        f"# {events} events and {len(steps) - events} snapshots of {len(actors)} actors. Written by",
        "# data_samples/generate.py (deterministic; edit that, not this file). Times are compressed into",
        f"# the last {WINDOW_SECONDS} s before seeding, so no clock_skew; a stream the Go store creates",
        "# always gets immutability_not_enforced and retention_expiry: the only findings expected.",
        json.dumps({"op": "expect", "counts": EXPECT}),
    ]
    body = [json.dumps(line, ensure_ascii=False, separators=(", ", ": ")) for line in compress(steps)]
    return "\n".join(header + body) + "\n"


def build(seed: int = SEED) -> dict[str, str]:
    """The files' contents, by file name."""
    rng = random.Random(seed)
    customers = [f"cust-{i:04d}" for i in range(1, 221)]
    orders = [s for n in range(1001, 1001 + N_ORDERS) for s in simulate_order(rng, n, customers)]
    accounts = [s for n in range(1, 1 + N_ACCOUNTS) for s in simulate_account(rng, 10_000 + n, customers)]
    return {
        "orders.jsonl": render("orders", "an online shop's orders, from basket to delivery or refund", orders),
        "accounts.jsonl": render("accounts", "customer accounts with deposits, withdrawals and interest", accounts),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent, help="directory (default: here)")
    parser.add_argument("--check", action="store_true", help="only compare with the files on disk")
    args = parser.parse_args(argv)
    stale = []
    for name, text in build().items():
        path = args.out / name
        if args.check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
            continue
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path} ({text.count(chr(10))} lines)")
    if stale:
        print(f"out of date: {', '.join(stale)}; run python data_samples/generate.py", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
