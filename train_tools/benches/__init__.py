"""Benchmarks: the Gaussian-mixture bench, the correction's overhead, the A/B study, the GPU check."""
