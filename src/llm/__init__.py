"""Model providers: the OpenAI-compatible Chat Completions client and the offline scripted model."""
