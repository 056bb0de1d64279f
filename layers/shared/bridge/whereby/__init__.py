"""Whereby: the REST client, the shared points budget and the sweep that keeps no room leaked."""
