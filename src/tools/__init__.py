"""Tool plumbing shared by the tool activities: URL safety, signing, MCP client."""
