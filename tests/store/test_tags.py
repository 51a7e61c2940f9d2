"""Tags and notes: writes, run dicts, tag names as run references, writing beside a writer."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest

from onlooker.store.catalog import Catalog
from onlooker.store.errors import NoSuchRun, StoreError
from onlooker.store.tags import BadTagName, check_tag

T0 = 1_795_000_000.0


@pytest.fixture
def cat(tmp_path):
    c = Catalog.init(tmp_path)
    yield c
    c.close()


def new_run(cat, started_at=T0):
    return cat.begin_run(command=["python", "train.py"], cwd=str(cat.project), exe=None,
                         pid=4242, pid_start=int(started_at), user="ana", hostname="box",
                         started_at=started_at, tier="netlink")


def test_tag_untag_and_note_show_in_run_dicts(cat):
    run = new_run(cat)
    other = new_run(cat, T0 + 1)
    assert cat.tag(run, "best", "baseline") == ["baseline", "best"]
    assert cat.tag(run, "best") == ["baseline", "best"]  # again: no error, no duplicate
    assert cat.set_note(run, "  first try\nwith more data  ") == "first try\nwith more data"
    got = cat.run(run)
    assert got["tags"] == ["baseline", "best"] and got["note"] == "first try\nwith more data"
    listed = {r["id"]: r for r in cat.runs()}
    assert (listed[run]["tags"], listed[run]["note"]) == (got["tags"], got["note"])
    assert (listed[other]["tags"], listed[other]["note"]) == ([], None)
    assert cat.untag(run, "best", "never-there") == ["baseline"]
    assert cat.set_note(run, "") is None and cat.run(run)["note"] is None
    assert cat.set_note(run, "again") == "again" and cat.set_note(run, None) is None
    assert cat.tags_for([run, other]) == {run: ["baseline"]}
    assert cat.all_tags() == {"baseline": 1}


def test_tags_and_notes_need_a_run(cat):
    with pytest.raises(NoSuchRun, match="no run 99"):
        cat.tag(99, "x")
    with pytest.raises(NoSuchRun, match="no run 99"):
        cat.untag(99, "x")
    with pytest.raises(NoSuchRun, match="no run 99"):
        cat.set_note(99, "x")
    with pytest.raises(NoSuchRun, match="no run 99"):
        cat.note_of(99)
    assert cat._execute("SELECT count(*) FROM tags").fetchone()[0] == 0


@pytest.mark.parametrize("name, why", [
    ("", "empty"), ("a b", "whitespace"), ("a\tb", "whitespace"), ("12", "digits"),
    ("last", "newest run"), ("-2", "starts with '-'"), ("-x", "starts with '-'"),
])
def test_bad_tag_names_are_one_sentence_and_write_nothing(cat, name, why):
    run = new_run(cat)
    with pytest.raises(BadTagName, match=why):
        cat.tag(run, "good", name)
    assert cat.tags_of(run) == []  # none of the names went in


def test_good_tag_names():
    for name in ("best", "v1.2", "lr=0.1", "exp/7", "12a", "last-good", "ünïcode"):
        assert check_tag(name) == name


def test_a_tag_resolves_to_the_newest_run_carrying_it(cat):
    old = new_run(cat, T0)
    newer = new_run(cat, T0 + 10)
    latest = new_run(cat, T0 + 20)
    cat.tag(newer, "good")
    cat.tag(old, "good", "first")
    assert cat.resolve_run("good") == newer  # by start, not by when it was tagged
    assert cat.resolve_run("first") == old
    assert cat.resolve_run("last") == latest and cat.resolve_run(str(old)) == old
    cat.untag(newer, "good")
    assert cat.resolve_run("good") == old
    with pytest.raises(NoSuchRun, match="'nosuch' is not a run: .* or a tag"):
        cat.resolve_run("nosuch")


def test_tags_go_with_their_run(cat):
    run = new_run(cat)
    cat.tag(run, "gone")
    with cat.transaction():
        cat._execute("DELETE FROM runs WHERE id = ?", (run,))
    assert cat._execute("SELECT count(*) FROM tags").fetchone()[0] == 0


def test_a_read_only_catalog_cannot_tag(cat):
    run = new_run(cat)
    with Catalog(cat.store_dir, readonly=True) as reader:
        with pytest.raises(StoreError, match="read-only"):
            reader.tag(run, "x")
        with pytest.raises(StoreError, match="read-only"):
            reader.set_note(run, "x")
    assert cat.tags_of(run) == []


def test_tagging_waits_for_a_writer_holding_the_catalog(cat):
    """The agent commits in short transactions; a tag from the CLI waits its turn
    (busy timeout) instead of failing."""
    run = new_run(cat)
    writer = sqlite3.connect(cat.path, isolation_level=None, check_same_thread=False)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("UPDATE runs SET status = 'completed' WHERE id = ?", (run,))
    held = 0.3
    release = threading.Timer(held, lambda: writer.execute("COMMIT"))
    with Catalog(cat.store_dir) as cli_side:  # as `onlooker tag` opens it
        start = time.monotonic()
        release.start()
        try:
            assert cli_side.tag(run, "waited") == ["waited"]
        finally:
            release.join()
            writer.close()
        assert time.monotonic() - start >= held * 0.9  # it did wait for the writer
        got = cli_side.run(run)
    assert got["tags"] == ["waited"] and got["status"] == "completed"


def test_tags_and_notes_are_searchable(cat):
    a, b, c = new_run(cat), new_run(cat, T0 + 1), new_run(cat, T0 + 2)
    cat.tag(a, "baseline")
    cat.tag(b, "best", "sweep")
    cat.set_note(c, "the baseline, rerun with more data")

    def ids(*where):
        return sorted(r["id"] for r in cat.query(list(where)))

    assert ids("tag = best") == [b]
    assert ids("tag ~ 'b*'") == [a, b]
    assert ids("tag in (sweep, baseline)") == [a, b]
    assert ids("tag != best") == [a, c]  # no tag at all is not `best` either
    assert ids("not tag = best") == [a, c]
    assert ids("note ~ '*baseline*'") == [c]
    assert ids("tag = baseline or note ~ '*baseline*'") == [a, c]
