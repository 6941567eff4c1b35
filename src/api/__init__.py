"""The HTTP API: routes, auth, request/response schemas. It only translates."""
