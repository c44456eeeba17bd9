"""Kernel access: netlink messages pyroute2 0.9.7 lacks (nexthops, L4 route lookups)."""
