"""The algorithms: constraint sets and exact projections, ADMM, progressive pruning, quantization, compaction."""
