"""Parley: self-hostable AI-agent chat sessions on Temporal durable workflows."""
