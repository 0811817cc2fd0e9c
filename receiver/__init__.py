"""The Alertmanager webhook receiver that turns alerts into flow runs (see receiver.app)."""
