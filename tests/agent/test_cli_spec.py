"""A script's own argparse / click declaration, read from its source."""

from __future__ import annotations

import pytest

from onlooker.agent.rules.cli_spec import cli_spec
from onlooker.agent.rules.params import argv_params

ARGPARSE = b'''
import argparse
ap = argparse.ArgumentParser()
ap.add_argument("src")
ap.add_argument("--shuffle", action="store_true")
ap.add_argument("dst-dir", help="where")
ap.add_argument("--lr", type=float, default=0.1)
ap.add_argument("-v", "--verbose", action="count")
ap.add_argument("--fast", action=argparse.BooleanOptionalAction)
args = ap.parse_args()
'''

CLICK = b'''
import click

@click.command()
@click.argument("data")
@click.argument("outputs", nargs=-1)
@click.option("--debug/--no-debug")
@click.option("--dry", is_flag=True)
@click.option("--epochs", default=3)
def main(data, outputs, debug, dry, epochs):
    pass
'''


def test_argparse_names_positionals_and_knows_its_flags():
    spec = cli_spec(ARGPARSE)
    assert spec is not None
    assert [n for n, _ in spec.positionals] == ["src", "dst_dir"]
    assert {"--shuffle", "-v", "--verbose", "--fast"} <= spec.flags
    assert "--lr" not in spec.flags
    got = argv_params(["python", "prep.py", "--shuffle", "data/raw.csv", "out", "--lr", "0.3"],
                      spec=spec)
    assert got == {"shuffle": True, "src": "data/raw.csv", "dst_dir": "out", "lr": 0.3}
    # without the declaration a flag before a positional takes it as its value
    assert argv_params(["python", "prep.py", "--shuffle", "data/raw.csv", "out"]) == {
        "shuffle": "data/raw.csv", "argv[1]": "out"}


def test_click_arguments_in_order_and_a_varying_last_one_collects_a_list():
    spec = cli_spec(CLICK)
    assert spec is not None and [n for n, _ in spec.positionals] == ["data", "outputs"]
    got = argv_params(["python", "cli.py", "--dry", "d.csv", "a.pkl", "b.pkl", "--epochs", "5"],
                      spec=spec)
    assert got == {"dry": True, "data": "d.csv", "outputs": ["a.pkl", "b.pkl"], "epochs": 5}
    assert argv_params(["python", "cli.py", "--no-debug", "d.csv"], spec=spec) == {
        "no-debug": True, "data": "d.csv"}


@pytest.mark.parametrize("source", [
    b"import sys\nprint(sys.argv[1])\n",  # no parser at all
    b"import argparse\np = argparse.ArgumentParser()\ns = p.add_subparsers()\n"
    b"a = s.add_parser('fit')\na.add_argument('data')\n",  # sub-commands
    b"import argparse\na = argparse.ArgumentParser()\na.add_argument('x')\n"
    b"b = argparse.ArgumentParser()\nb.add_argument('y')\n",  # two parsers
    b"def f(:\n",  # not Python
    b"import click\n@click.group()\ndef cli(): pass\n@cli.command()\n"
    b"@click.argument('data')\ndef fit(data): pass\n",  # a click group
])
def test_nothing_certain_gives_no_spec(source):
    assert cli_spec(source) is None


def test_positionals_that_do_not_fit_the_declaration_keep_their_numbers():
    spec = cli_spec(b"import argparse\np = argparse.ArgumentParser()\np.add_argument('a')\n"
                    b"p.add_argument('b', nargs='?')\n")
    assert spec is not None
    assert argv_params(["python", "s.py", "1"], spec=spec) == {"a": 1}
    assert argv_params(["python", "s.py", "1", "2"], spec=spec) == {"a": 1, "b": 2}
    # three given for at most two: the script's own parse failed; say what was typed
    assert argv_params(["python", "s.py", "1", "2", "3"], spec=spec) == {
        "argv[1]": 1, "argv[2]": 2, "argv[3]": 3}
