"""Pieces of tools/paper_bench.py: the results store, the layer sweeps, the model tables."""
