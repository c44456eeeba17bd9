"""How long the failover benchmark waits around a fault, and why."""

from __future__ import annotations

FAULT_JITTER = 0.2  # random delay before a fault, so it falls anywhere in a probe round
# After the group change: flows move within one 5 ms tick, while TCP attempts launched
# just before it need their 200 ms timeout to say they failed.
SETTLE = 0.8
REMOVAL_TIMEOUT = 5.0
RECOVERY_TIMEOUT = 15.0
