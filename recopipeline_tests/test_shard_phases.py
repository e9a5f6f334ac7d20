"""The order of a nightly rebuild over customer buckets when the daemon runs it (defs/automation/shard_sensor.py)."""

from recopipeline.defs.automation.shard_sensor import NIGHT_TAG, next_phase_requests

BUCKETS = ["bucket-0000", "bucket-0001", "bucket-0002"]
AS_OF = "2026-09-30T02:00:00"


def bucket_run(night: str, key: str) -> dict[str, str]:
    return {NIGHT_TAG: night, "dagster/partition": key}


def test_the_ingest_starts_a_run_per_bucket_of_the_partials_as_of_one_time():
    requests = next_phase_requests("full_rebuild", {"dagster/run_id": "r1"}, [], BUCKETS, AS_OF)
    assert [(r.job_name, r.partition_key) for r in requests] == [("shard_partials", key) for key in BUCKETS]
    assert all(r.tags == {NIGHT_TAG: "r1", "recopipeline/as_of": AS_OF} for r in requests)
    assert len({r.run_key for r in requests}) == 3


def test_the_item_side_waits_for_every_bucket_of_its_night():
    tags = bucket_run("r1", "bucket-0001")
    two = [bucket_run("r1", "bucket-0000"), tags, bucket_run("r0", "bucket-0002")]  # bucket 2 of another night
    assert next_phase_requests("shard_partials", tags, two, BUCKETS, AS_OF) == []
    every = [*two, bucket_run("r1", "bucket-0002")]
    (request,) = next_phase_requests("shard_partials", tags, every, BUCKETS, AS_OF)
    assert (request.job_name, request.partition_key, request.run_key) == ("shard_item_side", None, "r1:shard_item_side")
    # the last two buckets ending together ask for the same run: its run key makes it one
    assert next_phase_requests("shard_partials", bucket_run("r1", "bucket-0002"), every, BUCKETS, AS_OF) == [request]


def test_then_the_customers_per_bucket_then_the_publish_and_nothing_after_it():
    night = {NIGHT_TAG: "r1", "dagster/run_id": "r5"}
    customers = next_phase_requests("shard_item_side", night, [], BUCKETS, AS_OF)
    assert [(r.job_name, r.partition_key) for r in customers] == [("shard_customers", key) for key in BUCKETS]
    done = [bucket_run("r1", key) for key in BUCKETS]
    (publish,) = next_phase_requests("shard_customers", done[0], done, BUCKETS, AS_OF)
    assert publish.job_name == "shard_publish"
    assert next_phase_requests("shard_publish", night, [], BUCKETS, AS_OF) == []
