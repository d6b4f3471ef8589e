"""`python -m docnum`: the same command line as `docnum`."""

from docnum.cli import app

app(prog_name="docnum")
