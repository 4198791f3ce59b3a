"""bulkchange.cli: the ``bulkchange`` command line (``bulkchange.cli.main``)."""

from bulkchange.heap import collect_young_less_often

# Before anything else of the CLI is imported (Typer, Rich, then what the command runs): the imports are
# most of a command's start-up, and the collector's default pace spends a tenth of it on them.
collect_young_less_often()
