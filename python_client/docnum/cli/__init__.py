"""The ``docnum`` command line (``docnum.cli.commands:app``): commands, their support, hints and rendering."""
