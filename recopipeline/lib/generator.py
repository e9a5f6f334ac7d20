"""Deterministic synthetic e-commerce data in the shape of the data contract.

`generate(scale, out_dir)` writes the five required sources (`contract.REQUIRED_SOURCES`) as Parquet files; it
writes no merchandising rules. Customers and products
are built in one go; browse sessions, orders and carts are simulated in chunks of customers and streamed to
Parquet row groups, so memory stays bounded at every scale. Every chunk draws from its own random generator,
derived from the seed and the chunk index, so a given scale and seed always yield the same values.

The behaviour has the structure a recommender needs: Zipf-like product popularity, customers with preferred
categories and heavy-tailed activity, a view -> click -> cart -> purchase funnel per session, complement products
bought together, favourite products bought again, new products and customers, cold-start customers.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from recopipeline.lib.contract import CART_STATUSES, INTERACTION_TYPES, arrow_schema


@dataclass(frozen=True)
class Scale:
    """Size of a generated data set; `events` is the approximate number of interaction rows."""

    name: str
    customers: int
    products: int
    events: int
    categories: int
    brands_per_category: int
    chunk_customers: int


SCALES: dict[str, Scale] = {
    s.name: s
    for s in (
        Scale("xs", 200, 100, 20_000, 8, 3, 200),
        Scale("s", 2_000, 1_000, 200_000, 20, 4, 2_000),
        Scale("m", 20_000, 5_000, 2_000_000, 40, 5, 20_000),
        Scale("l", 200_000, 20_000, 20_000_000, 80, 6, 25_000),
        Scale("xl", 1_000_000, 100_000, 100_000_000, 200, 8, 25_000),
    )
}

SECOND = 1_000_000  # microseconds
DAY = 86_400 * SECOND

# Catalogue
ZIPF_EXPONENT = 1.1
NULL_BRAND_SHARE = 0.05
OUT_OF_STOCK_SHARE = 0.05
INACTIVE_SHARE = 0.03
NEW_SHARE = 0.05
NEW_SPAN_DAYS = 14
COMPLEMENT_COUNT_P = (0.15, 0.40, 0.30, 0.15)  # P(0, 1, 2, 3 complements)

# Customers
COUNTRIES = ("United States", "United Kingdom", "Germany", "France", "Netherlands", "Spain", "Italy", "Sweden",
             "Poland", "Canada")
COUNTRY_P = (0.30, 0.15, 0.14, 0.10, 0.07, 0.07, 0.06, 0.04, 0.04, 0.03)
COLD_SHARE = 0.03
SIGNUP_KIND_P = (0.80, 0.15, 0.05)  # before the window, inside it, in its last days (new)
PREF_COUNT_P = (0.4, 0.4, 0.2)  # P(1, 2, 3 preferred categories)
MAX_FAVOURITES = 4

# Sessions
EVENTS_PER_SESSION = 5.45  # measured mean, used to turn the event target into a session rate
ITEMS_PER_SESSION = 4.5
MAX_ITEMS = 40
SESSION_IN_CATEGORY = 0.6  # item from the session's category
ITEM_IN_PREFS = 0.25  # item from another preferred category; the rest follow global popularity
SESSION_IN_PREFS = 0.85
FAVOURITE_SHARE = 0.1
P_CLICK, P_CART = 0.24, 0.42
P_CLICK_FAV, P_CART_FAV = 0.6, 0.6
P_CHECKOUT = 0.7
P_BUY_AT_CHECKOUT = 0.85  # otherwise removed
P_REMOVE_ABANDONED = 0.8  # otherwise left in the cart
P_COMPLEMENT = 0.35
QUANTITY_P = (0.8, 0.15, 0.05)
GAP_MEDIAN_S, GAP_SIGMA, MAX_GAP_S = 20.0, 1.0, 300
RECENCY_SLOPE = 0.4  # the last day is 1 + slope times as busy as the first
OPEN_CART_DAYS = 2

VIEW, CLICK, CART_ADD, CART_REMOVE, PURCHASE = range(5)

CATEGORY_NAMES = (
    "Electronics", "Headphones", "Smartphones", "Laptops", "Cameras", "Kitchen", "Cookware", "Coffee & Tea",
    "Snacks", "Beverages", "Pet Supplies", "Toys", "Board Games", "Books", "Stationery", "Garden", "Tools",
    "Lighting", "Furniture", "Bedding", "Bath", "Beauty", "Skincare", "Fragrance", "Health", "Vitamins", "Sports",
    "Fitness", "Cycling", "Outdoor", "Camping", "Footwear", "Menswear", "Womenswear", "Kids Clothing", "Jewellery",
    "Watches", "Bags", "Automotive", "Baby Care",
)
ADJECTIVES = ("Classic", "Compact", "Deluxe", "Essential", "Premium", "Smart", "Eco", "Pro", "Mini", "Ultra",
              "Everyday", "Travel")


@dataclass(frozen=True)
class Window:
    """The simulated period, in microseconds since the epoch."""

    start: int
    end: int

    @property
    def length_s(self) -> int:
        return (self.end - self.start) // SECOND

    @property
    def new_span(self) -> int:
        return min(NEW_SPAN_DAYS * DAY, self.end - self.start)


@dataclass(frozen=True)
class Catalog:
    """Product attributes needed for simulation, plus a popularity sampler per category."""

    category: np.ndarray  # category index per product
    price: np.ndarray
    created: np.ndarray  # microseconds
    by_category: np.ndarray  # product indices sorted by category
    cum_weight: np.ndarray  # cumulative popularity in by_category order
    cat_first: np.ndarray  # first position of each category in by_category
    cat_low: np.ndarray  # cumulative weight before each category
    cat_mass: np.ndarray  # popularity mass of each category
    complements: np.ndarray  # (products, 3), -1 when absent
    n_complements: np.ndarray

    @property
    def n_categories(self) -> int:
        return len(self.cat_mass)

    def sample(self, cats: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One product per entry of `cats`, drawn by popularity within that category."""
        target = self.cat_low[cats] + rng.random(len(cats)) * self.cat_mass[cats]
        pos = np.searchsorted(self.cum_weight, target, side="right")
        pos = np.clip(pos, self.cat_first[cats], self.cat_first[cats + 1] - 1)
        return self.by_category[pos]


@dataclass(frozen=True)
class Population:
    """Customer attributes needed for simulation."""

    signup: np.ndarray  # microseconds
    session_rate: np.ndarray  # expected sessions in the window


# ---------------------------------------------------------------------------------------------------------------
# Helpers


def _ids(prefix: str, numbers: np.ndarray, width: int, suffix: str = "") -> pa.Array:
    """Strings prefix + zero-padded number + suffix, built without Python loops over rows."""
    numbers = np.asarray(numbers, dtype=np.int64)
    head, tail = prefix.encode(), suffix.encode()
    row = len(head) + width + len(tail)
    buf = np.empty((len(numbers), row), dtype=np.uint8)
    buf[:, : len(head)] = np.frombuffer(head, dtype=np.uint8)
    buf[:, len(head) + width :] = np.frombuffer(tail, dtype=np.uint8)
    rest = numbers.copy()
    for j in range(len(head) + width - 1, len(head) - 1, -1):
        buf[:, j] = 48 + rest % 10
        rest //= 10
    if len(numbers) and rest.max() > 0:
        raise ValueError(f"numbers do not fit in {width} digits")
    if len(numbers) * row > np.iinfo(np.int32).max:
        raise ValueError("too many strings for one Arrow string array")
    offsets = np.arange(len(numbers) + 1, dtype=np.int32) * np.int32(row)
    return pa.StringArray.from_buffers(len(numbers), pa.py_buffer(offsets), pa.py_buffer(buf))


def _width(n: int, minimum: int) -> int:
    return max(minimum, len(str(n)))


def _timestamps(us: np.ndarray) -> pa.Array:
    return pa.array(np.asarray(us, dtype=np.int64).view("datetime64[us]"), type=pa.timestamp("us"))


def _first_index(group: np.ndarray, n_groups: int) -> np.ndarray:
    """For a sorted group array, the first row of each group (length n_groups + 1)."""
    return np.searchsorted(group, np.arange(n_groups + 1))


def _rank_in_group(group: np.ndarray, n_groups: int) -> np.ndarray:
    """Position of each row within its group, for a sorted group array."""
    return np.arange(len(group)) - _first_index(group, n_groups)[group]


def _window(end: datetime, days: int) -> Window:
    """The `days` before `end`; an aware `end` is converted to naive UTC."""
    if end.tzinfo is not None:
        end = end.astimezone(timezone.utc).replace(tzinfo=None)
    end_us = int(np.datetime64(end, "us").astype(np.int64))
    return Window(start=end_us - days * DAY, end=end_us)


def _uniform_seconds(rng: np.random.Generator, low: np.ndarray | int, high: np.ndarray | int, size: int) -> np.ndarray:
    """Uniform times in [low, high], rounded to whole seconds (microseconds)."""
    us = low + rng.random(size) * (np.asarray(high) - np.asarray(low))
    return (us // SECOND).astype(np.int64) * SECOND


def _recent_biased(rng: np.random.Generator, low: np.ndarray, high: np.ndarray, length: float) -> np.ndarray:
    """Times in [low, high] (seconds into the window) with density rising linearly towards the window's end."""
    a = RECENCY_SLOPE / length

    def cdf(t: np.ndarray) -> np.ndarray:
        return t + 0.5 * a * t * t

    g = cdf(low) + rng.random(len(low)) * (cdf(high) - cdf(low))
    t = (np.sqrt(1.0 + 2.0 * a * g) - 1.0) / a
    return np.clip(np.floor(t), low, high).astype(np.int64)


def _rng(seed: int, *path: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, *path])))


# ---------------------------------------------------------------------------------------------------------------
# Catalogue and customers


def _category_names(n: int) -> list[str]:
    base = len(CATEGORY_NAMES)
    return [CATEGORY_NAMES[k % base] + ("" if k < base else f" {k // base + 1}") for k in range(n)]


def _make_catalog(scale: Scale, rng: np.random.Generator, win: Window) -> tuple[pa.Table, Catalog]:
    """The products table and the simulation view of it."""
    n, k = scale.products, scale.categories
    size_w = rng.gamma(2.0, size=k)
    category = np.concatenate([np.arange(k), rng.choice(k, n - k, p=size_w / size_w.sum())])
    rng.shuffle(category)

    brand_idx = np.minimum(rng.geometric(0.45, n), scale.brands_per_category)
    has_brand = rng.random(n) >= NULL_BRAND_SHARE
    price_level = np.exp(rng.normal(3.2, 0.8, k))
    price = np.maximum(np.round(price_level[category] * rng.lognormal(0.0, 0.45, n), 2), 0.49)
    stock = (rng.lognormal(3.5, 1.0, n)).astype(np.int32) + 1
    stock[rng.random(n) < OUT_OF_STOCK_SHARE] = 0
    active = rng.random(n) >= INACTIVE_SHARE
    is_new = rng.random(n) < NEW_SHARE
    created = np.where(
        is_new,
        _uniform_seconds(rng, win.end - win.new_span, win.end - min(DAY, win.new_span // 2), n),
        _uniform_seconds(rng, win.start - 730 * DAY, win.start - DAY, n),
    )
    weight = (rng.permutation(n) + 1.0) ** -ZIPF_EXPONENT
    catalog = _index_catalog(category, price, created, weight, k)
    catalog = _with_complements(catalog, rng)

    names = _category_names(k)
    adjective = rng.integers(0, len(ADJECTIVES), n)
    table = pa.Table.from_arrays(
        [
            _ids("P", np.arange(1, n + 1), _width(n, 5)),
            pa.array([f"{ADJECTIVES[a]} {names[c]} #{i + 1}" for i, (a, c) in enumerate(zip(adjective, category))]),
            pa.array([names[c] for c in category]),
            pa.array([f"Brand {c + 1}-{b}" if ok else None for c, b, ok in zip(category, brand_idx, has_brand)]),
            pa.array(price, type=pa.float64()),
            pa.array(stock, type=pa.int32()),
            pa.array(active, type=pa.bool_()),
            _timestamps(created),
        ],
        schema=arrow_schema("products"),
    )
    return table, catalog


def _index_catalog(category: np.ndarray, price: np.ndarray, created: np.ndarray, weight: np.ndarray,
                   k: int) -> Catalog:
    order = np.argsort(category, kind="stable")
    cum = np.cumsum(weight[order])
    first = _first_index(category[order], k)
    low = np.concatenate([[0.0], cum])[first[:-1]]
    mass = np.bincount(category, weights=weight, minlength=k)
    empty = np.full((len(category), 3), -1, dtype=np.int64)
    return Catalog(category, price, created, order, cum, first, low, mass, empty, np.zeros(len(category), np.int64))


def _with_complements(cat: Catalog, rng: np.random.Generator) -> Catalog:
    """Give products 0-3 complements, drawn by popularity from two fixed partner categories."""
    n, k = len(cat.category), cat.n_categories
    if k < 2:
        return cat
    partners = (np.arange(k)[:, None] + rng.integers(1, k, (k, 2))) % k
    count = rng.choice(4, n, p=COMPLEMENT_COUNT_P)
    slot_cats = partners[cat.category[:, None], rng.integers(0, 2, (n, 3))]
    comps = cat.sample(slot_cats.ravel(), rng).reshape(n, 3)
    comps[np.arange(3)[None, :] >= count[:, None]] = -1
    return replace(cat, complements=comps, n_complements=count)


def _make_customers(scale: Scale, rng: np.random.Generator, win: Window) -> tuple[pa.Table, Population]:
    """The customers table and each customer's signup time and session rate."""
    n = scale.customers
    kind = rng.choice(3, n, p=SIGNUP_KIND_P)
    signup = np.select(
        [kind == 0, kind == 1],
        [
            _uniform_seconds(rng, win.start - 3 * 365 * DAY, win.start, n),
            _uniform_seconds(rng, win.start, win.end - win.new_span, n),
        ],
        _uniform_seconds(rng, win.end - win.new_span, win.end - min(DAY, win.new_span // 2), n),
    )
    country = rng.choice(len(COUNTRIES), n, p=COUNTRY_P)
    activity = rng.lognormal(0.0, 1.0, n)
    activity[rng.random(n) < COLD_SHARE] = 0.0
    available = (win.end - np.maximum(signup, win.start)) / (win.end - win.start)
    rate = activity * available
    rate *= scale.events / EVENTS_PER_SESSION / rate.sum()

    numbers = np.arange(1, n + 1)
    width = _width(n, 6)
    table = pa.Table.from_arrays(
        [
            _ids("C", numbers, width),
            _ids("c", numbers, width, "@example.com"),
            _timestamps(signup),
            pa.array(np.array(COUNTRIES, dtype=object)[country]),
        ],
        schema=arrow_schema("customers"),
    )
    return table, Population(signup, rate)


# ---------------------------------------------------------------------------------------------------------------
# Behaviour simulation


@dataclass
class Items:
    """Products a session touched, one row per (session, product), with the furthest funnel step reached."""

    session: np.ndarray
    product: np.ndarray
    position: np.ndarray  # order within the session
    state: np.ndarray  # VIEW, CLICK, CART_ADD (left in cart), CART_REMOVE or PURCHASE

    def take(self, idx: np.ndarray) -> Items:
        return Items(self.session[idx], self.product[idx], self.position[idx], self.state[idx])

    def concat(self, other: Items) -> Items:
        return Items(*(np.concatenate([a, b]) for a, b in zip(self.__dict__.values(), other.__dict__.values())))

    def event_count(self) -> np.ndarray:
        return 1 + (self.state >= CLICK) + (self.state >= CART_ADD) + (self.state >= CART_REMOVE)


@dataclass
class ChunkEvents:
    """Simulated rows of one chunk, with chunk-local session numbers."""

    customer: np.ndarray
    product: np.ndarray
    kind: np.ndarray
    time: np.ndarray
    session: np.ndarray
    n_sessions: int


def _preferences(cat: Catalog, m: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Preferred categories (m, 3) and how many of them count (1-3) per customer."""
    pref_p = cat.cat_mass**0.6
    prefs = rng.choice(cat.n_categories, (m, 3), p=pref_p / pref_p.sum())
    count = rng.choice(3, m, p=PREF_COUNT_P) + 1
    return prefs, count


def _pick_pref(prefs: np.ndarray, count: np.ndarray, who: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return prefs[who, (rng.random(len(who)) * count[who]).astype(np.int64)]


def _browse(cat: Catalog, m: int, session_customer: np.ndarray, rng: np.random.Generator) -> Items:
    """Products viewed in each session of m customers, and how far down the funnel each went."""
    prefs, n_prefs = _preferences(cat, m, rng)
    favourites = cat.sample(_pick_pref(prefs, n_prefs, np.repeat(np.arange(m), MAX_FAVOURITES), rng), rng)
    favourites = favourites.reshape(m, MAX_FAVOURITES)
    n_favourites = rng.integers(1, MAX_FAVOURITES + 1, m)

    n = len(session_customer)
    global_p = cat.cat_mass / cat.cat_mass.sum()
    session_cat = np.where(
        rng.random(n) < SESSION_IN_PREFS,
        _pick_pref(prefs, n_prefs, session_customer, rng),
        rng.choice(cat.n_categories, n, p=global_p),
    )
    checkout = rng.random(n) < P_CHECKOUT
    sizes = np.minimum(rng.geometric(1.0 / ITEMS_PER_SESSION, n), MAX_ITEMS)

    session = np.repeat(np.arange(n), sizes)
    who = session_customer[session]
    r = rng.random(len(session))
    item_cat = np.select(
        [r < SESSION_IN_CATEGORY, r < SESSION_IN_CATEGORY + ITEM_IN_PREFS],
        [session_cat[session], _pick_pref(prefs, n_prefs, who, rng)],
        rng.choice(cat.n_categories, len(session), p=global_p),
    )
    product = cat.sample(item_cat, rng)
    fav = rng.random(len(session)) < FAVOURITE_SHARE
    product[fav] = favourites[who[fav], (rng.random(fav.sum()) * n_favourites[who[fav]]).astype(np.int64)]

    state = _funnel(fav, checkout[session], rng)
    position = 2 * _rank_in_group(session, n)
    return Items(session, product, position, state)


def _funnel(favourite: np.ndarray, checkout: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The furthest funnel step of each item; purchases only happen in checkout sessions."""
    n = len(favourite)
    click = rng.random(n) < np.where(favourite, P_CLICK_FAV, P_CLICK)
    cart = click & (rng.random(n) < np.where(favourite, P_CART_FAV, P_CART))
    u = rng.random(n)
    after_cart = np.where(
        checkout,
        np.where(u < P_BUY_AT_CHECKOUT, PURCHASE, CART_REMOVE),
        np.where(u < P_REMOVE_ABANDONED, CART_REMOVE, CART_ADD),
    )
    return np.where(cart, after_cart, np.where(click, CLICK, VIEW)).astype(np.int8)


def _add_complements(items: Items, cat: Catalog, rng: np.random.Generator) -> Items:
    """Purchased products often bring one of their complements into the same order."""
    n_comp = cat.n_complements[items.product]
    pick = (items.state == PURCHASE) & (n_comp > 0) & (rng.random(len(items.state)) < P_COMPLEMENT)
    idx = np.flatnonzero(pick)
    slot = (rng.random(len(idx)) * n_comp[idx]).astype(np.int64)
    extra = Items(
        items.session[idx],
        cat.complements[items.product[idx], slot],
        items.position[idx] + 1,
        np.full(len(idx), PURCHASE, dtype=np.int8),
    )
    return items.concat(extra)


def _dedupe(items: Items, n_products: int) -> Items:
    """Keep one row per (session, product): the one that went furthest, ordered by position."""
    key = items.session.astype(np.int64) * n_products + items.product
    order = np.lexsort((-items.state, key))
    first = np.ones(len(order), dtype=bool)
    first[1:] = key[order][1:] != key[order][:-1]
    kept = items.take(order[first])
    return kept.take(np.lexsort((kept.position, kept.session)))


def _session_starts(items: Items, session_customer: np.ndarray, pop: Population, customers: np.ndarray,
                    win: Window, rng: np.random.Generator) -> np.ndarray:
    """Start of each session, seconds into the window, after signup and early enough to end before the window."""
    n = len(session_customer)
    bound = np.bincount(items.session, weights=items.event_count(), minlength=n) * MAX_GAP_S
    low = np.maximum(pop.signup[customers[session_customer]] - win.start, 0) // SECOND
    high = np.maximum(win.length_s - bound, low)
    return _recent_biased(rng, low.astype(np.float64), high.astype(np.float64), float(win.length_s))


def _explode(items: Items) -> tuple[np.ndarray, np.ndarray]:
    """Events as (item row, interaction kind), ordered: browsing, then removals, then the checkout."""
    counts = items.event_count()
    item = np.repeat(np.arange(len(counts)), counts)
    step = _rank_in_group(item, len(counts))
    kind = np.where(step < 3, step, items.state[item]).astype(np.int8)
    phase = np.select([kind == CART_REMOVE, kind == PURCHASE], [1, 2], 0)
    key = ((items.session[item].astype(np.int64) * 3 + phase) * 256 + items.position[item]) * 4 + step
    order = np.argsort(key, kind="stable")
    return item[order], kind[order]


def _event_times(session: np.ndarray, kind: np.ndarray, start_s: np.ndarray, win: Window,
                 rng: np.random.Generator) -> np.ndarray:
    """Timestamps rising within each session; all purchases of a session share the checkout time."""
    gaps = np.clip(np.round(rng.lognormal(np.log(GAP_MEDIAN_S), GAP_SIGMA, len(kind))), 1, MAX_GAP_S)
    same_session = np.zeros(len(kind), dtype=bool)
    same_session[1:] = session[1:] == session[:-1]
    gaps[~same_session] = 0
    repeat_purchase = same_session & (kind == PURCHASE)
    repeat_purchase[1:] &= kind[:-1] == PURCHASE
    gaps[repeat_purchase] = 0
    elapsed = np.cumsum(gaps.astype(np.int64))
    session_first = np.flatnonzero(~same_session)
    elapsed -= np.repeat(elapsed[session_first], np.diff(np.append(session_first, len(kind))))
    return win.start + (start_s[session] + elapsed) * SECOND


def _in_time_order(session_customer: np.ndarray, start: np.ndarray,
                   item_session: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Renumber sessions so that each customer's sessions are numbered in time order."""
    order = np.lexsort((start, session_customer))
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return session_customer[order], start[order], rank[item_session]


def _simulate_chunk(cat: Catalog, pop: Population, customers: np.ndarray, win: Window,
                    rng: np.random.Generator) -> ChunkEvents:
    """All interactions of a chunk of customers (global indices in `customers`)."""
    session_customer = np.repeat(np.arange(len(customers)), rng.poisson(pop.session_rate[customers]))
    items = _browse(cat, len(customers), session_customer, rng)
    items = _dedupe(_add_complements(items, cat, rng), len(cat.category))
    start = _session_starts(items, session_customer, pop, customers, win, rng)
    items = items.take(np.flatnonzero(cat.created[items.product] <= win.start + start[items.session] * SECOND))

    used, items.session = np.unique(items.session, return_inverse=True)
    session_customer, start, items.session = _in_time_order(session_customer[used], start[used], items.session)
    item, kind = _explode(items)
    session = items.session[item]
    times = _event_times(session, kind, start, win, rng)
    keep = times <= win.end
    return ChunkEvents(
        customer=customers[session_customer[session]][keep],
        product=items.product[item][keep],
        kind=kind[keep],
        time=times[keep],
        session=session[keep],
        n_sessions=len(used),
    )


# ---------------------------------------------------------------------------------------------------------------
# Event sources


@dataclass
class Counters:
    """Running numbers that make identifiers unique across chunks."""

    events: int = 0
    sessions: int = 0
    orders: int = 0
    carts: int = 0


def _interactions_table(ev: ChunkEvents, cnt: Counters, cust_w: int, prod_w: int) -> pa.Table:
    n = len(ev.kind)
    return pa.Table.from_arrays(
        [
            _ids("E", cnt.events + 1 + np.arange(n), 10),
            _ids("C", ev.customer + 1, cust_w),
            _ids("P", ev.product + 1, prod_w),
            pa.array(list(INTERACTION_TYPES)).take(pa.array(ev.kind.astype(np.int32))),
            _timestamps(ev.time),
            _ids("S", cnt.sessions + 1 + ev.session, 9),
        ],
        schema=arrow_schema("customer_interactions"),
    )


def _orders_table(ev: ChunkEvents, cat: Catalog, cnt: Counters, cust_w: int, prod_w: int,
                  rng: np.random.Generator) -> tuple[pa.Table, int]:
    """One order per session with purchases; one line per purchased product."""
    idx = np.flatnonzero(ev.kind == PURCHASE)
    used, order = np.unique(ev.session[idx], return_inverse=True)
    product = ev.product[idx]
    quantity = rng.choice(3, len(idx), p=QUANTITY_P).astype(np.int32) + 1
    table = pa.Table.from_arrays(
        [
            _ids("O", cnt.orders + 1 + order, 9),
            _ids("C", ev.customer[idx] + 1, cust_w),
            _ids("P", product + 1, prod_w),
            _timestamps(ev.time[idx]),
            pa.array(quantity, type=pa.int32()),
            pa.array(np.round(quantity * cat.price[product], 2), type=pa.float64()),
        ],
        schema=arrow_schema("orders"),
    )
    return table, len(used)


def _carts_table(ev: ChunkEvents, win: Window, cnt: Counters, cust_w: int, prod_w: int) -> tuple[pa.Table, int]:
    """One cart per session with cart adds; checked out when the session bought something."""
    idx = np.flatnonzero(ev.kind == CART_ADD)
    used, cart = np.unique(ev.session[idx], return_inverse=True)
    bought = np.zeros(ev.n_sessions, dtype=bool)
    bought[ev.session[ev.kind == PURCHASE]] = True
    last = np.full(ev.n_sessions, np.iinfo(np.int64).min)
    np.maximum.at(last, ev.session, ev.time)
    status = np.where(bought, 2, np.where(last >= win.end - OPEN_CART_DAYS * DAY, 0, 1))[ev.session[idx]]
    table = pa.Table.from_arrays(
        [
            _ids("CT", cnt.carts + 1 + cart, 9),
            _ids("C", ev.customer[idx] + 1, cust_w),
            _ids("P", ev.product[idx] + 1, prod_w),
            _timestamps(ev.time[idx]),
            pa.array(list(CART_STATUSES)).take(pa.array(status.astype(np.int32))),
        ],
        schema=arrow_schema("cart_activity"),
    )
    return table, len(used)


# ---------------------------------------------------------------------------------------------------------------
# Files


@contextmanager
def _atomic_paths(out_dir: Path, names: list[str]) -> Iterator[dict[str, Path]]:
    """Temporary paths in out_dir that replace `<name>.parquet` only if the block succeeds."""
    tmp: dict[str, Path] = {}
    try:
        for name in names:
            fd, path = tempfile.mkstemp(dir=out_dir, prefix=f".{name}.", suffix=".parquet.tmp")
            os.close(fd)
            tmp[name] = Path(path)
        yield tmp
        for name, path in tmp.items():
            os.replace(path, out_dir / f"{name}.parquet")
    finally:
        for path in tmp.values():
            path.unlink(missing_ok=True)


def _write_table(table: pa.Table, out_dir: Path, name: str) -> None:
    with _atomic_paths(out_dir, [name]) as tmp:
        pq.write_table(table, tmp[name])


EVENT_SOURCES = ("customer_interactions", "orders", "cart_activity")


def _write_events(cat: Catalog, pop: Population, scale: Scale, win: Window, seed: int, out_dir: Path,
                  say: Callable[[str], None]) -> dict[str, int]:
    """Simulate customers chunk by chunk and stream the three event sources to Parquet."""
    cust_w, prod_w = _width(scale.customers, 6), _width(scale.products, 5)
    counts = dict.fromkeys(EVENT_SOURCES, 0)
    cnt = Counters()
    n_chunks = -(-scale.customers // scale.chunk_customers)
    with _atomic_paths(out_dir, list(EVENT_SOURCES)) as tmp:
        writers = {name: pq.ParquetWriter(tmp[name], arrow_schema(name)) for name in EVENT_SOURCES}
        try:
            for i in range(n_chunks):
                rng = _rng(seed, 2, i)
                customers = np.arange(i * scale.chunk_customers, min((i + 1) * scale.chunk_customers, scale.customers))
                ev = _simulate_chunk(cat, pop, customers, win, rng)
                tables = {"customer_interactions": _interactions_table(ev, cnt, cust_w, prod_w)}
                tables["orders"], n_orders = _orders_table(ev, cat, cnt, cust_w, prod_w, rng)
                tables["cart_activity"], n_carts = _carts_table(ev, win, cnt, cust_w, prod_w)
                for name, table in tables.items():
                    writers[name].write_table(table)
                    counts[name] += table.num_rows
                cnt = Counters(cnt.events + len(ev.kind), cnt.sessions + ev.n_sessions, cnt.orders + n_orders,
                               cnt.carts + n_carts)
                if n_chunks > 1:
                    say(f"chunk {i + 1}/{n_chunks}: {counts['customer_interactions']:,} interactions so far")
        finally:
            for writer in writers.values():
                writer.close()
    return counts


def generate(
    scale: str,
    out_dir: str | Path,
    seed: int = 42,
    end: datetime = datetime(2026, 10, 1),
    days: int = 90,
    progress: Callable[[str], None] | None = None,
) -> dict[str, int]:
    """Write the five sources as `<out_dir>/<source>.parquet` and return the row count of each.

    The same scale and seed give the same values. `end` (naive UTC) closes the `days`-long window of activity.
    """
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose one of {', '.join(SCALES)}")
    if days < 2:
        raise ValueError("days must be at least 2")
    spec = SCALES[scale]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    say = progress or (lambda _line: None)
    win = _window(end, days)
    counts: dict[str, int] = {}

    began = time.perf_counter()
    customers, pop = _make_customers(spec, _rng(seed, 0), win)
    _write_table(customers, out, "customers")
    counts["customers"] = customers.num_rows
    say(f"customers: {customers.num_rows:,} rows in {time.perf_counter() - began:.1f} s")

    began = time.perf_counter()
    products, cat = _make_catalog(spec, _rng(seed, 1), win)
    _write_table(products, out, "products")
    counts["products"] = products.num_rows
    say(f"products: {products.num_rows:,} rows in {time.perf_counter() - began:.1f} s")

    began = time.perf_counter()
    events = _write_events(cat, pop, spec, win, seed, out, say)
    took = time.perf_counter() - began
    for name in EVENT_SOURCES:
        say(f"{name}: {events[name]:,} rows")
    say(f"the three event sources, written in one pass: {took:.1f} s")
    return counts | events
