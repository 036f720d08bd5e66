"""Offline tools around the library: data, training, evaluation, benches, studies and reproduction."""
