"""`make reproduce` and `make demo`: the paper-style table, its outputs and report, torchrun helpers."""
