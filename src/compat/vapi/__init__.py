"""The Vapi face (/compat/vapi): Vapi's sessions and chats, shaped as Vapi's OpenAPI document
describes them, on Parley's sessions."""
