"""`ecmpd completion bash|zsh|fish`: a shell completion script generated from the parser.

The parser is walked into a tree of commands (options, their values, sub-commands),
and each shell's script is written from that tree, so a new option or command
completes without anyone editing a script by hand.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from ecmpd.cli.common import EXIT_OK

SHELLS = ("bash", "zsh", "fish")
PROG = "ecmpd"


@dataclass(frozen=True)
class Option:
    """One option: its spellings, help, and what its value completes to."""

    flags: tuple[str, ...]
    help: str
    takes_value: bool
    choices: tuple[str, ...] = ()
    completes: str = ""  # "file", "dir" or "" (nothing to offer)


@dataclass
class Command:
    """A command or sub-command: where it sits, its options and its sub-commands."""

    path: tuple[str, ...]
    help: str = ""
    options: list[Option] = field(default_factory=list)
    subcommands: list[Command] = field(default_factory=list)
    arguments: list[str] = field(default_factory=list)  # choices of positional arguments

    @property
    def id(self) -> str:
        """A shell-safe name for this position in the command tree."""
        return "_".join(self.path).replace("-", "_")

    def walk(self) -> list[Command]:
        """This command and every command below it, parents first."""
        return [self, *(c for sub in self.subcommands for c in sub.walk())]


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], root: argparse.ArgumentParser
) -> None:
    """Adds `completion`, whose script is written from root: the whole command line."""
    p = sub.add_parser("completion", help="print a shell completion script")
    p.add_argument("shell", choices=SHELLS)
    p.set_defaults(func=lambda args: run(args, root))


def run(args: argparse.Namespace, root: argparse.ArgumentParser) -> int:
    print(script(args.shell, root), end="")
    return EXIT_OK


def script(shell: str, parser: argparse.ArgumentParser) -> str:
    """The completion script for `shell` (bash, zsh or fish)."""
    tree = command_tree(parser)
    return {"bash": bash, "zsh": zsh, "fish": fish}[shell](tree)


def command_tree(parser: argparse.ArgumentParser, path: tuple[str, ...] = (PROG,)) -> Command:
    """The parser as a tree of commands."""
    command = Command(path, parser.description or "")
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, subparser in action.choices.items():
                child = command_tree(subparser, (*path, name))
                child.help = helps.get(name, "")
                command.subcommands.append(child)
        elif action.option_strings and action.help != argparse.SUPPRESS:
            # Expanded as --help shows it (%(default)s and the like filled in).
            text = parser._get_formatter()._expand_help(action) if action.help else ""
            command.options.append(_option(action, text))
        elif action.choices:
            command.arguments += [str(c) for c in action.choices]
    return command


def _option(action: argparse.Action, help_text: str) -> Option:
    takes_value = action.nargs != 0
    choices = tuple(str(c) for c in action.choices) if action.choices else ()
    completes = ""
    if takes_value and not choices:
        if action.dest.endswith("dir"):
            completes = "dir"
        elif action.type is Path or action.dest == "config":
            completes = "file"
    return Option(tuple(action.option_strings), help_text, takes_value, choices, completes)


def _words(command: Command) -> str:
    flags = [f for o in command.options for f in o.flags]
    return " ".join([*flags, *(c.path[-1] for c in command.subcommands), *command.arguments])


def _walk_cases(tree: Command, indent: str) -> list[str]:
    """`case` arms that follow the words typed so far down the tree (bash and zsh alike).

    `$at` names the command reached; `skip` steps over an option's value, so a value
    that happens to spell a command name is not taken for one.
    """
    lines = []
    for command in tree.walk():
        valued = [f for o in command.options if o.takes_value for f in o.flags]
        if valued:
            pattern = "|".join(f'"{command.id} {f}"' for f in valued)
            lines.append(f"{indent}{pattern}) skip=1 ;;")
        for sub in command.subcommands:
            lines.append(f'{indent}"{command.id} {sub.path[-1]}") at={sub.id} ;;')
    return lines


def _value_cases(tree: Command, indent: str, offer: dict[str, str]) -> list[str]:
    """`case` arms completing an option's value, with `offer` per kind of value."""
    lines = []
    for command in tree.walk():
        for option in command.options:
            if not option.takes_value:
                continue
            pattern = "|".join(f'"{command.id} {f}"' for f in option.flags)
            if option.choices:
                action = offer["words"].format(words=" ".join(option.choices))
            else:
                action = offer[option.completes or "none"]
            lines.append(f"{indent}{pattern}) {action}; return ;;")
    return lines


def bash(tree: Command) -> str:
    """The bash completion script."""
    offer = {
        "words": 'COMPREPLY=($(compgen -W "{words}" -- "$cur"))',
        "file": 'COMPREPLY=($(compgen -f -- "$cur")); compopt -o filenames',
        "dir": 'COMPREPLY=($(compgen -d -- "$cur")); compopt -o filenames',
        "none": "COMPREPLY=()",
    }
    lines = [
        f"# bash completion for {PROG}, generated by `{PROG} completion bash`.",
        f"# Load it with: source <({PROG} completion bash)",
        f"_{PROG}() {{",
        '    local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}"',
        f"    local at={tree.id} skip=0 i",
        "    for ((i = 1; i < COMP_CWORD; i++)); do",
        "        if ((skip)); then skip=0; continue; fi",
        '        case "$at ${COMP_WORDS[i]}" in',
        *_walk_cases(tree, " " * 12),
        "        esac",
        "    done",
        '    case "$at $prev" in',
        *_value_cases(tree, " " * 8, offer),
        "    esac",
        '    case "$at" in',
    ]
    for command in tree.walk():
        words = _words(command)
        lines.append(f'        {command.id}) COMPREPLY=($(compgen -W "{words}" -- "$cur")) ;;')
    lines += ["    esac", "}", f"complete -F _{PROG} {PROG}"]
    return "\n".join(lines) + "\n"


def _zsh_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace(":", "\\:").replace("'", "'\\''")


def zsh(tree: Command) -> str:
    """The zsh completion script (a #compdef file, or sourced: it registers itself)."""
    offer = {
        "words": "compadd -- {words}",
        "file": "_files",
        "dir": "_files -/",
        "none": "_message value",
    }
    lines = [
        f"#compdef {PROG}",
        f"# zsh completion for {PROG}, generated by `{PROG} completion zsh`.",
        f"# Save it as _{PROG} in a directory of $fpath, or: source <({PROG} completion zsh)",
        f"_{PROG}() {{",
        f"    local at={tree.id} skip=0 i",
        "    local -a items",
        "    for ((i = 2; i < CURRENT; i++)); do",
        "        if ((skip)); then skip=0; continue; fi",
        '        case "$at ${words[i]}" in',
        *_walk_cases(tree, " " * 12),
        "        esac",
        "    done",
        '    case "$at ${words[CURRENT-1]}" in',
        *_value_cases(tree, " " * 8, offer),
        "    esac",
        '    case "$at" in',
    ]
    for command in tree.walk():
        items = [
            f"'{_zsh_escape(f)}:{_zsh_escape(o.help)}'" for o in command.options for f in o.flags
        ]
        items += [f"'{_zsh_escape(c.path[-1])}:{_zsh_escape(c.help)}'" for c in command.subcommands]
        items += [f"'{_zsh_escape(a)}'" for a in command.arguments]
        lines.append(f"        {command.id}) items=({' '.join(items)}) ;;")
    lines += [
        "    esac",
        "    _describe -t items 'ecmpd' items",
        "}",
        'if [ "$funcstack[1]" = "_ecmpd" ]; then',
        '    _ecmpd "$@"',
        "else",
        f"    compdef _{PROG} {PROG}",
        "fi",
    ]
    return "\n".join(lines) + "\n"


def _fish_quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def fish(tree: Command) -> str:
    """The fish completion script."""
    lines = [
        f"# fish completion for {PROG}, generated by `{PROG} completion fish`.",
        f"# Save it as ~/.config/fish/completions/{PROG}.fish",
        f"complete -c {PROG} -f",
    ]
    for command in tree.walk():
        condition = _fish_condition(command)
        for sub in command.subcommands:
            lines.append(
                f"complete -c {PROG} -n {_fish_quote(condition)} -a {sub.path[-1]}"
                f" -d {_fish_quote(sub.help)}"
            )
        if command.arguments:
            words = _fish_quote(" ".join(command.arguments))
            lines.append(f"complete -c {PROG} -n {_fish_quote(condition)} -a {words}")
        for option in command.options:
            lines.append(_fish_option(option, condition))
    return "\n".join(lines) + "\n"


def _fish_condition(command: Command) -> str:
    """True when the words typed so far lead to this command and no further."""
    names = [c.path[-1] for c in command.subcommands]
    parts = [f"__fish_seen_subcommand_from {name}" for name in command.path[1:]]
    if names:
        parts.append(f"not __fish_seen_subcommand_from {' '.join(names)}")
    return "; and ".join(parts) if parts else "__fish_use_subcommand"


def _fish_option(option: Option, condition: str) -> str:
    parts = [f"complete -c {PROG} -n {_fish_quote(condition)}"]
    for flag in option.flags:
        parts.append(f"-l {flag[2:]}" if flag.startswith("--") else f"-s {flag[1:]}")
    if option.choices:
        parts.append(f"-xa {_fish_quote(' '.join(option.choices))}")
    elif option.completes in ("file", "dir"):
        parts.append("-rF")
    elif option.takes_value:
        parts.append("-x")
    if option.help:
        parts.append(f"-d {_fish_quote(option.help)}")
    return " ".join(parts)
