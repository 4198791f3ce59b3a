"""``RowRules``: one carrier's input vocabulary, as data (see ``engine.row_rules``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from bulkchange.domain.statuses import TargetStatus
from bulkchange.input import Columns, Needs, template_csv


@dataclass(frozen=True)
class RowRules:
    """One carrier's input vocabulary.

    ``request_fields`` / ``top_fields`` / ``rev_fields``: column → the change request's field under
    ``Request``, at the top, under ``RevService``; ``rev_list_fields`` are the Rev.io fields given as
    comma-separated lists. ``per_row_rule_columns``: columns whose value may differ per row and change what
    the row needs (a header that has one is not checked against one status's needs).
    """

    carrier: str
    columns: Columns
    needs: Mapping[tuple[TargetStatus, bool], Needs]
    request_fields: Mapping[str, str]
    top_fields: Mapping[str, str]
    rev_fields: Mapping[str, str]
    rev_list_fields: frozenset[str] = frozenset()
    per_row_rule_columns: tuple[str, ...] = ("Status", "IsIgnoreCurrentStatus")
    field_columns: Mapping[str, str] = field(default_factory=dict)
    template_extra: tuple[str, ...] = ()
    """Optional columns a template shows after the needed ones (so an operator sees they exist)."""

    def needs_for(self, target: TargetStatus, *, ignore_current_status: bool) -> Needs:
        return self.needs[(target, ignore_current_status)]

    def template(self, target: TargetStatus) -> str:
        """A CSV with exactly the columns ``target`` needs and one example row."""
        names = self.needs_for(target, ignore_current_status=False).template_columns()
        return template_csv(self.columns, [*names, *(n for n in self.template_extra if n not in names)])

    def column_of(self, field_name: str) -> str:
        """The column a change request field comes from (for pydantic's messages)."""
        return self.field_columns.get(field_name, field_name)
