"""Activities: every piece of I/O a workflow needs, one outside system per module."""
