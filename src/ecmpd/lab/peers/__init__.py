"""Real third-party peers in the lab: dnsmasq, dhcpcd, radvd and OpenVPN, one module each.

Each runs inside a lab namespace (never systemd, never the root namespace), with its
configuration, leases, pid files and sockets in a private directory of the caller's
work directory, and is stopped by its context manager (SIGTERM, then SIGKILL), also
when the test or the demo fails. Removing the lab's namespaces ends any straggler.
"""
