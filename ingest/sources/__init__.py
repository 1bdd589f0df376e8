"""Layer sources: each turns some camera feed into :class:`ingest.messages.LayerMessage` s."""
