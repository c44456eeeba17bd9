"""The config: schema, YAML loading with file:line errors, and checks against the kernel."""

from ecmpd.config.enums import Mode, OnFailure, RuleActionName, WhenAllDown
from ecmpd.config.hashspec import HashSpec
from ecmpd.config.issues import ConfigError, ConfigIssue
from ecmpd.config.kernel_checks import (
    check_against_kernel,
    queue_conflicts,
    warnings_against_kernel,
)
from ecmpd.config.loader import load_config, parse_config
from ecmpd.config.rule import RuleConfig
from ecmpd.config.schema import BalancerConfig, Config, ConnectionsConfig, MetricsConfig
from ecmpd.config.uplink import CheckConfig, UplinkConfig

__all__ = [
    "BalancerConfig",
    "CheckConfig",
    "Config",
    "ConfigError",
    "ConfigIssue",
    "ConnectionsConfig",
    "HashSpec",
    "MetricsConfig",
    "Mode",
    "OnFailure",
    "RuleActionName",
    "RuleConfig",
    "UplinkConfig",
    "WhenAllDown",
    "check_against_kernel",
    "load_config",
    "parse_config",
    "queue_conflicts",
    "warnings_against_kernel",
]
