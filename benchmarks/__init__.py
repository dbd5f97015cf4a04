"""curvelab's benchmarks: what curvelab costs against doing the same by hand.

``python -m benchmarks`` (``make bench``) runs every figure and prints one
table; each module holds one figure and can be run on its own. Every figure is
a ratio against a baseline measured in the same run on the same machine (these
machines are shared and noisy): medians of interleaved or repeated samples,
never a timed test. ``README.md`` records the latest table and its machine.
"""
