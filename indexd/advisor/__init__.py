"""The index advisor: candidates from parsed statements, what-if costs, selection, report."""
