"""Plumbing every stage shares: data, models, the training loop, parameters, files."""
