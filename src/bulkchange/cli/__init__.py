"""bulkchange.cli: the ``bulkchange`` command line (``bulkchange.cli.main``).

The command modules do without ``from __future__ import annotations``: Typer reads every command's
annotations each time it builds the command tree, which every invocation does (``--help`` included), and
annotations kept as strings are compiled and evaluated again there, twice per parameter — three times the
CPU of building the tree from annotations that are already objects. A name imported only for type checking
is written in quotes. tests/cli/test_startup.py holds both this and the collector's pace below.
"""

from bulkchange.heap import collect_older_rarely_while_starting, collect_young_less_often

# Before anything else of the CLI is imported (Typer, Rich, then what the command runs): the imports are
# most of a command's start-up, and the collector's default pace spends a tenth of it on them. The commands
# that run on for long (worker, serve, demo, simulator) go back to the usual pace for the older generations
# once started (bulkchange.heap).
collect_young_less_often()
collect_older_rarely_while_starting()
