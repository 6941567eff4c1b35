"""The SMS channel (Twilio): phone numbers, signed webhooks, keywords, sending texts."""
