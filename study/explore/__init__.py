"""Explore one layer and teach the trade-offs: the functions behind notebooks/explore.ipynb and its Voilà page."""
