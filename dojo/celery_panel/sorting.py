"""Tables sorted by several columns at once, like the Django admin changelist, one query
parameter per table: ``?qo=2.-5`` sorts by column 2 ascending, then column 5 descending
(columns numbered from 1). Done in Python on the row objects; None ("-") sorts after every
value ascending and before them descending.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.http import QueryDict


@dataclass(frozen=True)
class Column:
    label: str
    attr: str = ""  # the row attribute sorted on; "" for a column that cannot be sorted
    help: str = ""  # what the value means, shown as the header's title

    @property
    def sortable(self) -> bool:
        return bool(self.attr)


@dataclass(frozen=True)
class Header:
    """What the table head shows for one column, with the links the admin changelist gives."""

    label: str
    help: str
    sortable: bool
    sorted: bool = False
    ascending: bool = True
    sort_priority: int = 0  # 1 = the first sort key
    url_primary: str = ""  # sort by this column first (its direction flipped if it was sorted)
    url_toggle: str = ""  # flip this column's direction, keep its place
    url_remove: str = ""  # stop sorting by it


@dataclass(frozen=True)
class SortedTable:
    param: str
    headers: list[Header]
    rows: list[Any]

    @property
    def num_sorted_fields(self) -> int:
        return sum(header.sorted for header in self.headers)


def parse_ordering(value: str, columns: Sequence[Column]) -> list[tuple[int, bool]]:
    """``"2.-5"`` → [(1, True), (4, False)]: 0-based column index and ascending; unknown,
    unsortable and repeated columns are dropped."""
    ordering: list[tuple[int, bool]] = []
    for part in value.split("."):
        descending, number = part.startswith("-"), part.lstrip("-")
        if not number.isdigit():
            continue
        index = int(number) - 1
        if 0 <= index < len(columns) and columns[index].sortable and index not in {i for i, _ in ordering}:
            ordering.append((index, not descending))
    return ordering


def _format(ordering: list[tuple[int, bool]]) -> str:
    return ".".join(f"{'' if ascending else '-'}{index + 1}" for index, ascending in ordering)


def _url(query: QueryDict, param: str, ordering: list[tuple[int, bool]], anchor: str) -> str:
    query = query.copy()
    if ordering:
        query[param] = _format(ordering)
    else:
        query.pop(param, None)
    return f"?{query.urlencode()}#{anchor}"


def _sort_key(attr: str):
    def key(row: Any) -> tuple[bool, Any]:
        value = getattr(row, attr)
        return (value is None, value)

    return key


def sort_table(
    rows: Sequence[Any], columns: Sequence[Column], query: QueryDict, param: str, anchor: str
) -> SortedTable:
    """`rows` sorted as `query[param]` says, and the headers with their sort links (which keep
    every other parameter, so the other tables and the backend stay as they are)."""
    ordering = parse_ordering(query.get(param, ""), columns)
    ordered = list(rows)
    for index, ascending in reversed(ordering):  # stable sorts, last key first
        ordered.sort(key=_sort_key(columns[index].attr), reverse=not ascending)
    position = {index: (priority, ascending) for priority, (index, ascending) in enumerate(ordering, start=1)}
    headers = []
    for index, column in enumerate(columns):
        if not column.sortable:
            headers.append(Header(column.label, column.help, sortable=False))
            continue
        others = [(i, asc) for i, asc in ordering if i != index]
        priority, ascending = position.get(index, (0, True))
        headers.append(
            Header(
                column.label,
                column.help,
                sortable=True,
                sorted=bool(priority),
                ascending=ascending,
                sort_priority=priority,
                url_primary=_url(query, param, [(index, not ascending if priority else True), *others], anchor),
                url_toggle=_url(query, param, [(i, not asc if i == index else asc) for i, asc in ordering], anchor),
                url_remove=_url(query, param, others, anchor),
            )
        )
    return SortedTable(param=param, headers=headers, rows=ordered)
