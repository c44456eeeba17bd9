"""Uplink health: the pure state machine, probe windows, and the probing around them."""
