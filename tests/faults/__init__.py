"""Fault suite: the hub under a dead, stalled or full Redis and connection storms."""
