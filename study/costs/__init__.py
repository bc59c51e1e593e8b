"""What a model costs: bit-exact encodings and storage, the energy model, measured CPU latency."""
