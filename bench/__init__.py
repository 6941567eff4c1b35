"""Parley's benchmarks (`make bench`): turn overhead against a bare-Temporal floor, the
signal + query-polling anchor, history growth, and scale. Figures, never assertions."""
