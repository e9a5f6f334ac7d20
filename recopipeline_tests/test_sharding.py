import duckdb

from recopipeline.lib.sharding import customer_bucket, customer_bucket_sql


def test_python_and_sql_agree_and_spread_customers():
    ids = [f"C{i:06d}" for i in range(2000)] + ["é-ünïcode", "17850"]
    con = duckdb.connect()
    con.register("ids", __import__("pandas").DataFrame({"customer_id": ids}))
    sql = con.sql(f"SELECT customer_id, {customer_bucket_sql('customer_id', 16)} AS b FROM ids").fetchall()
    assert {c: b for c, b in sql} == {c: customer_bucket(c, 16) for c in ids}
    sizes = [sum(1 for _, b in sql if b == k) for k in range(16)]
    assert min(sizes) > 80  # about 125 each
