"""Benchmarks: cycle latency, idle cost, footprint and label efficiency.

Each module is a script (`python -m bench.<name>`) that prints its figures and writes
`bench/results/<name>.json`; `python -m bench.run_all` (`make bench`) runs them all and
renders the tables of BENCHMARKS.md from those files.

The machines these run on are shared and noisy, so every timing is a median of repeated
runs, and the headline figures are RATIOS against a reference measured in the same run
on the same server (a bare bulk import, the smallest size, random sampling): a neighbour's
test suite slows both sides of a ratio alike.
"""
