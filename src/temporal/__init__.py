"""How Parley meets Temporal: one client plugin (`client.py`), the search attributes and
failure types it persists, and finding, exporting and replaying recorded histories."""
