"""Talking to NATS: the connection and its error translation, the raw-protocol scanner and the JetStream API, the embedded server."""
