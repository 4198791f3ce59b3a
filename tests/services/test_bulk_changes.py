"""The read side of bulk changes (``bulkchange.services.bulk_changes``) on SQLite and PostgreSQL: the list's
filters and pages, one bulk change's device changes searched, filtered and paged, the counts."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy.orm import Session, sessionmaker

from bulkchange.carrier.catalogue import all_steps
from bulkchange.services import bulk_changes as svc
from bulkchange.services.bulk_changes import BulkChangeFilter, ChangeFilter

from .conftest import add_bulk, add_provider


def _ids(page: svc.Page[svc.BulkChangeSummary]) -> list[int]:
    return [b.id for b in page.items]


def test_the_list_filters_by_each_field_case_insensitively(factory: sessionmaker[Session]) -> None:
    with factory() as s:
        a, b = add_provider(s), add_provider(s)
        q3 = add_bulk(
            s,
            a,
            [{"target_status": "deactive", "plan": "DEACTIVATE"}],
            file_name="Q3 lines.csv",
            created_by="alice",
            created_date=datetime(2026, 3, 1, 23, 59),
        )
        q4 = add_bulk(
            s,
            a,
            [{"status": "PROCESSED"}],
            status="PROCESSED",
            file_name="q4_lines.xlsx",
            created_by="bob",
            created_date=datetime(2026, 3, 2, 0, 0),
        )
        other = add_bulk(
            s, b, [{}], file_name="100%.csv", created_by="Alice Smith", created_date=datetime(2026, 3, 5, 12, 0)
        )
        scope = {a, b}

        def ids(**filters: object) -> list[int]:
            page = svc.list_bulk_changes(s, BulkChangeFilter(**filters), limit=10, offset=0, scope=scope)  # type: ignore[arg-type]
            return _ids(page)

        assert ids() == [other, q4, q3], "newest first"
        assert ids(status="processed") == [q4]
        assert ids(target_status="DEACTIVE") == [q3]
        assert ids(service_provider_id=b) == [other]
        assert ids(file_name="LINES") == [q4, q3]
        assert ids(file_name="%") == [other], "a typed % is a character, not a wildcard"
        assert ids(file_name="_lines") == [q4], "a typed _ is a character, not a wildcard"
        assert ids(created_by="ALICE") == [other, q3]
        assert ids(created_from=date(2026, 3, 2)) == [other, q4], "from the start of the day"
        assert ids(created_to=date(2026, 3, 1)) == [q3], "until the end of the day"
        assert ids(created_from=date(2026, 3, 2), created_to=date(2026, 3, 2)) == [q4]
        assert svc.list_bulk_changes(s, BulkChangeFilter(), limit=10, offset=0, scope={b}).total == 1, "scope"


def test_the_list_pages_with_a_total(factory: sessionmaker[Session]) -> None:
    with factory() as s:
        provider = add_provider(s)
        created = [add_bulk(s, provider, [{}], file_name=f"page-{i}.csv") for i in range(5)]
        page = svc.list_bulk_changes(s, BulkChangeFilter(), limit=2, offset=2, scope={provider})
        assert _ids(page) == [created[2], created[1]]
        assert (page.total, page.number, page.count) == (5, 2, 3)
        last = svc.list_bulk_changes(s, BulkChangeFilter(), limit=2, offset=4, scope={provider})
        assert _ids(last) == [created[0]] and last.number == 3


def test_a_summary_counts_its_changes_by_status_and_target(factory: sessionmaker[Session]) -> None:
    with factory() as s:
        provider = add_provider(s)
        bulk_id = add_bulk(
            s,
            provider,
            [{"status": "PROCESSED"}] * 3 + [{"status": "ERROR", "target_status": "suspend", "plan": "SUSPEND"}] + [{}],
            file_name="mixed.csv",
        )
        bulk = svc.get_bulk_change(s, bulk_id)
        assert bulk is not None
        assert bulk.counts == {"ERROR": 1, "PROCESSED": 3, "READY": 1}
        assert bulk.targets == {"active": 4, "suspend": 1}
        assert (bulk.total, bulk.finished, bulk.file_name) == (5, 4, "mixed.csv")
        assert svc.get_bulk_change(s, bulk_id + 10_000) is None


def _rows(count: int) -> list[dict[str, object]]:
    """Device changes of one bulk change: every 10th PROCESSED (past its last step), every 25th ERROR,
    every 7th at its second step, MSISDNs 555-0000000 + i, additional steps on every 50th."""
    rows: list[dict[str, object]] = []
    for i in range(count):
        row: dict[str, object] = {"msisdn": f"555{i:07d}"}
        if i % 10 == 0:
            row.update(status="PROCESSED", step_index=1)
            if i % 50 == 0:
                row["additional_step_status"] = "PENDING"
        elif i % 25 == 0:
            row.update(status="ERROR")
        elif i % 7 == 0:
            row.update(status="AWAITING_RESULT", step_index=1)
        rows.append(row)
    return rows


def test_one_bulk_changes_device_changes_searched_filtered_and_paged(factory: sessionmaker[Session]) -> None:
    with factory() as s:
        provider = add_provider(s)
        bulk_id = add_bulk(s, provider, _rows(250))
        add_bulk(s, provider, _rows(20))  # another bulk change's rows never show

        def page(filters: ChangeFilter, limit: int = 100, offset: int = 0) -> svc.Page[svc.ChangeRow]:
            return svc.list_changes(s, bulk_id, filters, limit=limit, offset=offset)

        everything = page(ChangeFilter(), limit=1000)
        assert everything.total == 250 and len(everything.items) == 250
        ids = [c.id for c in everything.items]
        assert ids == sorted(ids), "in id order"
        third = page(ChangeFilter(), limit=100, offset=200)
        assert [c.id for c in third.items] == ids[200:] and (third.number, third.count) == (3, 3)

        one = everything.items[123]
        assert [c.id for c in page(ChangeFilter(search=one.iccid)).items] == [one.id]
        assert [c.id for c in page(ChangeFilter(search=one.iccid[-9:])).items] == [one.id], "part of an ICCID"
        assert [c.id for c in page(ChangeFilter(search="+555-000 0123")).items] == [one.id], "an MSISDN as typed"
        assert page(ChangeFilter(search="5550000%")).total == 0, "no wildcard"
        assert page(ChangeFilter(iccid=one.iccid[:-1])).total == 0, "the REST filter is exact"

        assert page(ChangeFilter(statuses=("error",))).total == sum(1 for i in range(250) if i % 10 and i % 25 == 0)
        at_activate = page(ChangeFilter(step="activate"), limit=1000).items
        assert {c.status for c in at_activate} == {"PROCESSED", "AWAITING_RESULT"}
        assert all(c.current_step == "ACTIVATE" for c in at_activate)
        at_add = page(ChangeFilter(step="ADD")).total
        assert at_add + len(at_activate) == 250
        assert page(ChangeFilter(step="SUSPEND")).total == 0, "a step no plan of this bulk change has"
        assert page(ChangeFilter(additional_step="pending")).total == 5
        assert page(ChangeFilter(additional_step="NONE")).total == 245
        both = page(ChangeFilter(statuses=("PROCESSED",), step="ACTIVATE", additional_step="NONE"))
        assert both.total == 20

        choices = svc.filter_choices(s, bulk_id, all_steps())
        assert choices.steps == ["ADD", "ACTIVATE"]
        assert choices.additional_steps == ["PENDING", "NONE"]


def test_one_change_with_its_log_entries_only_within_its_bulk_change(factory: sessionmaker[Session]) -> None:
    with factory() as s:
        provider = add_provider(s)
        bulk_id = add_bulk(s, provider, [{}])
        other = add_bulk(s, provider, [{}])
        change = svc.list_changes(s, bulk_id, ChangeFilter(), limit=1, offset=0).items[0]
        found = svc.get_change(s, bulk_id, change.id)
        assert found is not None and found.logs == []
        assert svc.get_change(s, other, change.id) is None


def test_the_file_name_is_recorded(factory: sessionmaker[Session]) -> None:
    with factory() as s:
        bulk_id = add_bulk(s, add_provider(s), [{}])
        svc.record_file_name(s, bulk_id, "  March deactivations.xlsx ")
        bulk = svc.get_bulk_change(s, bulk_id)
        assert bulk is not None and bulk.file_name == "March deactivations.xlsx"
