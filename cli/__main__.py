"""`python -m onlooker.cli`: the same as the `onlooker` script."""

from onlooker.cli import entry

entry()
