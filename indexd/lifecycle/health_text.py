"""The index health report as people read it: one section per kind of finding, each with its evidence, the
action to take and the statement that takes it."""

from __future__ import annotations

import re

from indexd.lifecycle.findings import Finding, HealthReport, quote_ident
from indexd.units import human_size

SECTIONS = (("unused", "Unused"), ("duplicate", "Duplicate"), ("invalid", "Invalid"), ("bloated", "Bloated"))


def _evidence_line(f: Finding) -> str:
    e = f.evidence
    if f.kind == "unused":
        return (f"0 scans in {e['covered_days']} days of statistics (since {e['stats_since'] or 'unknown'}); "
                f"drop_unused.unused_for is {e['unused_for_days']} days")
    if f.kind == "duplicate":
        return f"same definition as {e['duplicate_of']} ({e['scans']} scans here, {e['kept_scans']} there)"
    if f.kind == "redundant":
        return f"keys are a prefix of {e['covered_by']} ({e['scans']} scans here, {e['covering_scans']} there)"
    if f.kind == "invalid":
        return (f"INVALID, made by {e['made_by']}, {'still maintained on writes' if e['ready'] else 'not ready'}"
                f"{', being built now' if e['building_now'] else ''}")
    return (f"about {e['bloat_ratio']:.0%} bloat: {e['actual_pages']} pages where a fresh build needs about "
            f"{e['expected_pages']} ({human_size(e['bloat_bytes'])} to free)")


def _shown(name: str) -> str:
    """An identifier as SQL would need it written: quoted only when it must be."""
    return name if re.fullmatch(r"[a-z_][a-z0-9_$]*", name) else quote_ident(name)


def render_text(report: HealthReport) -> str:
    """The report as people read it: one section per kind, each finding with evidence, action and statement."""
    since = report.stats_since.isoformat(timespec="seconds") if report.stats_since else "unknown"
    lines = [f"database {report.database}: {report.indexes_checked} indexes checked; "
             f"scan statistics cover the time since {since}"]
    for key, title in SECTIONS:
        findings: list[Finding] = getattr(report, key)
        lines.append("")
        lines.append(f"{title} ({len(findings)})" + ("" if findings else ": none"))
        for f in findings:
            lines.append(f"  {_shown(f.schema)}.{_shown(f.table)}  {_shown(f.index)}  {human_size(f.size_bytes)}"
                         + ("  [indexd]" if f.own else ""))
            lines.append(f"    evidence: {_evidence_line(f)}")
            lines.append(f"    action:   {f.action}")
            if f.sql:
                lines.append(f"    sql:      {f.sql}")
    return "\n".join(lines) + "\n"
