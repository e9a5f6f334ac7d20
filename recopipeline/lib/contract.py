"""The data contract of the sources: column names, DuckDB types, nullability, length limits and keys.

Every source file (CSV or Parquet) that the pipeline ingests, and every file the synthetic generator or the
Online Retail adapter writes, follows this contract. Five sources are the shop's data and must be present; the
sixth, `merchandising_rules`, is optional (no file: no rules). `docs/data_contract.md` explains each column and what a
missing optional value means. Timestamps are stored naive and in UTC. Identifiers are strings.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

INTERACTION_TYPES = ("view", "click", "cart_add", "cart_remove", "purchase")
CART_STATUSES = ("open", "abandoned", "checked_out")
RULE_ACTIONS = ("exclude", "boost", "bury", "pin")
# where lists are served (docs/serving.md); a merchandising rule names one
PLACEMENTS = ("home", "product_page", "cart", "recently_viewed", "buy_it_again", "trending")
HOME = "home"  # the personal blend: its rules are applied in the pipeline, the other placements' when answering
PINNED = "pinned"  # the recommendation type of a pinned product that was none of the customer's candidates
SEGMENTS = ("new", "returning", "vip", "at_risk")  # customer_segments.sql


# Length limits of text values, in characters; a longer value is quarantined (value_too_long).
ID_LENGTH = 64
NAME_LENGTH = 200
LABEL_LENGTH = 100  # category, brand, country
EMAIL_LENGTH = 254  # the longest address SMTP can carry (RFC 5321)
SESSION_LENGTH = 128
RULE_PRODUCTS_LENGTH = 4000  # a rule's '|'-separated product ids


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    nullable: bool
    description: str
    max_length: int | None = None  # VARCHAR only: the most characters a value may have
    may_be_future: bool = False  # TIMESTAMP only: a time after the ingest is valid (a rule's validity window)


@dataclass(frozen=True)
class SourceContract:
    name: str
    key: tuple[str, ...]
    columns: tuple[Column, ...]
    description: str
    event_time: str | None = None  # the column that places a row in time, for event sources
    optional: bool = False  # a source location may lack it: then its table is empty

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


CUSTOMERS = SourceContract(
    name="customers",
    key=("customer_id",),
    description="Known customers of the shop; every customer here is served recommendations.",
    columns=(
        Column("customer_id", "VARCHAR", False, "Stable customer identifier.", ID_LENGTH),
        Column("email", "VARCHAR", True, "Contact address; not used for scoring.", EMAIL_LENGTH),
        Column("signup_date", "TIMESTAMP", True, "When the customer account was created."),
        Column("country", "VARCHAR", True, "Customer country, free text.", LABEL_LENGTH),
    ),
)

PRODUCTS = SourceContract(
    name="products",
    key=("product_id",),
    description="The product catalogue as it is now (a snapshot, not a history).",
    columns=(
        Column("product_id", "VARCHAR", False, "Stable product identifier.", ID_LENGTH),
        Column("product_name", "VARCHAR", True, "Display name; null when unknown (the product id is shown).",
               NAME_LENGTH),
        Column("category", "VARCHAR", False, "Leaf category; products are compared within a category.", LABEL_LENGTH),
        Column("brand", "VARCHAR", True, "Brand; null when unknown (never matches another product's brand).",
               LABEL_LENGTH),
        Column("price", "DOUBLE", True, "Current unit price, >= 0; null when unknown (matches no price band)."),
        Column("stock_quantity", "INTEGER", True, "Units in stock; 0 is out of stock, null (unknown) is in stock."),
        Column("is_active", "BOOLEAN", False, "False for delisted products; they are never recommended."),
        Column("created_at", "TIMESTAMP", True, "When the product was listed; null when unknown (not scored)."),
    ),
)

ORDERS = SourceContract(
    name="orders",
    key=("order_id", "product_id"),
    event_time="order_timestamp",
    description="Order lines: one row per product in an order (repeated lines of a product are summed).",
    columns=(
        Column("order_id", "VARCHAR", False, "Order identifier, shared by the lines of one order.", ID_LENGTH),
        Column("customer_id", "VARCHAR", False, "Buyer.", ID_LENGTH),
        Column("product_id", "VARCHAR", False, "Product bought.", ID_LENGTH),
        Column("order_timestamp", "TIMESTAMP", False, "When the order was placed (UTC)."),
        Column("quantity", "INTEGER", False, "Units bought, > 0."),
        Column("line_value", "DOUBLE", False, "Value of the line (quantity x unit price), >= 0."),
    ),
)

CUSTOMER_INTERACTIONS = SourceContract(
    name="customer_interactions",
    key=("event_id",),
    event_time="interaction_timestamp",
    description="Behaviour events from the shop front-end: views, clicks, cart adds and removes, purchases.",
    columns=(
        Column("event_id", "VARCHAR", False, "Unique event identifier (deduplication key).", ID_LENGTH),
        Column("customer_id", "VARCHAR", False, "Customer who acted.", ID_LENGTH),
        Column("product_id", "VARCHAR", False, "Product acted on.", ID_LENGTH),
        Column("interaction_type", "VARCHAR", False, "One of view, click, cart_add, cart_remove, purchase."),
        Column("interaction_timestamp", "TIMESTAMP", False, "When it happened (UTC)."),
        Column("session_id", "VARCHAR", True, "Browse session; null for events outside a session.", SESSION_LENGTH),
    ),
)

CART_ACTIVITY = SourceContract(
    name="cart_activity",
    key=("cart_id", "product_id"),
    event_time="added_at",
    description="Products placed in carts, with the cart's outcome.",
    columns=(
        Column("cart_id", "VARCHAR", False, "Cart identifier.", ID_LENGTH),
        Column("customer_id", "VARCHAR", False, "Cart owner.", ID_LENGTH),
        Column("product_id", "VARCHAR", False, "Product in the cart.", ID_LENGTH),
        Column("added_at", "TIMESTAMP", False, "When the product was added (UTC)."),
        Column("cart_status", "VARCHAR", False, "open, abandoned or checked_out."),
    ),
)

MERCHANDISING_RULES = SourceContract(
    name="merchandising_rules",
    key=("rule_id",),
    optional=True,
    description="The shop's merchandising rules: products to exclude, boost, bury or pin in a placement's lists, "
    "each within its validity window. A product matches a rule when it meets every condition the rule gives.",
    columns=(
        Column("rule_id", "VARCHAR", False, "Stable rule identifier; shown in the evidence as rule:<id>.", ID_LENGTH),
        Column("action", "VARCHAR", False, "One of exclude, boost, bury, pin."),
        Column("placement", "VARCHAR", False, "Where the rule applies: home, product_page, cart, recently_viewed, "
               "buy_it_again or trending."),
        Column("customer_segment", "VARCHAR", True,
               "Only for customers of this segment (new, returning, vip, at_risk); null: every customer."),
        Column("product_ids", "VARCHAR", True,
               "Products matched, separated by '|'; a pin names exactly one. Null: no product condition.",
               RULE_PRODUCTS_LENGTH),
        Column("category", "VARCHAR", True, "Products of this category; null: any.", LABEL_LENGTH),
        Column("brand", "VARCHAR", True, "Products of this brand; null: any.", LABEL_LENGTH),
        Column("min_price", "DOUBLE", True, "Products priced at least this (a product of unknown price does not "
               "match a price condition); null: no lower bound."),
        Column("max_price", "DOUBLE", True, "Products priced at most this; null: no upper bound."),
        Column("new_within_days", "INTEGER", True,
               "Products listed (created_at) within this many days before the as-of time; null: any age."),
        Column("value", "DOUBLE", True,
               "boost: a factor > 1 on the score; bury: a factor in (0, 1); pin: the position (1 = first); "
               "exclude: none."),
        Column("valid_from", "TIMESTAMP", True, "The rule applies from this time (UTC); null: always has.",
               may_be_future=True),
        Column("valid_to", "TIMESTAMP", True, "The rule applies until just before this time (UTC); null: no end.",
               may_be_future=True),
        Column("priority", "INTEGER", True, "Between pins competing for a position or a product, the higher "
               "priority wins (then the smaller rule id); null is 0."),
    ),
)

SOURCES: dict[str, SourceContract] = {
    c.name: c for c in (CUSTOMERS, PRODUCTS, ORDERS, CUSTOMER_INTERACTIONS, CART_ACTIVITY, MERCHANDISING_RULES)
}
# the sources every source location must hold
REQUIRED_SOURCES = tuple(name for name, contract in SOURCES.items() if not contract.optional)
# the sources partitioned by hour: their rows are events with an event time
EVENT_SOURCES = tuple(name for name, contract in SOURCES.items() if contract.event_time is not None)


_ARROW_TYPES = {
    "VARCHAR": pa.string(),
    "TIMESTAMP": pa.timestamp("us"),
    "INTEGER": pa.int32(),
    "DOUBLE": pa.float64(),
    "BOOLEAN": pa.bool_(),
}


def arrow_schema(source: str) -> pa.Schema:
    """The Arrow schema of a source, in contract order, with its types and nullability."""
    return pa.schema([pa.field(c.name, _ARROW_TYPES[c.type], nullable=c.nullable) for c in SOURCES[source].columns])
