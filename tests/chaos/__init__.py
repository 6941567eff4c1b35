"""The chaos suite: faults injected into a running Parley, with counts of what survived."""
