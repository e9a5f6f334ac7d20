"""The read API: a customer's recommendations for a placement, from the live version.

Placements (lib/contract.PLACEMENTS): `home` (the customer's own list), `product_page` (blended with a viewed
product's similar and complementary products), `cart` (blended with what goes with the products in a cart, which
leave the list), `recently_viewed` and `buy_it_again` (the customer's lists of those), and `trending` (the
trending list of the customer's variant). Every placement but home gets its merchandising rules applied when
answering (serving/rules.py); home's were applied in the pipeline.

One statement reads the live pointer and the rows together, so an answer always comes from one version. Customers
without rows get the cold-start list of their variant. Answers are cached in process for `cache_ttl` seconds and
only while the published state (version and revision) is unchanged; the state is checked at most every
`pointer_ttl` seconds, so a new version replaces cached answers within that time.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy import DateTime, String, and_, bindparam, cast, literal_column, null, select, union_all

from recopipeline.lib.contract import HOME, PINNED, PLACEMENTS
from recopipeline.lib.tuning import STRATEGIES
from recopipeline.lib.variants import Experiment
from recopipeline.serving.cache import TTLCache
from recopipeline.serving.database import ServingDatabase, ServingError, utcnow
from recopipeline.serving.items import Item
from recopipeline.serving.rules import Rule, apply_rules
from recopipeline.serving.schema import (
    COLD_START,
    RELATIONS,
    TRENDING,
    customer_placement_lists,
    customer_recommendations,
    customer_segments,
    placement_rules,
    product_relations,
    publications,
    serving_state,
)

# the tutorial's filter, over every strategy of our blend, the merchandising rules' pins and recently viewed products
RECOMMENDATION_TYPES = ("all", *dict.fromkeys((*STRATEGIES, "trending", PINNED, "recently_viewed")))
MAX_LIMIT = 50
MAX_ID_LENGTH = 256
MAX_CART = 50  # products in a cart that the answer is shaped by
CONTEXT_TYPES = {"complementary": "complementary", "similar": "affinity_similar"}  # viewed product -> type
CART_RELATIONS = ("complementary", "bought_together")  # what goes with a product in the cart
CUSTOMER_LISTS = ("recently_viewed", "buy_it_again")  # placements with a list per customer of their own


class NotPublishedError(ServingError):
    """Nothing has been published to the serving database yet."""


class _VersionGone(Exception):
    """The version read a moment ago has been expired since."""


@dataclass(frozen=True)
class Request:
    customer_id: str
    product_id: str | None
    limit: int
    recommendation_type: str
    cart: tuple[str, ...] = ()
    placement: str = HOME


def validate(customer_id, product_id=None, limit=10, recommendation_type="all", cart=None, placement=None) -> Request:
    """Check the arguments of `get_product_recommendations`; raise ValueError with one clear line.

    Without a placement: `cart` with a cart, `product_page` with a viewed product, else `home`.
    """
    check_id("customer_id", customer_id)
    if placement is None:
        placement = "cart" if cart else "product_page" if product_id is not None else HOME
    if placement not in PLACEMENTS:
        raise ValueError(f"placement must be one of {', '.join(PLACEMENTS)}, got {placement!r}")
    if placement == "product_page" and product_id is None:
        raise ValueError("the product_page placement needs the viewed product's product_id")
    if placement == "cart" and not cart:
        raise ValueError("the cart placement needs the cart's product ids")
    if placement not in ("product_page", "cart") and (product_id is not None or cart):
        raise ValueError(f"the {placement} placement takes no product_id or cart (product_page and cart do)")
    if product_id is not None:
        check_id("product_id", product_id)
    if cart is not None:
        if isinstance(cart, str) or not isinstance(cart, (list, tuple)) or len(cart) > MAX_CART:
            raise ValueError(f"cart must be a list of at most {MAX_CART} product ids, got {cart!r}")
        for item in cart:
            check_id("a cart's product id", item)
    check_limit(limit)
    if recommendation_type not in RECOMMENDATION_TYPES:
        raise ValueError(
            f"recommendation_type must be one of {', '.join(RECOMMENDATION_TYPES)}, got {recommendation_type!r}"
        )
    return Request(customer_id, product_id, limit, recommendation_type, tuple(sorted(set(cart or ()))), placement)


def check_limit(limit) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be an integer from 1 to {MAX_LIMIT}, got {limit!r}")


def check_id(name: str, value) -> None:
    if not isinstance(value, str) or not value or len(value) > MAX_ID_LENGTH:
        raise ValueError(f"{name} must be a non-empty string of at most {MAX_ID_LENGTH} characters, got {value!r}")


@dataclass(frozen=True)
class Entry:
    """Everything a customer (and viewed product) can be answered with, before the type filter and the limit."""

    version: int
    revision: int
    variant: str
    cold_start: bool
    generated_at: datetime | None
    items: tuple[Item, ...]
    rules: tuple[Rule, ...] = ()  # the placement's, applied to the items at the time of each answer
    never: frozenset[str] = frozenset()  # products the answer must not show (the viewed one, the cart's)
    segment: str | None = None  # the customer's, for the rules of a segment

    def ruled_items(self, at: datetime | None = None) -> tuple[Item, ...]:
        """The items with the rules in force at `at` (default now, UTC) applied."""
        if not self.rules:
            return self.items
        return apply_rules(self.items, self.rules, at or utcnow(), MAX_LIMIT, self.never, self.segment)

    def answer(self, request: Request, at: datetime | None = None) -> dict:
        """The answer to `request` at `at` (default now, UTC): the rules in force then applied, then the type filter
        and the limit."""
        chosen = [
            item for item in self.ruled_items(at)
            if request.recommendation_type == "all" or item.recommendation_type == request.recommendation_type
        ][: request.limit]
        return {
            "recommendation_id": uuid.uuid4().hex,  # this answer's: feedback on it names it
            "placement": request.placement,
            "customer_id": request.customer_id,
            "product_id": request.product_id,
            "cart": list(request.cart),
            "recommendation_type": request.recommendation_type,
            "variant": self.variant,
            "version": self.version,
            "cold_start": self.cold_start,
            "generated_at": self.generated_at.isoformat() if self.generated_at else None,
            "recommendations": [
                {
                    "rank": rank,
                    "product_id": item.product_id,
                    "product_name": item.product_name,
                    "recommendation_type": item.recommendation_type,
                    "score": round(item.score, 6),
                    "evidence": item.evidence,
                }
                for rank, item in enumerate(chosen, start=1)
            ],
        }


# ---- statements (parameterised; built once) ---------------------------------------------------------------------
_cr, _pr, _pl = customer_recommendations, product_relations, customer_placement_lists
_live = (
    select(serving_state.c.current_version.label("version"), serving_state.c.revision)
    .where(serving_state.c.id == 1)
    .cte("live")
)
_customer_part = select(
    literal_column("'customer'").label("part"),
    _live.c.version,
    _live.c.revision,
    _cr.c.variant,
    _cr.c.rank,
    _cr.c.product_id,
    _cr.c.product_name,
    _cr.c.recommendation_type,
    _cr.c.score,
    _cr.c.evidence,
    _cr.c.generated_at,
).select_from(  # the live row always comes back, with NULLs when the customer has no rows
    _live.outerjoin(_cr, and_(_cr.c.version == _live.c.version, _cr.c.customer_id == bindparam("customer_id")))
)
_relation_part = (
    select(
        _pr.c.relation,
        _live.c.version,
        _live.c.revision,
        cast(null(), String),
        _pr.c.rank,
        _pr.c.related_product_id,
        _pr.c.related_product_name,
        cast(null(), String),
        _pr.c.score,
        cast(null(), String),
        cast(null(), DateTime),
    )
    .select_from(_live.join(_pr, _pr.c.version == _live.c.version))
    .where(_pr.c.product_id == bindparam("product_id"), _pr.c.relation.in_(tuple(CONTEXT_TYPES)))
)
CUSTOMER_STATEMENT = _customer_part
CUSTOMER_AND_PRODUCT_STATEMENT = union_all(_customer_part, _relation_part)
STATE_STATEMENT = select(serving_state.c.current_version, serving_state.c.revision).where(serving_state.c.id == 1)
COLD_START_STATEMENT = select(
    _cr.c.variant, _cr.c.rank, _cr.c.product_id, _cr.c.product_name, _cr.c.recommendation_type, _cr.c.score,
    _cr.c.evidence, _cr.c.generated_at,
).where(_cr.c.version == bindparam("version"), _cr.c.customer_id == COLD_START).order_by(_cr.c.variant, _cr.c.rank)
TRENDING_STATEMENT = (
    select(_live.c.version, _live.c.revision, _cr.c.variant, _cr.c.rank, _cr.c.product_id, _cr.c.product_name,
           _cr.c.score, _cr.c.evidence, publications.c.experiment)
    .select_from(
        _live.join(_cr, and_(_cr.c.version == _live.c.version, _cr.c.customer_id == TRENDING))
        .outerjoin(publications, publications.c.publication_id == _live.c.version)
    )
    .order_by(_cr.c.variant, _cr.c.rank)
)
PLACEMENT_LIST_STATEMENT = (
    select(
        _live.c.version, _live.c.revision, _pl.c.rank, _pl.c.product_id, _pl.c.product_name, _pl.c.score,
        _pl.c.evidence, _pl.c.generated_at,
    )
    .select_from(
        _live.outerjoin(_pl, and_(_pl.c.version == _live.c.version, _pl.c.customer_id == bindparam("customer_id"),
                                  _pl.c.placement == bindparam("placement")))
    )
    .order_by(_pl.c.rank)
)
RULES_STATEMENT = select(
    placement_rules.c.placement, placement_rules.c.rule_id, placement_rules.c.product_id,
    placement_rules.c.product_name, placement_rules.c.action, placement_rules.c.value, placement_rules.c.priority,
    placement_rules.c.valid_from, placement_rules.c.valid_to, placement_rules.c.customer_segment,
).where(placement_rules.c.version == bindparam("version"))
SEGMENT_STATEMENT = select(customer_segments.c.customer_segment).where(
    customer_segments.c.version == bindparam("version"), customer_segments.c.customer_id == bindparam("customer_id")
)
EXPERIMENT_STATEMENT = select(publications.c.experiment).where(publications.c.publication_id == bindparam("version"))
CART_STATEMENT = (
    select(_pr.c.product_id, _pr.c.relation, _pr.c.related_product_id, _pr.c.related_product_name, _pr.c.score)
    .select_from(_live.join(_pr, _pr.c.version == _live.c.version))
    .where(_pr.c.product_id.in_(bindparam("cart", expanding=True)), _pr.c.relation.in_(CART_RELATIONS))
)
RELATED_STATEMENT = (
    select(_pr.c.rank, _pr.c.related_product_id, _pr.c.related_product_name, _pr.c.score)
    .select_from(_live.join(_pr, _pr.c.version == _live.c.version))
    .where(_pr.c.product_id == bindparam("product_id"), _pr.c.relation == bindparam("relation"))
    .order_by(_pr.c.rank)
    .limit(bindparam("limit"))
)


class Recommender:
    """Answers `get_product_recommendations` from one serving database, with an in-process cache."""

    def __init__(
        self,
        db: ServingDatabase,
        cache_ttl: float = 60.0,
        pointer_ttl: float = 1.0,
        max_entries: int = 100_000,
        context_weight: float = 1.0,
    ):
        self.db = db
        self.cache = TTLCache(cache_ttl, max_entries)
        self.pointer_ttl = pointer_ttl
        self.context_weight = context_weight
        self._state: tuple[int, int] | None = None
        self._state_checked = float("-inf")
        self._cold_start: dict[tuple[int, int], tuple[Experiment | None, dict[str, tuple[Item, ...]], datetime]] = {}
        self._rules: dict[tuple[int, int], dict[str, tuple[Rule, ...]]] = {}
        self._lock = threading.Lock()

    def recommend(
        self, customer_id: str, product_id: str | None = None, limit: int = 10, recommendation_type: str = "all",
        cart: list[str] | None = None, placement: str | None = None,
    ) -> dict:
        """The customer's list for the placement (see the module's docstring; by default `cart` with a cart,
        `product_page` with a viewed product, else `home`)."""
        request = validate(customer_id, product_id, limit, recommendation_type, cart, placement)
        if not self.cache.enabled:
            return self._load(request).answer(request)
        key = (request.placement, request.customer_id, request.product_id, request.cart)
        token = self.state()
        entry = self.cache.get(key, token)
        if entry is None:
            entry = self._load(request)
            self.cache.put(key, (entry.version, entry.revision), entry)
        return entry.answer(request)

    def related_products(self, product_id: str, relation: str = "complementary", limit: int = 10) -> list[dict]:
        """A product page's list: similar, complementary or bought-together products of the live version."""
        check_id("product_id", product_id)
        if relation not in RELATIONS:
            raise ValueError(f"relation must be one of {', '.join(RELATIONS)}, got {relation!r}")
        check_limit(limit)
        with self.db.engine.connect() as conn:
            rows = conn.execute(RELATED_STATEMENT, {"product_id": product_id, "relation": relation, "limit": limit})
            return [
                {"rank": r.rank, "product_id": r.related_product_id, "product_name": r.related_product_name,
                 "score": r.score}
                for r in rows
            ]

    def trending(self, customer_id: str | None = None, limit: int = 10) -> list[dict]:
        """The trending list of the live version (product_trending), of the customer's A/B variant if given."""
        if customer_id is not None:
            check_id("customer_id", customer_id)
        check_limit(limit)
        try:
            entry = self._with_rules(self._trending_list(customer_id), "trending", customer_id)
        except NotPublishedError:
            return []
        chosen = entry.ruled_items()
        return [
            {"rank": rank, "product_id": r.product_id, "product_name": r.product_name, "score": r.score,
             "evidence": r.evidence}
            for rank, r in enumerate(chosen[:limit], start=1)
        ]

    def state(self) -> tuple[int, int] | None:
        """(version, revision) of the live state, read again after `pointer_ttl` seconds."""
        now = time.monotonic()
        if now - self._state_checked >= self.pointer_ttl:
            with self.db.engine.connect() as conn:
                row = conn.execute(STATE_STATEMENT).first()
            self._state = (row.current_version, row.revision) if row else None
            self._state_checked = now
        return self._state

    # ---- loading -------------------------------------------------------------------------------------------
    def _load(self, request: Request) -> Entry:
        for _attempt in range(3):
            try:
                return self._load_once(request)
            except _VersionGone:  # two publishes expired the version between our two statements: read again
                continue
        raise NotPublishedError("the live version changed three times while reading; try again")

    def _load_once(self, request: Request) -> Entry:
        if request.placement in CUSTOMER_LISTS:
            entry = self._customer_list(request)
        elif request.placement == "trending":
            entry = self._trending_list(request.customer_id)
        else:
            entry = self._personal(request)
        if request.placement == HOME:
            return entry
        never = frozenset({request.product_id, *request.cart} - {None})
        return self._with_rules(entry, request.placement, request.customer_id, never)

    def _with_rules(
        self, entry: Entry, placement: str, customer_id: str | None, never: frozenset[str] = frozenset()
    ) -> Entry:
        """`entry` with the placement's published rules, and the customer's segment when a rule names one."""
        rules = self._rules_of(entry.version, entry.revision).get(placement, ())
        needs_segment = customer_id is not None and any(r.customer_segment for r in rules)
        segment = self._segment(entry.version, customer_id) if needs_segment else None
        return replace(entry, rules=rules, never=never, segment=segment)

    def _personal(self, request: Request) -> Entry:
        """home, product_page and cart: the customer's own list (or the cold-start list), blended as asked."""
        params = {"customer_id": request.customer_id}
        statement = CUSTOMER_STATEMENT
        if request.product_id is not None:
            params["product_id"] = request.product_id
            statement = CUSTOMER_AND_PRODUCT_STATEMENT
        with self.db.engine.connect() as conn:
            rows = conn.execute(statement, params).all()
        if not rows:
            raise NotPublishedError("nothing is published yet: materialize published_recommendations first")
        version, revision = rows[0].version, rows[0].revision
        own = sorted((r for r in rows if r.part == "customer" and r.product_id is not None), key=lambda r: r.rank)
        related = [r for r in rows if r.part != "customer"]
        if own:
            variant, cold_start, generated_at = own[0].variant, False, own[0].generated_at
            items = tuple(_item(r) for r in own)
        else:
            variant, items, generated_at = self._cold_start_list(version, revision, request.customer_id)
            cold_start = True
            # the cold-start list gets the home rules without a segment (a customer's own list got theirs in the
            # pipeline), as of when it is read
            home_rules = self._rules_of(version, revision).get(HOME, ())  # without a segment: see the SQL
            items = apply_rules(items, home_rules, utcnow(), MAX_LIMIT) if home_rules else items
        if request.product_id is not None:
            items = self._blend(items, related, request.product_id)
        if request.cart:
            with self.db.engine.connect() as conn:
                goes_with = conn.execute(CART_STATEMENT, {"cart": list(request.cart)}).all()
            items = self._with_cart(items, goes_with, request.cart)
        return Entry(version, revision, variant, cold_start, generated_at, items)

    def _customer_list(self, request: Request) -> Entry:
        """recently_viewed or buy_it_again: the customer's list of that placement (empty if they have none)."""
        with self.db.engine.connect() as conn:
            rows = conn.execute(
                PLACEMENT_LIST_STATEMENT, {"customer_id": request.customer_id, "placement": request.placement}
            ).all()
        if not rows:
            raise NotPublishedError("nothing is published yet: materialize published_recommendations first")
        version, revision = rows[0].version, rows[0].revision
        kind = "recently_viewed" if request.placement == "recently_viewed" else "repurchase"
        items = tuple(Item(r.product_id, r.product_name, kind, float(r.score), r.evidence)
                      for r in rows if r.product_id is not None)
        variant = self._variant(version, request.customer_id)
        return Entry(version, revision, variant, False, rows[0].generated_at, items)

    def _trending_list(self, customer_id: str | None) -> Entry:
        """trending: the trending list of the customer's variant (the first variant's without a customer)."""
        with self.db.engine.connect() as conn:
            rows = conn.execute(TRENDING_STATEMENT).all()
            state = None if rows else conn.execute(STATE_STATEMENT).first()
        if not rows and state is None:
            raise NotPublishedError("nothing is published yet: materialize published_recommendations first")
        if not rows:  # nothing trends now
            variant = self._variant(state.current_version, customer_id)
            return Entry(state.current_version, state.revision, variant, False, None, ())
        lists: dict[str, list] = {}
        for r in rows:
            lists.setdefault(r.variant, []).append(r)
        variant = _variant_of(lists, _experiment(rows[0].experiment), customer_id)
        items = tuple(Item(r.product_id, r.product_name, "trending", float(r.score), r.evidence) for r in lists[variant])
        return Entry(rows[0].version, rows[0].revision, variant, False, None, items)

    def _segment(self, version: int, customer_id: str) -> str | None:
        """The customer's segment in `version` (None for a customer the pipeline does not know)."""
        with self.db.engine.connect() as conn:
            return conn.execute(SEGMENT_STATEMENT, {"version": version, "customer_id": customer_id}).scalar()

    def _variant(self, version: int, customer_id: str | None) -> str | None:
        """The customer's A/B variant in `version`'s experiment (None without a customer or an experiment)."""
        with self.db.engine.connect() as conn:
            spec = conn.execute(EXPERIMENT_STATEMENT, {"version": version}).scalar()
        experiment = _experiment(spec)
        return experiment.assign(customer_id) if experiment and customer_id is not None else None

    def _rules_of(self, version: int, revision: int) -> dict[str, tuple[Rule, ...]]:
        """The published rules of the placements answered here, by placement (kept for the newest state)."""
        known = self._rules.get((version, revision))
        if known is None:
            with self.db.engine.connect() as conn:
                rows = conn.execute(RULES_STATEMENT, {"version": version}).all()
            by_placement: dict[str, list[Rule]] = {}
            for r in rows:
                by_placement.setdefault(r.placement, []).append(Rule(
                    r.rule_id, r.product_id, r.product_name, r.action, r.value, int(r.priority), r.valid_from,
                    r.valid_to, r.customer_segment,
                ))
            known = {placement: tuple(found) for placement, found in by_placement.items()}
            with self._lock:
                self._rules = {(version, revision): known}
        return known

    def _cold_start_list(self, version: int, revision: int, customer_id: str) -> tuple[str, tuple[Item, ...], datetime]:
        known = self._cold_start.get((version, revision))
        if known is None:
            with self.db.engine.connect() as conn:
                rows = conn.execute(COLD_START_STATEMENT, {"version": version}).all()
                spec = conn.execute(EXPERIMENT_STATEMENT, {"version": version}).scalar()
            if not rows:
                raise _VersionGone(version)
            lists: dict[str, list[Item]] = {}
            for r in rows:
                lists.setdefault(r.variant, []).append(_item(r))
            experiment = _experiment(spec)
            known = (experiment, {k: tuple(v) for k, v in lists.items()}, rows[0].generated_at)
            with self._lock:
                self._cold_start = {(version, revision): known}  # only the newest state's list is kept
        experiment, lists, generated_at = known
        variant = _variant_of(lists, experiment, customer_id)
        return variant, lists[variant], generated_at

    def _blend(self, items: tuple[Item, ...], related, product_id: str) -> tuple[Item, ...]:
        """Add the viewed product's complements and similar products; already recommended ones gain score."""
        context: dict[str, tuple[float, object]] = {}
        for r in related:
            boost = self.context_weight * r.score
            if r.product_id != product_id and boost > context.get(r.product_id, (-1.0, None))[0]:
                context[r.product_id] = (boost, r)
        added = {
            related_id: Item(related_id, r.product_name, CONTEXT_TYPES[r.part], boost, f"{r.part}:{product_id}")
            for related_id, (boost, r) in context.items()
        }
        return _merged(items, added, leave_out={product_id})

    def _with_cart(self, items: tuple[Item, ...], goes_with, cart: tuple[str, ...]) -> tuple[Item, ...]:
        """Add what goes with the cart's products (scores summed over them); the cart's own products leave."""
        boosts: dict[str, float] = {}
        sources: dict[str, list[str]] = {}
        names: dict[str, str] = {}
        for r in sorted(goes_with, key=lambda r: (r.product_id, r.relation)):
            if r.related_product_id in cart:
                continue
            boosts[r.related_product_id] = boosts.get(r.related_product_id, 0.0) + self.context_weight * r.score
            sources.setdefault(r.related_product_id, [])
            if r.product_id not in sources[r.related_product_id]:
                sources[r.related_product_id].append(r.product_id)
            names[r.related_product_id] = r.related_product_name
        added = {
            related_id: Item(related_id, names[related_id], "complementary", boost,
                             ";".join(f"cart:{source}" for source in sources[related_id]))
            for related_id, boost in boosts.items()
        }
        return _merged(items, added, leave_out=set(cart))


def _merged(items: tuple[Item, ...], added: dict[str, Item], leave_out: set[str]) -> tuple[Item, ...]:
    """`items` without `leave_out`, with `added`: a product already listed gains the added score and evidence;
    best score first, ties by product id."""
    merged = {item.product_id: item for item in items if item.product_id not in leave_out}
    for product_id, addition in added.items():
        if product_id in merged:
            item = merged[product_id]
            merged[product_id] = replace(
                item, score=item.score + addition.score,
                evidence=f"{item.evidence or ''};{addition.evidence}".lstrip(";"),
            )
        else:
            merged[product_id] = addition
    return tuple(sorted(merged.values(), key=lambda item: (-item.score, item.product_id)))


def _variant_of(lists: dict, experiment: Experiment | None, customer_id: str | None) -> str:
    """The customer's A/B variant among the variants with a list (the first without a customer or a match)."""
    variant = experiment.assign(customer_id) if experiment and customer_id is not None else None
    return variant if variant in lists else next(iter(lists))


def _item(row) -> Item:
    return Item(row.product_id, row.product_name, row.recommendation_type, float(row.score), row.evidence)


def _experiment(spec: str | None) -> Experiment | None:
    return Experiment.from_json(spec) if spec else None
