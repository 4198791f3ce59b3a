"""Input files as rows, the same for the CLI, the REST API and the dashboard (see ``reader``).

Low level: imports only the standard library, ijson and openpyxl. What a carrier's rows contain (its
columns, what each target status needs) is data the caller passes in.
"""

from bulkchange.input.cells import cell_text, formula_cells, is_formula, printable, unclean_text
from bulkchange.input.columns import Column, Columns, Needs, norm
from bulkchange.input.problems import InputProblem, InputRefused, InputTooLarge
from bulkchange.input.reader import Limits, Row, Source, Table, open_table, records
from bulkchange.input.template import template_csv

__all__ = [
    "Column",
    "Columns",
    "InputProblem",
    "InputRefused",
    "InputTooLarge",
    "Limits",
    "Needs",
    "Row",
    "Source",
    "Table",
    "cell_text",
    "formula_cells",
    "is_formula",
    "norm",
    "open_table",
    "printable",
    "records",
    "template_csv",
    "unclean_text",
]
