"""Render the desired state for other systems (ip, netplan, networkd, RouterOS)."""
