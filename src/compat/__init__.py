"""Other vendors' API shapes, translated onto Parley's own services: one engine, several faces."""
