"""Offline tools: datasets, the bundled demo model, FID, reproduction and benchmarks."""
