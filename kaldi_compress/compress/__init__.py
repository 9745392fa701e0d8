"""Compression methods: SVD bottlenecks (Kaldi-compatible and beyond), rank budgets."""
