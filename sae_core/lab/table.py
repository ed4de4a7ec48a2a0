"""The lab's table: every number of a run's rows, one row per trained SAE, as markdown."""

from __future__ import annotations

COLUMNS = (("label", "SAE", "{}"), ("l0", "L0", "{:.1f}"), ("fvu", "FVU", "{:.4f}"),
           ("dead", "dead", "{:.1%}"), ("ce_recovered", "CE loss recovered", "{:.3f}"),
           ("kl", "KL (nats/token)", "{:.3f}"), ("mmcs", "MMCS", "{:.3f}"),
           ("recovered_09", "recovered > 0.9", "{:.1%}"), ("seconds", "train s", "{:.1f}"))
"""(row key, column title, format) of the table, in order; absent keys drop their column."""


def table_markdown(rows: list[dict]) -> str:
    columns = [c for c in COLUMNS if any(c[0] in row for row in rows)]
    lines = ["| " + " | ".join(title for _, title, _ in columns) + " |",
             "|" + "---|" * len(columns)]
    for row in rows:
        cells = [fmt.format(row[key]) if row.get(key) is not None else ""
                 for key, _, fmt in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
