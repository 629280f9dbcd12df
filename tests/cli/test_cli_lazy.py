"""The CLI imports a command's module only when that command runs.

`--help` lists every command from main.COMMANDS; these tests keep that table
equal to what the modules register, and check that the lazily built parser
behaves like the full one.
"""

import argparse
import importlib
import json
import subprocess
import sys

import pytest

from agent.cli import main, options

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


def registered(module):
    """{command: help} a module's register() adds."""
    p = options.Parser(prog="nodemesh")
    sub = p.add_subparsers(dest="command")
    importlib.import_module(f"agent.cli.{module}").register(sub, options.common())
    return {a.dest: a.help for a in sub._choices_actions}


def subparsers(p):
    return next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))


def test_the_command_table_matches_what_the_modules_register():
    modules = {m for _, m, _ in main.COMMANDS if m}
    table = {}
    for name, module, help_text in main.COMMANDS:
        table.setdefault(module, {})[name] = help_text
    for module in modules:
        assert registered(module) == table[module], module
    # and nothing registers a command the table does not list
    full = subparsers(main.parser())
    assert list(full.choices) == [name for name, _, _ in main.COMMANDS]


def test_lazy_help_is_the_full_help():
    assert main.parser(None).format_help() == main.parser().format_help()


@pytest.mark.parametrize("command", [name for name, _, _ in main.COMMANDS])
def test_each_command_parses_as_with_the_full_parser(command):
    lazy, full = subparsers(main.parser(command)), subparsers(main.parser())
    assert lazy.choices[command].format_help() == full.choices[command].format_help()


def test_a_command_imports_only_its_own_module():
    code = ("import sys, json\nfrom agent.cli import main\n"
            "main.parser(main.command_of(['drain', '--help']))\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('agent.cli.'))))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
                         check=True)
    loaded = {m.rpartition(".")[2] for m in json.loads(res.stdout)}
    command_modules = {m for _, m, _ in main.COMMANDS if m}
    assert loaded & command_modules == {"failover"}, loaded


def test_main_runs_a_lazily_parsed_command(capsys):
    with pytest.raises(SystemExit) as info:
        main.main(["drain", "--help"])
    assert info.value.code == 0
    assert "--deadline" in capsys.readouterr().out
    assert main.main(["nosuch"]) == 2                     # usage error, as before
    assert "invalid choice: 'nosuch'" in capsys.readouterr().err


def test_completion_still_walks_every_command():
    from agent.cli.completion import walk

    tables = walk(main.parser())
    assert "nodemesh drain --deadline" in tables["values"]
    assert "nodemesh failover status -o" in tables["choices"]
