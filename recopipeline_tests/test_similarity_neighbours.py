"""product_similarity's neighbour lists give exactly the rows of the full within-category pair join.

The pair join below is the stage's earlier SQL, kept here as the reference: it scores every same-category pair
that shares a brand or a price band, then ranks. The stage finds the same top K from short lists per brand and
price; the two must agree row for row (keys, scores, ranks) on catalogues built to break a shortcut: many equal
prices, unknown and infinite prices, prices on the band's edge, unknown brands and few brands.
"""

import duckdb
import numpy as np
import pandas as pd
import pytest

from recopipeline.lib.warehouse import load_sql

PAIR_JOIN_SQL = """
-- product_similarity: the tutorial's attribute score, in both directions, top-K neighbours per product.
--   score = 0.4 x same category + 0.3 x (0.8 if same brand) + 0.3 x (0.6 if prices within the band)
-- Without a category match the score is at most 0.42, below any allowed threshold (> 0.42), so only
-- same-category pairs that also share a brand or a price band can qualify. We join exactly those
-- candidates instead of the tutorial's N^2 cross join. Prices a, b are within the band when
-- |a - b| / max(a, b) < band, i.e. a(1 - band) < b < a / (1 - band). An unknown (NULL) brand or price
-- matches nothing: such a product is similar only through what is known.
WITH catalogue AS (
    SELECT product_key, category, brand, price FROM products
),
candidates AS (
    SELECT a.product_key AS product_key_1, b.product_key AS product_key_2
    FROM catalogue AS a
    JOIN catalogue AS b
      ON a.category = b.category AND a.brand = b.brand AND a.product_key <> b.product_key
    UNION
    SELECT a.product_key, b.product_key
    FROM catalogue AS a
    JOIN catalogue AS b
      ON a.category = b.category
     AND b.price > a.price * (1 - getvariable('price_band'))
     AND b.price < a.price / (1 - getvariable('price_band'))
     AND a.product_key <> b.product_key
),
scored AS (
    SELECT c.product_key_1,
           c.product_key_2,
           1.0                                                               AS category_match,
           CASE WHEN a.brand = b.brand THEN 0.8 ELSE 0.0 END                 AS brand_match,
           CASE WHEN abs(a.price - b.price) / nullif(greatest(a.price, b.price), 0) < getvariable('price_band')
                THEN 0.6 ELSE 0.0 END                                        AS price_similarity,
           abs(a.price - b.price)                                            AS price_gap
    FROM candidates AS c
    JOIN catalogue AS a ON a.product_key = c.product_key_1
    JOIN catalogue AS b ON b.product_key = c.product_key_2
)
SELECT product_key_1,
       product_key_2,
       category_match,
       brand_match,
       price_similarity,
       round(category_match * 0.4 + brand_match * 0.3 + price_similarity * 0.3, 6) AS attribute_similarity_score,
       row_number() OVER (
           PARTITION BY product_key_1
           ORDER BY attribute_similarity_score DESC, price_gap, product_key_2
       ) AS similarity_rank
FROM scored
WHERE round(category_match * 0.4 + brand_match * 0.3 + price_similarity * 0.3, 6) >= getvariable('similarity_threshold')
QUALIFY similarity_rank <= getvariable('similarity_top_k')
"""

# few prices, so many products share one; 100 / 125 and 1.0 / 1.25 are exactly on the 20 % band's edge;
# None is an unknown price, and the warehouse can also hold NaN and infinity (they pass `price >= 0`)
PRICES = [0.0, 0.49, 0.99, 1.0, 1.19, 1.2, 1.25, 1.5, 2.5, 3.0, 80.0, 100.0, 125.0, 999.99, None, "nan", "inf"]


def catalogue(seed: int, products: int, categories: int, brands: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    prices = [PRICES[i] for i in rng.choice(len(PRICES), products, p=_price_weights())]
    brand = rng.integers(0, brands, products)
    return pd.DataFrame({
        "product_key": (rng.permutation(products) + 1).astype("int32"),
        "category": [f"C{c}" for c in rng.integers(0, categories, products)],
        "brand": pd.array([None if rng.random() < 0.1 else f"B{b}" for b in brand], dtype="string"),
        "price": pd.array([None if p is None else str(p) for p in prices], dtype="string"),  # DOUBLE in SQL
    })


def _price_weights() -> np.ndarray:
    weights = np.array([1, 6, 6, 8, 4, 4, 4, 5, 3, 3, 2, 3, 2, 1, 2, 0.5, 0.5])
    return weights / weights.sum()


def similarity(frame: pd.DataFrame, sql: str, **values) -> duckdb.DuckDBPyRelation:
    con = duckdb.connect()
    con.sql("SET threads = 1")
    con.register("given", frame)
    con.sql("CREATE TABLE products AS SELECT product_key, category, brand, price::DOUBLE AS price FROM given")
    for name, value in values.items():
        con.sql(f"SET VARIABLE {name} = {value}")
    con.sql(f"CREATE TABLE result AS {sql}")
    return con


SETTINGS = [
    dict(similarity_threshold=0.5, similarity_top_k=50, price_band=0.2),
    dict(similarity_threshold=0.5, similarity_top_k=3, price_band=0.2),
    dict(similarity_threshold=0.5, similarity_top_k=1, price_band=0.05),
    dict(similarity_threshold=0.6, similarity_top_k=10, price_band=0.2),
    dict(similarity_threshold=0.7, similarity_top_k=7, price_band=0.6),
    dict(similarity_threshold=0.45, similarity_top_k=20, price_band=0.5),
    dict(similarity_threshold=0.9, similarity_top_k=5, price_band=0.2),
    dict(similarity_threshold=0.5, similarity_top_k=0, price_band=0.2),
]


@pytest.mark.parametrize("values", SETTINGS, ids=lambda v: "-".join(str(x) for x in v.values()))
@pytest.mark.parametrize("seed, products, categories, brands", [(1, 600, 2, 2), (2, 1500, 3, 1), (3, 900, 5, 6)])
def test_neighbour_lists_give_the_pair_joins_rows(values, seed, products, categories, brands):
    frame = catalogue(seed, products, categories, brands)
    ours = similarity(frame, load_sql("product_similarity"), **values)
    reference = similarity(frame, PAIR_JOIN_SQL, **values)
    ours_rows = ours.sql("SELECT * FROM result ORDER BY product_key_1, similarity_rank").fetchall()
    reference_rows = reference.sql("SELECT * FROM result ORDER BY product_key_1, similarity_rank").fetchall()
    assert ours.sql("DESCRIBE result").fetchall() == reference.sql("DESCRIBE result").fetchall()
    assert len(ours_rows) == len(reference_rows)
    assert ours_rows == reference_rows
    if values["similarity_top_k"] and values["similarity_threshold"] < 0.8:
        assert reference_rows  # the catalogue is not trivially empty
