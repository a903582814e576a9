"""The devices' MQTT side: ingest (subscriber, protocol v1, dead letters) and the command
link that publishes the server's commands back to them."""
