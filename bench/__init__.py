"""hookd benchmarks: burst drain, publish overhead and idle latency against this machine's limits.

Run everything with `make bench` (full) or `make bench-smoke` (reduced sizes); see bench/README.md.
"""
