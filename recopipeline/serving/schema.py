"""The serving database's tables (SQLAlchemy Core), the same on SQLite and Postgres.

Rows of every kept version live side by side, tagged with their version; `serving_state` holds the one live
version. Readers join the pointer in the same statement, so one read sees exactly one version.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
)

COLD_START = "__cold_start__"  # the customer id of the list served to customers without their own rows
TRENDING = "__trending__"  # the customer id of the trending list (product_trending), one per variant
LISTS = (COLD_START, TRENDING)  # the lists served beside the customers' own
RELATIONS = ("similar", "complementary", "bought_together")
FEEDBACK_EVENTS = ("impression", "click", "purchase")  # older databases are upgraded on open (database.py)

metadata = MetaData()

customer_recommendations = Table(
    "customer_recommendations",
    metadata,
    Column("version", Integer, nullable=False),
    Column("customer_id", String, nullable=False),
    Column("variant", String, nullable=False),
    Column("rank", Integer, nullable=False),
    Column("product_id", String, nullable=False),
    Column("product_name", String, nullable=False),
    Column("recommendation_type", String, nullable=False),
    Column("score", Float, nullable=False),
    Column("evidence", Text),
    Column("generated_at", DateTime, nullable=False),
    # the lookup: one version's rows of one customer, in rank order
    PrimaryKeyConstraint("version", "customer_id", "variant", "rank", name="customer_recommendations_pk"),
    CheckConstraint("rank >= 1", name="customer_recommendations_rank"),
    sqlite_with_rowid=False,  # SQLite stores the rows in primary-key order: a customer's rows sit together
)

customer_placement_lists = Table(
    # the per-customer lists of the recently_viewed and buy_it_again placements
    "customer_placement_lists",
    metadata,
    Column("version", Integer, nullable=False),
    Column("customer_id", String, nullable=False),
    Column("placement", String, nullable=False),
    Column("rank", Integer, nullable=False),
    Column("product_id", String, nullable=False),
    Column("product_name", String, nullable=False),
    Column("score", Float, nullable=False),
    Column("evidence", Text),
    Column("generated_at", DateTime, nullable=False),
    PrimaryKeyConstraint("version", "customer_id", "placement", "rank", name="customer_placement_lists_pk"),
    CheckConstraint("rank >= 1", name="customer_placement_lists_rank"),
    sqlite_with_rowid=False,
)

placement_rules = Table(
    # the merchandising rules the read API applies when it answers (every placement's but home's, and home's without
    # a segment for the cold-start list), each with the products it matches and its validity window
    "placement_rules",
    metadata,
    Column("version", Integer, nullable=False),
    Column("placement", String, nullable=False),
    Column("rule_id", String, nullable=False),
    Column("product_id", String, nullable=False),
    Column("product_name", String, nullable=False),
    Column("action", String, nullable=False),
    Column("value", Float),
    Column("priority", Integer, nullable=False),
    Column("valid_from", DateTime),
    Column("valid_to", DateTime),
    Column("customer_segment", String),  # only for customers of this segment (customer_segments); null: everyone
    PrimaryKeyConstraint("version", "placement", "rule_id", "product_id", name="placement_rules_pk"),
    sqlite_with_rowid=False,
)

customer_segments = Table(
    # each known customer's segment as of the version's nightly run: the segment rules of the placements answered
    # at request time look it up
    "customer_segments",
    metadata,
    Column("version", Integer, nullable=False),
    Column("customer_id", String, nullable=False),
    Column("customer_segment", String, nullable=False),
    PrimaryKeyConstraint("version", "customer_id", name="customer_segments_pk"),
    sqlite_with_rowid=False,
)

product_relations = Table(
    "product_relations",
    metadata,
    Column("version", Integer, nullable=False),
    Column("product_id", String, nullable=False),
    Column("relation", String, nullable=False),
    Column("rank", Integer, nullable=False),
    Column("related_product_id", String, nullable=False),
    Column("related_product_name", String, nullable=False),
    Column("score", Float, nullable=False),
    PrimaryKeyConstraint("version", "product_id", "relation", "rank", name="product_relations_pk"),
    CheckConstraint("rank >= 1", name="product_relations_rank"),
    CheckConstraint(f"relation IN ({', '.join(repr(r) for r in RELATIONS)})", name="product_relations_relation"),
    sqlite_with_rowid=False,
)

publications = Table(
    "publications",
    metadata,
    # a full publication's id is the version it created; a customers publication updates the live version
    Column("publication_id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String, nullable=False),  # full | customers
    Column("version", Integer),
    Column("revision", Integer),
    Column("status", String, nullable=False),  # staging | live | retired | rolled_back | expired | failed | applied
    Column("run_id", String),
    Column("customer_rows", Integer),
    Column("customers", Integer),
    Column("relation_rows", Integer),
    Column("checks_passed", Boolean),
    Column("checks", Text),  # JSON: audit name -> {"passed", "expected", "actual"}
    Column("experiment", Text),  # JSON: salt and variants, to assign customers without rows
    Column("message", Text),
    Column("created_at", DateTime, nullable=False),
    Column("published_at", DateTime),
)

serving_state = Table(
    "serving_state",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),  # always 1: one live pointer
    Column("current_version", Integer, nullable=False),
    Column("revision", Integer, nullable=False),  # bumped by customers publications and rollbacks
    Column("updated_at", DateTime, nullable=False),
)

recommendation_feedback = Table(
    "recommendation_feedback",
    metadata,
    Column("feedback_id", Integer, primary_key=True, autoincrement=True),
    Column("event", String, nullable=False),
    Column("customer_id", String, nullable=False),
    Column("product_id", String, nullable=False),
    Column("variant", String, nullable=False),
    Column("recommendation_type", String, nullable=False),
    Column("version", Integer),
    Column("rank", Integer),
    Column("recorded_at", DateTime, nullable=False),
    Column("recommendation_id", String),  # the answer it belongs to (added to older databases on open)
    Column("revenue", Float),  # a purchase's value as the shop reported it (purchase events only)
    Column("placement", String),  # where the answer was shown (home, product_page, cart, ...); null: not known
    CheckConstraint(f"event IN ({', '.join(repr(e) for e in FEEDBACK_EVENTS)})", name="feedback_event"),
    Index("recommendation_feedback_recorded_at", "recorded_at"),
    Index("recommendation_feedback_answer", "recommendation_id", "product_id"),  # a click's impression
    implicit_returning=False,  # no INSERT ... RETURNING: readers may insert feedback without reading it
)
