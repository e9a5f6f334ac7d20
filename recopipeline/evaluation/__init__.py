"""Offline evaluation on real data: a temporal split, the pipeline and baselines scored with ranking metrics.

`recopipeline evaluate` trains on the orders before a cut date (the pipeline's SQL with as_of = the cut) and
scores every method's top-k lists against what each customer bought after it. See docs/evaluation.md.
"""
