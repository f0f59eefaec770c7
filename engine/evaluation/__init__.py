"""`convlens evaluate`: faithfulness and localization metrics of explanation methods over image sets.

perturb.py and road.py make the perturbed network inputs, metrics.py scores them, evaluator.py runs one
image through every method and metric, store.py keeps results in resumable shards, run.py drives a
whole set (in-process or through Ray, distributed.py), summary.py and report_page.py write the outputs.
"""
