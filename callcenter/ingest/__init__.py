"""Device ingest: MQTT subscriber, protocol v1, dead letters."""
