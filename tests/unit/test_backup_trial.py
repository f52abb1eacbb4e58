"""Test restores without a server: the table of contents and what is left out of it, pg_restore's errors and
what each says about the backup, the verdict, the backup's status, the bounded row-count comparison."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from indexd.backup import toc, trial
from indexd.backup.counts import explain_difference
from indexd.backup.trial import Result

LISTING = """;
; Archive created at 2026-11-30 15:37:40 UTC
;
3; 3079 16416 EXTENSION - hypopg
3436; 0 0 COMMENT - EXTENSION hypopg
4; 3079 16429 EXTENSION - pg_trgm
3438; 0 0 COMMENT - EXTENSION pg_trgm
5; 3079 16440 EXTENSION - postgis
221; 1259 16517 TABLE public h postgres
220; 1259 16510 TABLE public Ünïcode "quoted" table postgres
3429; 0 16517 TABLE DATA public h postgres
3428; 0 16510 TABLE DATA public Ünïcode "quoted" table postgres
3430; 0 16600 TABLE DATA public spatial_ref_sys postgres
3279; 2606 16516 CONSTRAINT public h h_pkey postgres
3500; 3466 16700 EVENT TRIGGER - audit_ddl postgres
3501; 0 16701 SEQUENCE SET public h_id_seq postgres
""".splitlines()

AVAILABLE = {"hypopg": False, "pg_trgm": True}  # installed, and whether a non-superuser may create it


def server(superuser: bool = False) -> toc.RestoreServer:
    def creatable(name: str) -> str | None:
        if name not in AVAILABLE:
            return "not installed on the restore server"
        return None if superuser or AVAILABLE[name] else "only a superuser may create it"

    return toc.RestoreServer(superuser, creatable)


def test_entries_are_parsed_with_multi_word_descs_and_names_with_spaces() -> None:
    entries = toc.parse_list(LISTING)
    assert [e.dump_id for e in entries][:3] == [3, 3436, 4]  # comment lines are no entries
    data = next(e for e in entries if e.dump_id == 3428)
    assert data.desc == "TABLE DATA" and data.is_data and data.rest == 'public Ünïcode "quoted" table postgres'
    assert toc.is_table_entry(data.label, "public", 'Ünïcode "quoted" table')
    assert not toc.is_table_entry(data.label, "public", "Ünïcode")
    assert next(e for e in entries if e.dump_id == 3500).desc == "EVENT TRIGGER"
    assert next(e for e in entries if e.dump_id == 3501).is_data
    assert [toc.extension_of(e) for e in entries[:3]] == ["hypopg", "hypopg", "pg_trgm"]
    assert toc.extension_of(entries[6]) is None


def test_a_least_privilege_role_leaves_out_what_only_a_superuser_or_nobody_can_create() -> None:
    kept, left = toc.select_entries(toc.parse_list(LISTING), server())
    assert [str(x) for x in left] == [
        "EXTENSION hypopg (only a superuser may create it)",
        "COMMENT EXTENSION hypopg (only a superuser may create it)",
        "EXTENSION postgis (not installed on the restore server)",
        "EVENT TRIGGER audit_ddl postgres (only a superuser may create it)",
        # the data of a table only the left-out extension creates (no TABLE entry of its own)
        "TABLE DATA public spatial_ref_sys postgres (data of an extension's table; the extension is left out)",
    ]
    kept_ids = [e.dump_id for e in kept]
    assert 4 in kept_ids and 3438 in kept_ids  # a trusted extension is created by the scratch database's owner
    assert 3429 in kept_ids and 3428 in kept_ids and 3279 in kept_ids
    assert toc.list_text(kept).splitlines() == [e.line for e in kept]


def test_a_superuser_leaves_out_only_what_the_server_lacks() -> None:
    _kept, left = toc.select_entries(toc.parse_list(LISTING), server(superuser=True))
    assert [x.entry for x in left] == ["EXTENSION postgis", "TABLE DATA public spatial_ref_sys postgres"]


VERBOSE = """pg_restore: connecting to database for restore
pg_restore: creating EXTENSION "pg_trgm"
pg_restore: creating TABLE "public.h"
pg_restore: while PROCESSING TOC:
pg_restore: from TOC entry 221; 1259 16517 TABLE h postgres
pg_restore: error: could not execute query: ERROR:  type "geometry" does not exist
Command was: CREATE TABLE public.h (g public.geometry);
pg_restore: processing data for table "public.h"
pg_restore: from TOC entry 3429; 0 16517 TABLE DATA h postgres
pg_restore: error: could not execute query: ERROR:  relation "public.h" does not exist
pg_restore: processing data for table "public.Ünïcode "quoted" table"
pg_restore: from TOC entry 3428; 0 16510 TABLE DATA Ünïcode "quoted" table postgres
pg_restore: error: COPY failed for table "Ünïcode "quoted" table": ERROR:  invalid input syntax for type integer
pg_restore: warning: errors ignored on restore: 3
""".splitlines()


def test_errors_are_tied_to_their_entries() -> None:
    errors, ignored = trial.parse_errors(VERBOSE)
    assert ignored == 3
    assert [(e.entry_id, e.message.split(":")[0]) for e in errors] == [
        (221, "could not execute query"), (3429, "could not execute query"),
        (3428, 'COPY failed for table "Ünïcode "quoted" table"')]


def test_an_object_error_and_its_data_are_the_place_a_failed_copy_is_the_data() -> None:
    errors, _ = trial.parse_errors(VERBOSE)
    found = trial.assess(errors, toc.parse_list(LISTING))
    assert len(found.objects) == 2 and found.objects[0].startswith("TABLE public h postgres: could not execute")
    assert found.data == ('TABLE DATA public Ünïcode "quoted" table postgres: COPY failed for table '
                          '"Ünïcode "quoted" table": ERROR:  invalid input syntax for type integer',)
    assert [e.dump_id for e in found.failed_entries] == [221, 3429]


@pytest.mark.parametrize("message", [
    "could not execute query: ERROR:  could not extend file \"base/1/2\": No space left on device",
    "connection to server at \"127.0.0.1\", port 5432 failed: Connection refused",
    "could not execute query: server closed the connection unexpectedly",
    "could not execute query: ERROR:  canceling statement due to statement timeout",
])
def test_the_environment_is_never_the_backup(message: str) -> None:
    for entry in (None, 3429):
        error = trial.RestoreError(entry, None, message)
        assert trial.classify(error, {e.dump_id: e for e in toc.parse_list(LISTING)}, []) is trial.Kind.ENVIRONMENT


def test_an_archive_that_cannot_be_read_is_the_data() -> None:
    errors, _ = trial.parse_errors(["pg_restore: error: could not read from input file: end of file"])
    assert trial.assess(errors, []).data == ("reading the archive: could not read from input file: end of file",)


def test_verdicts() -> None:
    none = trial.Assessment()
    ok = trial.judge(none, [], 3, ["EXTENSION hypopg (only a superuser may create it)"])
    assert ok.result is Result.OK and not ok.marks_failed
    assert ok.detail == "row counts of 3 table(s) match; left out: EXTENSION hypopg (only a superuser may create it)"
    incomplete = trial.judge(trial.Assessment(objects=("TABLE public h postgres: type ...",)), [], 2, [],
                             ["public.h (could not be created here)"])
    assert incomplete.result is Result.INCOMPLETE and "not compared: public.h" in incomplete.detail
    failed = trial.judge(none, ["public.t: 31 rows at backup time, 30 restored"], 3, [])
    assert failed.result is Result.FAILED and failed.marks_failed and failed.problems == (
        "public.t: 31 rows at backup time, 30 restored",)
    # The environment wins: what else it saw cannot be trusted to speak about the backup.
    env = trial.judge(trial.Assessment(data=("x",), environment=("disk full",)), ["y"], 1, [])
    assert env.result is Result.ERROR and not env.marks_failed


@pytest.mark.parametrize(("current", "checksum_ok", "test", "last", "expected"), [
    ("verified", True, Result.ERROR, None, "verified"),  # a test that could not run changes nothing
    ("completed", True, Result.ERROR, None, "completed"),
    ("verified", True, Result.FAILED, None, "failed"),
    ("failed", True, Result.OK, None, "verified"),  # a passing test restore clears an earlier data problem
    ("verified", True, Result.INCOMPLETE, None, "verified"),
    ("failed", True, None, "failed", "failed"),  # ... a matching checksum does not
    ("failed", True, None, "error", "verified"),
    ("verified", False, None, None, "failed"),
])
def test_status_after(current: str, checksum_ok: bool, test: Result | None, last: str | None, expected: str) -> None:
    assert trial.status_after(current, checksum_ok=checksum_ok, test=test, last_test=last) == expected


def test_last_trial_reads_old_and_new_manifests() -> None:
    assert trial.last_trial({}) is None
    old = trial.last_trial({"restore_test": {"at": "2026-11-23T07:25:00", "ok": False, "mismatches": ["a", "b"]}})
    assert old == trial.TrialRecord(datetime(2026, 11, 23, 7, 25, tzinfo=UTC), "failed", "a; b")
    new = trial.last_trial({"restore_test": {"at": "2026-11-23T07:25:00+00:00", "result": "error", "detail": "why"}})
    assert new is not None and (new.result, new.detail) == ("error", "why")


@pytest.mark.parametrize(("restored", "source_now", "inserted", "elapsed", "problem"), [
    (100, 150, 50, 3600, False),  # 50 inserts explain 50 more rows now
    (100, 90, 0, 3600, False),  # fewer now: deleted or truncated since, never a data problem
    (100, 160, 50, 3600, True),
    (100, 152, 50, 3600, False),  # 50 inserts an hour: up to 2 more reported late
    (100, 102, 0, 3600, True),
])
def test_bounded_comparison(restored: int, source_now: int, inserted: int, elapsed: float, problem: bool) -> None:
    assert (explain_difference(restored, source_now, inserted, elapsed) is not None) is problem
