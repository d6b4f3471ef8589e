"""`python -m docnum`: the same command line as `docnum`."""

from docnum.cli.commands import app

app(prog_name="docnum")
