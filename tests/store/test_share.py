"""Export and import between two real catalogs: round trip, idempotence, renumbering,
and archives that are damaged, truncated, foreign or hostile."""

from __future__ import annotations

import io
import json
import tarfile
import time

import pytest

from onlooker.store.archive import MANIFEST, ArchiveError
from onlooker.store.catalog import Catalog
from onlooker.store.errors import StoreError
from onlooker.store.objects import hash_bytes

T0 = 1_764_000_000.0
TABLES = ("runs", "steps", "assets", "versions", "io", "params", "metrics", "telemetry",
          "tags", "envs", "run_origin")
BIG = "blake3:" + "ab" * 32  # a version only referenced: larger than the copy limit


def record_run(cat: Catalog, n: int, *, started_at: float) -> int:
    """A finished run of a small pipeline: its code, data, params, metrics, telemetry,
    tags, note, env and git diff, every small file's bytes in the object store."""
    root = cat.project
    code = f"print('stage {n}')\n".encode()
    data = b"x,y\n1,2\n" * (n + 1)
    out = f"model of run {n}".encode()
    diff = b"--- a/train.py\n+++ b/train.py\n@@ -1 +1 @@\n-old\n+new\n"
    hashes = [cat.objects.put_bytes(b) for b in (code, data, out, diff)]
    run = cat.begin_run(command=["python", "train.py", "--lr", f"0.{n}"], cwd=str(root),
                        exe="/usr/bin/python3", pid=4000 + n, pid_start=7, user="ana",
                        hostname="box", started_at=started_at, tier="netlink")
    with cat.transaction():
        step = cat.add_step(run, pid=4000 + n, ppid=1, parent_step_id=None,
                            argv=["python", "train.py"], cwd=str(root), exe=None,
                            started_at=started_at)
        child = cat.add_step(run, pid=5000 + n, ppid=4000 + n, parent_step_id=step,
                             argv=["gzip", "model.bin"], cwd=str(root), exe=None,
                             started_at=started_at + 1)
        vc = cat.add_version("train.py", hash=hashes[0], size=len(code), mtime_ns=1,
                             kind="code", stored=True, created_at=started_at)
        vd = cat.add_version(str(root / "data.csv"), hash=hashes[1], size=len(data),
                             mtime_ns=2, kind="dataset", stored=True, created_at=started_at)
        vo = cat.add_version("model.bin", hash=hashes[2], size=len(out), mtime_ns=3,
                             kind="model", stored=True, created_at=started_at + 2)
        vb = cat.add_version("big.ckpt", hash=BIG, size=5 << 30, mtime_ns=4, kind="model",
                             stored=False, created_at=started_at + 2)
        cat.link(run, vc, "code", step, basis="fanotify")
        cat.link(run, vd, "input", step, basis="fd")
        cat.link(run, vo, "output", child, basis="fanotify")
        cat.link(run, vb, "output", step, basis="window")
        cat.set_params(run, {"lr": (n / 10, "argv"), "layers": ([64, 32], "params.yaml")})
        env = cat.put_env({"python": {"version": "3.11"}, "packages": {"torch": "2.5"}})
        cat.update_step(child, status="completed", exit_code=0, ended_at=started_at + 2)
        cat.update_step(step, status="completed", exit_code=0, ended_at=started_at + 3)
        cat.update_run(run, status="completed", exit_code=0, ended_at=started_at + 3,
                       env_id=env, git_commit="abc123", git_branch="main", git_dirty=True,
                       git_diff=hashes[3])
    cat.set_metrics(run, "metrics.json", [("test.f1", None, 0.8 + n / 100, None, None),
                                          ("loss", 1.0, 0.5, None, None),
                                          ("loss", 2.0, 0.25, None, None)])
    cat.add_telemetry([(run, started_at + 1, {"cpu_pct": 50.0, "rss": 1000}),
                       (run, started_at + 2, {"cpu_pct": 70.0, "rss": 2000})])
    cat.tag(run, f"stage{n}")
    cat.set_note(run, f"run number {n}")
    return run


def counts(cat: Catalog) -> dict[str, int]:
    return {t: cat._execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}


def comparable(run: dict) -> dict:
    """A run dict without what import may change: ids and origin."""
    out = {k: v for k, v in run.items() if k not in ("id", "origin")}
    out["steps"] = [{k: v for k, v in s.items() if k not in ("id", "parent")}
                    for s in run["steps"]]
    return out


@pytest.fixture
def source(tmp_path):
    (tmp_path / "src").mkdir()
    cat = Catalog.init(tmp_path / "src")
    ids = [record_run(cat, n, started_at=T0 + 100 * n) for n in range(3)]
    yield cat, ids
    cat.close()


@pytest.fixture
def target(tmp_path):
    (tmp_path / "dst").mkdir()
    cat = Catalog.init(tmp_path / "dst")
    yield cat
    cat.close()


def test_round_trip_gives_the_same_runs(source, target, tmp_path):
    src, ids = source
    archive = tmp_path / "runs.tar"
    out = src.export(ids, archive)
    assert out["runs"] == 3 and out["referenced"] == 1 and out["missing"] == 0
    # code, data, model per run plus one shared diff; the big version (one, shared) has
    # no bytes
    assert out["objects"] == 10 and not list(tmp_path.glob(".runs.tar.*"))
    got = target.import_archive(archive)
    assert got["runs"] == 3 and got["present"] == 0 and got["objects"] == 10
    assert [(m["source_id"], m["id"]) for m in got["mapping"]] == [(i, i) for i in ids]
    for m in got["mapping"]:
        mine, theirs = target.run(m["id"]), src.run(m["source_id"])
        assert comparable(mine) == comparable(theirs)
        assert theirs["origin"] is None
        assert mine["origin"]["project"] == str(src.project)
        assert mine["origin"]["run_id"] == m["source_id"] and mine["origin"]["host"]
        assert mine["origin"]["exported_at"].endswith("Z")
        # the bytes came along, verified: restore and diff can read them
        for entry in mine["code"] + mine["inputs"]:
            with target.objects.open(entry["hash"]) as f:
                assert hash_bytes(f.read()) == entry["hash"]
    assert {r["id"]: r["origin"]["run_id"] for r in target.runs()} == {i: i for i in ids}
    assert [r["id"] for r in target.query("params.lr >= 0.1")] == ids[:0:-1]
    assert all(r["origin"] for r in target.query("params.lr >= 0.1"))
    # large files travel as references: the row, no bytes, not stored here either
    big = target.versions("big.ckpt")
    assert big and all(not v["stored"] for v in big) and not target.objects.has(BIG)
    assert target.diff(ids[0], ids[1])  # diffing two imported runs works


def test_import_twice_changes_nothing(source, target, tmp_path):
    src, ids = source
    archive = tmp_path / "runs.tar"
    src.export(ids, archive)
    target.import_archive(archive)
    before = counts(target)
    again = target.import_archive(archive)
    assert counts(target) == before
    assert again["runs"] == 0 and again["present"] == 3 and again["objects"] == 0
    assert [(m["source_id"], m["id"], m["imported"]) for m in again["mapping"]] == [
        (i, i, False) for i in ids]
    # an export of this project coming back is recognised too
    back = tmp_path / "back.tar"
    src.export(ids, back)
    counts_src = counts(src)
    assert src.import_archive(back)["present"] == 3 and counts(src) == counts_src


def test_reexport_keeps_the_identity(source, target, tmp_path):
    src, ids = source
    first, second = tmp_path / "a.tar", tmp_path / "b.tar"
    src.export(ids[:1], first)
    target.import_archive(first)
    target.export(ids[:1], second)  # passed on from the importer
    (tmp_path / "third").mkdir()
    with Catalog.init(tmp_path / "third") as third:
        third.import_archive(first)
        before = counts(third)
        assert third.import_archive(second)["present"] == 1 and counts(third) == before


def test_clashing_ids_are_renumbered(source, target, tmp_path):
    src, ids = source
    local = [record_run(target, n, started_at=T0 + 10_000 + n) for n in range(2)]
    archive = tmp_path / "runs.tar"
    src.export(ids, archive)
    got = target.import_archive(archive)
    mapping = {m["source_id"]: m["id"] for m in got["mapping"]}
    assert mapping[ids[2]] == ids[2]  # free here: kept
    assert {mapping[ids[0]], mapping[ids[1]]}.isdisjoint(local + ids)
    assert len(set(mapping.values())) == 3
    for source_id, new_id in mapping.items():
        assert comparable(target.run(new_id)) == comparable(src.run(source_id))
    assert [target.run(i)["origin"] for i in local] == [None, None]
    assert target.run(local[0])["note"] == "run number 0"  # local runs untouched


def test_export_says_what_is_wrong(source, tmp_path):
    src, ids = source
    with pytest.raises(StoreError, match="no run 99"):
        src.export([99], tmp_path / "x.tar")
    with pytest.raises(StoreError, match="no runs to export"):
        src.export([], tmp_path / "x.tar")
    with pytest.raises(StoreError, match="not a folder"):
        src.export(ids, tmp_path / "nowhere" / "x.tar")
    live = src.begin_run(command=["python", "serve.py"], cwd=str(src.project), exe=None,
                         pid=1, pid_start=1, user=None, hostname="box", started_at=T0 + 999,
                         tier="netlink")
    with pytest.raises(StoreError, match=f"run {live} is still running"):
        src.export([*ids, live], tmp_path / "x.tar")
    assert not (tmp_path / "x.tar").exists()


def _tar(path, members):
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _members(path):
    with tarfile.open(path) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar]


def _bad_archives(good, tmp_path):
    """(name, archive path, what the sentence says) for every kind of bad archive."""
    data = good.read_bytes()
    members = _members(good)
    cases = []

    def case(name, match, raw=None, tar_members=None):
        path = tmp_path / f"{name}.tar"
        if raw is not None:
            path.write_bytes(raw)
        else:
            _tar(path, tar_members)
        cases.append((name, path, match))

    case("truncated", "damaged or truncated", raw=data[:len(data) // 2])
    case("cut-at-member", "damaged or truncated|missing",
         tar_members=members[:-1])
    flipped = list(members)
    name, body = flipped[-1]
    flipped[-1] = (name, bytes([body[0] ^ 1]) + body[1:])
    case("flipped-object", "does not match its hash", tar_members=flipped)
    manifest = json.loads(members[0][1])
    manifest["runs"][0]["run"]["status"] = "failed"
    case("edited-manifest", "manifest does not match its hash",
         tar_members=[(MANIFEST, json.dumps(manifest).encode()), *members[1:]])
    case("foreign", "not an onlooker export", tar_members=[("README", b"hello")])
    case("not-tar", "not an onlooker export", raw=b"just some text\n" * 100)
    case("empty", "not an onlooker export", raw=b"")
    for evil in ("../evil.txt", "/etc/evil", "objects/../../evil"):
        case(f"traversal{len(cases)}", "unexpected member",
             tar_members=[*members, (evil, b"owned")])
    return cases


def test_bad_archives_are_one_sentence_and_import_nothing(source, target, tmp_path):
    src, ids = source
    good = tmp_path / "good.tar"
    src.export(ids, good)
    before = counts(target)
    for name, path, match in _bad_archives(good, tmp_path):
        with pytest.raises(ArchiveError, match=match) as err:
            target.import_archive(path)
        assert "\n" not in str(err.value), name
        assert counts(target) == before, name
    assert not (tmp_path.parent / "evil.txt").exists()
    with pytest.raises(ArchiveError, match="does not exist"):
        target.import_archive(tmp_path / "missing.tar")
    assert target.import_archive(good)["runs"] == 3  # the good one still goes in


def test_a_missing_object_becomes_a_reference(source, target, tmp_path):
    src, ids = source
    run = src.run(ids[0])
    out = run["outputs"][0] if run["outputs"][0]["hash"] != BIG else run["outputs"][1]
    src.objects.remove(out["hash"])  # gone from the store since (a damaged store)
    archive = tmp_path / "runs.tar"
    assert src.export(ids[:1], archive)["missing"] == 1
    target.import_archive(archive)
    assert [v["stored"] for v in target.versions(out["path"])] == [False]


def test_fast_enough_for_many_runs(tmp_path, source, target):
    src, _ = source
    ids = [record_run(src, n, started_at=T0 + 1000 + n) for n in range(3, 60)]
    start = time.monotonic()
    src.export(ids, tmp_path / "many.tar")
    target.import_archive(tmp_path / "many.tar")
    assert time.monotonic() - start < 10
    assert counts(target)["runs"] == len(ids)


def with_large_output(cat: Catalog, run_id: int, size: int) -> tuple[str, bytes]:
    """A finished run gets an output larger than a pack takes: it streams through its
    own temp file on import, not through memory."""
    data = bytes(range(256)) * (size // 256) + b"tail"
    hash = cat.objects.put_bytes(data)
    with cat.transaction():
        vid = cat.add_version("weights.bin", hash=hash, size=len(data), mtime_ns=5,
                              kind="model", stored=True, created_at=T0)
        cat.link(run_id, vid, "output")
    return hash, data


def store_files(cat: Catalog) -> list[str]:
    """Every file under the object store, temporaries included."""
    root = cat.objects.root
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("which", ["large", "small"])
def test_a_member_not_matching_its_hash_leaves_no_temporaries_and_no_rows(
        source, target, tmp_path, which):
    src, ids = source
    big, _ = with_large_output(src, ids[0], 3 << 20)
    good = tmp_path / "good.tar"
    src.export(ids, good)
    members = _members(good)
    index = next(i for i, (name, body) in enumerate(members) if name.startswith("objects/")
                 and (name.endswith(big[7:]) == (which == "large")))
    name, body = members[index]
    members[index] = (name, body[:-1] + bytes([body[-1] ^ 1]))  # same size, other bytes
    bad = tmp_path / "bad.tar"
    _tar(bad, members)
    before, files = counts(target), store_files(target)
    with pytest.raises(ArchiveError, match="does not match its hash"):
        target.import_archive(bad)
    assert counts(target) == before
    assert store_files(target) == files  # no temporaries, no objects half-imported
    assert target.import_archive(good)["runs"] == 3
    assert not list(target.objects.tmp.iterdir())  # the good import cleans up after itself


def test_large_objects_come_through_plain_and_compressed_archives(source, target, tmp_path):
    src, ids = source
    big, data = with_large_output(src, ids[0], 3 << 20)
    plain = tmp_path / "runs.tar"
    src.export(ids[:1], plain)
    squeezed = tmp_path / "runs.tar.gz"  # no kernel copy from a gzip stream: chunks
    with tarfile.open(squeezed, "w:gz") as out, tarfile.open(plain) as tar:
        for member in tar:
            out.addfile(member, tar.extractfile(member))
    for archive, project in ((plain, "plain"), (squeezed, "gz")):
        (tmp_path / project).mkdir()
        cat = Catalog.init(tmp_path / project)
        try:
            got = cat.import_archive(archive)
            assert got["bytes"] >= len(data) and got["runs"] == 1
            with cat.objects.open(big) as f:
                assert f.read() == data
            assert not list(cat.objects.tmp.iterdir())
        finally:
            cat.close()


@pytest.mark.parametrize("which", ["large", "small"])
def test_a_damaged_store_object_stops_the_export(source, tmp_path, which):
    src, ids = source
    big, data = with_large_output(src, ids[0], 3 << 20)
    hash = big if which == "large" else src.run(ids[0])["code"][0]["hash"]
    obj = src.objects.path_for(hash)
    body = bytearray(obj.read_bytes())
    body[len(body) // 2] ^= 1  # same size, one bit off: only the hash can tell
    obj.chmod(0o644)
    obj.write_bytes(bytes(body))
    with pytest.raises(StoreError, match="does not match its hash: it is damaged"):
        src.export(ids, tmp_path / "runs.tar")
    assert list(tmp_path.glob("*runs.tar*")) == []  # neither the archive nor its temp


def test_the_archive_is_a_plain_tar_any_tar_reads(source, tmp_path):
    """export writes its own ustar headers (tarfile's cost more than small objects):
    they must be the bytes tarfile writes, and the archive a tar like any other."""
    from onlooker.store.archive import _ustar_header

    for size in (0, 1, 12345, 8 ** 11 - 1):
        info = tarfile.TarInfo("objects/" + "a" * 64)
        info.size, info.mtime, info.mode = size, int(T0), 0o444
        assert _ustar_header(info.name.encode(), size, int(T0)) == info.tobuf(
            tarfile.USTAR_FORMAT)
    src, ids = source
    big, data = with_large_output(src, ids[0], 3 << 20)
    archive = tmp_path / "runs.tar"
    src.export(ids, archive)
    assert archive.stat().st_size % tarfile.RECORDSIZE == 0
    got = dict(_members(archive))
    assert got["objects/" + big[7:]] == data
    assert all(hash_bytes(body) == "blake3:" + name[8:] for name, body in got.items()
               if name.startswith("objects/"))


def with_packed_outputs(cat: Catalog, run_id: int, n: int) -> dict[str, bytes]:
    """A finished run gets `n` small outputs stored as the agent stores a scan: in one
    pack (batch), so export reads them from the pack and import writes a pack."""
    blobs = {f"out/{i}.csv": f"row {i}\n".encode() * (i % 7 + 1) for i in range(n)}
    with cat.objects.batch():
        hashes = {path: cat.objects.put_bytes(data) for path, data in blobs.items()}
    assert cat.objects.packs.any()
    with cat.transaction():
        for path, data in blobs.items():
            vid = cat.add_version(path, hash=hashes[path], size=len(data), mtime_ns=6,
                                  kind="dataset", stored=True, created_at=T0)
            cat.link(run_id, vid, "output")
    return {hashes[p]: blobs[p] for p in blobs}


def test_packed_objects_travel_byte_for_byte_into_a_pack(source, target, tmp_path):
    src, ids = source
    blobs = with_packed_outputs(src, ids[0], 300)
    archive = tmp_path / "runs.tar"
    assert src.export(ids, archive)["objects"] == 10 + len(blobs)
    got = dict(_members(archive))  # any tar reads it, each packed object its own member
    assert all(got["objects/" + h[7:]] == data for h, data in blobs.items())
    assert target.import_archive(archive)["objects"] == 10 + len(blobs)
    assert target.objects.packs.any()  # they went in as one pack, not 300 files
    for hash, data in blobs.items():
        with target.objects.open(hash) as f:
            assert f.read() == data
    assert not list(target.objects.tmp.iterdir())


def test_a_damaged_packed_object_stops_the_export(source, tmp_path):
    src, ids = source
    blobs = with_packed_outputs(src, ids[0], 40)
    pack = next(src.objects.packs.dir.glob("*.pack"))
    body = bytearray(pack.read_bytes())
    body[len(body) // 2] ^= 1  # one object's byte: the pack's size is unchanged
    pack.chmod(0o644)
    pack.write_bytes(bytes(body))
    with pytest.raises(StoreError, match="does not match its hash: it is damaged"):
        src.export(ids, tmp_path / "runs.tar")
    assert list(tmp_path.glob("*runs.tar*")) == [] and blobs


def test_export_own_archives_are_read_without_tarfile(source, target, tmp_path, monkeypatch):
    """The plain reader takes what export writes (tarfile costs ~40 us a member); a
    compressed archive, one it does not take, still comes in through tarfile."""
    from onlooker.store import archive as archive_mod

    src, ids = source
    big, data = with_large_output(src, ids[0], 3 << 20)
    blobs = with_packed_outputs(src, ids[1], 50)
    plain = tmp_path / "runs.tar"
    src.export(ids, plain)
    squeezed = tmp_path / "runs.tar.gz"
    with tarfile.open(squeezed, "w:gz") as out, tarfile.open(plain) as tar:
        for member in tar:
            out.addfile(member, tar.extractfile(member))
    used = []
    real = archive_mod._checkmembers
    monkeypatch.setattr(archive_mod, "_checkmembers",
                        lambda *a: used.append(a[0]) or real(*a))
    # pieces smaller than the large object: its copy and hash overlap, piece by piece
    monkeypatch.setattr(archive_mod, "_PIECE", 1 << 20)
    assert archive_mod.read_manifest(plain)["objects"][big] == len(data)
    assert target.import_archive(plain)["runs"] == 3 and used == []
    with target.objects.open(big) as f:
        assert f.read() == data
    assert all(target.objects.has(h) for h in blobs)
    (tmp_path / "gz").mkdir()
    with Catalog.init(tmp_path / "gz") as other:
        assert other.import_archive(squeezed)["runs"] == 3 and used == [squeezed]
        assert counts(other) == counts(target)


def test_a_large_object_damaged_in_a_later_piece_imports_nothing(source, target, tmp_path,
                                                                 monkeypatch):
    from onlooker.store import archive as archive_mod

    src, ids = source
    big, _ = with_large_output(src, ids[0], 3 << 20)
    good = tmp_path / "good.tar"
    src.export(ids, good)
    raw = bytearray(good.read_bytes())
    with tarfile.open(good) as tar:
        member = tar.getmember("objects/" + big[7:])
    raw[member.offset_data + member.size - 10] ^= 1  # in its last piece
    bad = tmp_path / "bad.tar"
    bad.write_bytes(bytes(raw))
    monkeypatch.setattr(archive_mod, "_PIECE", 1 << 20)
    before, files = counts(target), store_files(target)
    with pytest.raises(ArchiveError, match="does not match its hash"):
        target.import_archive(bad)
    assert counts(target) == before and store_files(target) == files


def test_an_archive_cut_inside_an_object_is_damaged_not_foreign(source, target, tmp_path):
    src, ids = source
    with_packed_outputs(src, ids[0], 50)
    good = tmp_path / "good.tar"
    src.export(ids, good)
    data = good.read_bytes()
    with tarfile.open(good) as tar:
        last = tar.getmembers()[-1]
    for cut in (last.offset_data + 1, last.offset + 100, last.offset_data + last.size - 1):
        bad = tmp_path / f"cut{cut}.tar"
        bad.write_bytes(data[:cut])
        with pytest.raises(ArchiveError, match="damaged or truncated") as err:
            target.import_archive(bad)
        assert "\n" not in str(err.value)
    assert counts(target)["runs"] == 0
