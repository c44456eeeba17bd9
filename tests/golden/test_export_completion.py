"""`ecmpd completion bash|zsh|fish`: scripts generated from the parser, run where possible."""

from __future__ import annotations

import argparse
import shutil
import subprocess
from pathlib import Path

import pytest

from ecmpd.cli import completion, export
from ecmpd.cli.main import build_parser, main

# Runs the generated function as bash's programmable completion would: the words so
# far in COMP_WORDS (an empty last word when the line ends in a space), then prints
# what it offers. `compopt` complains outside real completion; that goes to stderr.
BASH_DRIVER = """
source "$1"
read -ra COMP_WORDS <<< "$2"
[[ $2 == *" " ]] && COMP_WORDS+=("")
COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
_ecmpd
printf '%s\\n' "${COMPREPLY[@]}"
"""


def full_parser() -> argparse.ArgumentParser:
    """The real parser, with export and completion in it even before main registers them."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, module in (("export", export), ("completion", completion)):
        if name not in sub.choices:
            module.register(sub)
    return parser


@pytest.fixture(scope="module")
def bash_script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("completion") / "ecmpd.bash"
    path.write_text(completion.script("bash", full_parser()))
    return path


def offered(script: Path, line: str, cwd: Path | None = None) -> list[str]:
    r = subprocess.run(
        ["bash", "-c", BASH_DRIVER, "driver", str(script), line],
        capture_output=True,
        text=True,
        cwd=cwd,
        check=True,
    )
    return [w for w in r.stdout.splitlines() if w]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("ecmpd export --format ", ["ip", "netplan", "networkd", "routeros", "frr"]),
        ("ecmpd export --format net", ["netplan", "networkd"]),
        ("ecmpd export --o", ["--output-dir", "--offline"]),
        ("ecmpd completion ", ["-h", "--help", "bash", "zsh", "fish"]),
        ("ecmpd lab ", ["-h", "--help", "up", "down", "demo"]),
        ("ecmpd lab up --", ["--help", "--dir", "--isps", "--lan", "--edges", "--json"]),
        ("ecmpd lab demo --e", ["--edges"]),
        ("ecmpd explain 192.0.2.1 --proto ", ["icmp", "tcp", "udp"]),
        # `export` is the value of -c here, not the command: still at the top level.
        ("ecmpd -c export ex", ["explain", "export"]),
        ("ecmpd --run-dir /tmp pl", ["plan"]),
    ],
)
def test_bash_completes_from_the_parser(bash_script: Path, line: str, expected: list[str]) -> None:
    assert offered(bash_script, line) == expected


def test_bash_offers_files_for_the_config_and_directories_for_dirs(
    bash_script: Path, tmp_path: Path
) -> None:
    (tmp_path / "my.yaml").write_text("")
    (tmp_path / "mydir").mkdir()
    assert offered(bash_script, "ecmpd -c my", cwd=tmp_path) == ["my.yaml", "mydir"]
    assert offered(bash_script, "ecmpd export --output-dir my", cwd=tmp_path) == ["mydir"]


def test_bash_script_parses(bash_script: Path) -> None:
    subprocess.run(["bash", "-n", str(bash_script)], check=True)


def test_zsh_and_fish_scripts_hold_the_same_tree() -> None:
    zsh = completion.script("zsh", full_parser())
    assert zsh.startswith("#compdef ecmpd\n")
    assert '"ecmpd_export --format") compadd -- ip netplan networkd routeros frr; return ;;' in zsh
    assert "'export:the same policy for another system, on stdout'" in zsh
    fish = completion.script("fish", full_parser())
    assert (
        "complete -c ecmpd -n '__fish_seen_subcommand_from export' -l format"
        " -xa 'ip netplan networkd routeros frr' -d 'target system'\n"
    ) in fish
    assert (
        "complete -c ecmpd -n '__fish_seen_subcommand_from lab; and not"
        " __fish_seen_subcommand_from up down demo'"
        " -a up -d 'build a lab and leave it running'\n"
    ) in fish


@pytest.mark.parametrize(("shell", "check"), [("zsh", ["zsh", "-n"]), ("fish", ["fish", "-n"])])
def test_zsh_and_fish_scripts_parse(shell: str, check: list[str], tmp_path: Path) -> None:
    if shutil.which(check[0]) is None:
        pytest.skip(f"{shell} is not installed")
    path = tmp_path / f"ecmpd.{shell}"
    path.write_text(completion.script(shell, full_parser()))
    subprocess.run([*check, str(path)], check=True)


def test_the_command_prints_the_script_of_the_real_parser(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["completion", "bash"]) == 0  # through the real wiring
    out = capsys.readouterr().out
    assert out.startswith("# bash completion for ecmpd")
    assert out.endswith("complete -F _ecmpd ecmpd\n")
