"""The `ecmpd` command line: one module per command."""
