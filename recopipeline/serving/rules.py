"""The merchandising rules of the placements answered at request time: every placement but home.

Home's rules shape the top N in the pipeline (sql/customer_top_recommendations.sql). The other placements' lists
are made or blended when a request comes (a viewed product, a cart) or are lists of their own (recently viewed,
buy it again, trending), so their rules are applied to the answer, with the same meaning, to the rules in force
at the time of the request:

- exclude      a matched product leaves the list (and is never pinned);
- boost, bury  a matched product's score is multiplied by the rule's value (by every matching rule's), capped at
               1; the list is ranked again by that score, ties keeping their order;
- pin          the product takes the pinned position: pins are placed by position, then higher priority, then
               smaller rule id, a taken position passing to the next free one; of two pins of one product the
               stronger counts. A pinned product already listed keeps its score (before any boost) and type, one
               that is not comes with type 'pinned' and score 0; a list shorter than the position shows the pin
               after it, and a pin placed beyond `max_position` is not applied.

Each rule that moved a product is named in its evidence (`rule:<id>`). A rule with a customer segment applies to
the customers of that segment as of the version (the serving table `customer_segments`). The home rules without a
segment are also applied here to the cold-start list, which customers without rows of their own are served.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from math import prod

from recopipeline.lib.contract import PINNED
from recopipeline.serving.items import Item


@dataclass(frozen=True)
class Rule:
    """One rule's match of one product (a row of the serving table `placement_rules`)."""

    rule_id: str
    product_id: str
    product_name: str
    action: str
    value: float | None
    priority: int
    valid_from: datetime | None
    valid_to: datetime | None
    customer_segment: str | None = None  # only for customers of this segment; None: everyone

    def in_force(self, at: datetime, segment: str | None = None) -> bool:
        """From valid_from (or always) until just before valid_to (or for good), for a customer of `segment`."""
        return (
            (self.valid_from is None or self.valid_from <= at) and (self.valid_to is None or at < self.valid_to)
            and (self.customer_segment is None or self.customer_segment == segment)
        )


def apply_rules(
    items: tuple[Item, ...], rules: tuple[Rule, ...], at: datetime, max_position: int,
    never: frozenset[str] = frozenset(), segment: str | None = None,
) -> tuple[Item, ...]:
    """`items` (best first) with the rules in force at `at` for a customer of `segment` (None: unknown, only the
    rules without one) applied; `never` are products the answer must not show (a viewed product, the cart's),
    which no pin brings back."""
    active = [rule for rule in rules if rule.in_force(at, segment)]
    if not active:
        return items
    excluded = {rule.product_id for rule in active if rule.action == "exclude"} | never
    factors: dict[str, list[Rule]] = {}
    for rule in sorted(active, key=lambda r: r.rule_id):
        if rule.action in ("boost", "bury"):
            factors.setdefault(rule.product_id, []).append(rule)
    rescored = []
    for order, item in enumerate(items):
        if item.product_id in excluded:
            continue
        moved = factors.get(item.product_id)
        if moved:
            item = replace(
                item,
                score=min(item.score * prod(rule.value for rule in moved), 1.0),
                evidence="|".join(filter(None, [item.evidence, *(f"rule:{rule.rule_id}" for rule in moved)])),
            )
        rescored.append((order, item))
    ranked = [item for _, item in sorted(rescored, key=lambda pair: (-pair[1].score, pair[0]))]
    pins = [rule for rule in active if rule.action == "pin" and rule.product_id not in excluded]
    return _pinned(ranked, pins, max_position, {item.product_id: item for item in items})


def _pinned(ranked: list[Item], pins: list[Rule], max_position: int, unscored: dict[str, Item]) -> tuple[Item, ...]:
    """The pins placed among `ranked`; a pinned product that was listed shows as it was before any boost or
    bury (`unscored`), with the pin in its evidence, as in the pipeline's rules."""
    strongest: dict[str, Rule] = {}
    for pin in sorted(pins, key=lambda r: (-r.priority, r.rule_id)):
        strongest.setdefault(pin.product_id, pin)
    ordered = sorted(strongest.values(), key=lambda r: (int(r.value), -r.priority, r.rule_id))
    slots: list[tuple[int, Rule]] = []
    for pin in ordered:
        slot = max(int(pin.value), slots[-1][0] + 1 if slots else 1)
        if slot > max_position:
            break
        slots.append((slot, pin))
    if not slots:
        return tuple(ranked)
    listed = {item.product_id: unscored[item.product_id] for item in ranked}
    pinned_ids = {pin.product_id for _, pin in slots}
    free = [item for item in ranked if item.product_id not in pinned_ids]
    placed: list[Item] = []
    pending = list(slots)
    while pending or free:
        if pending and (pending[0][0] <= len(placed) + 1 or not free):
            _, pin = pending.pop(0)
            item = listed.get(pin.product_id)
            if item is None:
                placed.append(Item(pin.product_id, pin.product_name, PINNED, 0.0, f"rule:{pin.rule_id}"))
            else:
                placed.append(replace(item, evidence="|".join(filter(None, [item.evidence, f"rule:{pin.rule_id}"]))))
        else:
            placed.append(free.pop(0))
    return tuple(placed)

