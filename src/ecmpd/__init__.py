"""ecmpd: self-healing multi-path uplinks for Linux."""

__version__ = "0.1.0"
