"""The benchmarks: each a package run as `python -m bench.<name>`, printing one JSON document.

`python -m bench` (`./dev bench`) runs them all and merges their documents (suite),
and renders the README's performance table from the merged one (report), each
benchmark contributing its own rows (bench/<name>/rows.py). Shared: common (errors,
progress, the JSON document, statistics) and veth (bare namespaces with veth uplinks).
"""
