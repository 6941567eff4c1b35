"""Compatibility faces: other products' chat APIs translated onto Parley's own services."""
