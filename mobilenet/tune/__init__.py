"""`invoke tune`: INT8 settings chosen by measurement, under one rule for every toolkit.

For each INT8 variant with a grid (grid.py), every setting is built from the FP32 model the
build folder already holds (build.py, two variants' grids at a time), scored on a tuning split
that is neither calibration nor evaluation photos, and timed briefly in interleaved sessions;
rule.py picks the winner; run.py orchestrates and writes build/tune/ (records.py). The ordinary
build then uses this target's winners (winners.py) and scores only the photos not tuned on.

This package's __init__ imports nothing: the builders import tune.winners.
"""
