"""Benchmarks: the pipeline's stages timed at a synthetic scale, against the floor of one aggregation scan.

`recopipeline bench --scale s` generates (or reuses) the scale's data under the local home, ingests it, runs
every SQL stage of the nightly rebuild in dependency order and reports per stage the wall time, CPU time, rows
written and peak memory of the process, plus the floor and pipeline ÷ floor. See docs/benchmarks.md.
"""
