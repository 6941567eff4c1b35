"""Activities: every piece of I/O a workflow needs, one module per job a workflow hands out.

- session_store: the conversation's rows (opened, messages and audit events, final record,
  artifact, answered idempotency keys) in Parley's database;
- llm: one model call for a turn, the transcript read from the database by reference;
- analysis: the post-conversation analysis (a model call with structured output);
- webhook_tools / mcp_tools: an agent's tool calls, to an HTTP webhook or an MCP server;
- webhooks: completion-webhook deliveries (session events to the agent's receiver);
- heartbeats: the heartbeat loop the long ones share.

Several read the database besides their outside system (the agent snapshot, the session),
so "one outside system per module" would not be true; each module is one job.
"""
