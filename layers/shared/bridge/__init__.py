"""Shared layer of the Whereby bridge: peers, store, queue and the use-cases the handlers call."""
