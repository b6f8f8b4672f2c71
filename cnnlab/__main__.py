"""`python -m cnnlab ...`: see `cnnlab.cli`."""

from cnnlab.cli import program

program()
