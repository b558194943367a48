"""Benchmarks, one script per question (bench/README.md), over the helper they share
(bench/common.py). Nothing in the project imports them."""
