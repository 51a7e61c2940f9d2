"""Restore over real catalogs with stored objects: byte-exact round trips checked by
BLAKE3, the --to layout, what is refused, left alone or skipped, damaged objects, and
PATH@HASH with its errors."""

from __future__ import annotations

import os
from pathlib import Path

import blake3
import pytest

from onlooker.store.catalog import Catalog
from onlooker.store.errors import NoSuchRun
from onlooker.store.objects import hash_bytes
from onlooker.store.restore import AmbiguousVersion, RestoreError, VersionNotFound

T0 = 1_795_000_000.0


def b3(path: Path) -> str:
    return "blake3:" + blake3.blake3(path.read_bytes()).hexdigest()


class World:
    """A project whose runs read and wrote files, their bytes in the object store."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.cat = Catalog.init(root)
        self.t = T0

    def version(self, path: str, data: bytes, *, stored: bool = True) -> int:
        h = self.cat.objects.put_bytes(data) if stored else hash_bytes(data)
        self.t += 1
        return self.cat.add_version(path, hash=h, size=len(data), mtime_ns=1, kind="other",
                                    stored=stored, created_at=self.t)

    def run(self, files: list[tuple[str, str, bytes]], *, write: bool = True,
            stored: bool = True) -> int:
        self.t += 1
        run = self.cat.begin_run(command=["python", "x.py"], cwd=str(self.root), exe=None,
                                 pid=1, pid_start=1, user="ana", hostname="box",
                                 started_at=self.t, tier="netlink")
        for role, path, data in files:
            vid = self.version(path, data, stored=stored)
            self.cat.link(run, vid, role, access="read" if role == "meta" else None)
            if write:
                target = self.root / path if not os.path.isabs(path) else Path(path)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
        self.cat.update_run(run, status="completed", exit_code=0, ended_at=self.t + 1)
        return run


@pytest.fixture
def world(tmp_path):
    (tmp_path / "proj").mkdir()
    w = World(tmp_path / "proj")
    yield w
    w.cat.close()


MODEL_V1 = os.urandom(300_000)  # loose object (over the pack size)
MODEL_V2 = os.urandom(300_000)
SMALL = [(f"data/part-{i}.csv", f"{i},{i * i}\n".encode()) for i in range(40)]


def pipeline(world: World) -> tuple[int, int]:
    prep = world.run([("code", "src/prep.py", b"print('prep')\n"),
                      *[("output", p, d) for p, d in SMALL]])
    train = world.run([("code", "src/train.py", b"print('train')\n"),
                       *[("input", p, d) for p, d in SMALL],
                       ("input", "params.yaml", b"lr: 0.1\n"),
                       ("output", "models/model.pkl", MODEL_V1),
                       ("meta", ".gitignore", b"*.pyc\n")])
    return prep, train


def test_round_trip_is_byte_exact_and_verified(world):
    _, train = pipeline(world)
    recorded = {e["path"]: e["hash"] for role in ("inputs", "outputs", "code")
                for e in world.cat.run(train)[role]}
    for path in recorded:
        (world.root / path).unlink()
    (world.root / ".gitignore").unlink()
    report = world.cat.restore(train)
    assert report["ok"] and report["run"] == train
    assert report["counts"]["restored"] == len(recorded) == 43
    for path, want in recorded.items():
        assert b3(world.root / path) == want, path
    assert not (world.root / ".gitignore").exists()  # meta only when named
    assert report["bytes_written"] == sum(e["size"] for e in report["files"])
    assert not [p for p in world.root.rglob("*.tmp")]
    again = world.cat.restore(train)
    assert again["counts"]["unchanged"] == 43 and again["bytes_written"] == 0


def test_roles_paths_and_meta_by_name(world):
    _, train = pipeline(world)
    for path in ("models/model.pkl", "src/train.py", "data/part-3.csv", ".gitignore"):
        (world.root / path).unlink()
    out = world.cat.restore(train, roles=("outputs",))
    assert [(f["path"], f["status"]) for f in out["files"]] == [("models/model.pkl",
                                                                 "restored")]
    assert not (world.root / "src/train.py").exists()
    named = world.cat.restore(train, paths=["data/part-3.csv", ".gitignore"])
    assert {f["path"]: f["status"] for f in named["files"]} == {
        "data/part-3.csv": "restored", ".gitignore": "restored"}
    folder = world.cat.restore(train, paths=[str(world.root / "data")])  # absolute, a folder
    assert len(folder["files"]) == 40 and folder["counts"]["unchanged"] == 40
    with pytest.raises(RestoreError, match="no file at nowhere.txt"):
        world.cat.restore(train, paths=["nowhere.txt"])
    with pytest.raises(RestoreError, match="no file at models/model.pkl"):
        world.cat.restore(train, paths=["models/model.pkl"], roles=("inputs",))
    with pytest.raises(NoSuchRun):
        world.cat.restore(999)


def test_restore_into_another_folder_keeps_the_layout(world, tmp_path):
    outside = tmp_path / "elsewhere" / "weights.bin"
    outside.parent.mkdir()
    _, train = pipeline(world)
    ext = world.run([("input", str(outside), b"W" * 1000),
                     ("output", "models/fine.pkl", b"F" * 10)])
    dest = tmp_path / "copy"
    report = world.cat.restore(train, to=dest)
    assert report["ok"] and report["target"] == str(dest)
    assert b3(dest / "models/model.pkl") == hash_bytes(MODEL_V1)
    assert (dest / "src/train.py").read_bytes() == b"print('train')\n"
    assert len(list((dest / "data").iterdir())) == 40
    got = world.cat.restore(ext, to=dest)
    assert (dest / "_outside" / str(outside).lstrip("/")).read_bytes() == b"W" * 1000
    assert {f["target"] for f in got["files"]} == {
        str(dest / "_outside" / str(outside).lstrip("/")), str(dest / "models/fine.pkl")}
    (tmp_path / "afile").write_text("x")
    with pytest.raises(RestoreError, match="not a folder"):
        world.cat.restore(train, to=tmp_path / "afile")


def test_refuses_unrecorded_content_unless_forced(world):
    _, train = pipeline(world)
    later = world.run([("input", "models/model.pkl", MODEL_V1),
                       ("output", "models/model.pkl", MODEL_V2)])
    assert later
    model = world.root / "models/model.pkl"
    assert model.read_bytes() == MODEL_V2  # a version onlooker recorded: overwritten
    os.chmod(model, 0o600)
    report = world.cat.restore(train, roles=("outputs",))
    assert report["files"][0]["status"] == "restored" and model.read_bytes() == MODEL_V1
    assert os.stat(model).st_mode & 0o777 == 0o600  # a replaced file keeps its mode
    model.write_bytes(b"my own edit")
    dry = world.cat.restore(train, roles=("outputs",), dry_run=True)
    assert dry["files"][0]["status"] == "refused" and not dry["ok"]
    refused = world.cat.restore(train, roles=("outputs",))
    entry = refused["files"][0]
    assert entry["status"] == "refused" and entry["current_hash"] == hash_bytes(b"my own edit")
    assert model.read_bytes() == b"my own edit"
    forced_dry = world.cat.restore(train, roles=("outputs",), force=True, dry_run=True)
    assert forced_dry["files"][0]["status"] == "would_restore"
    assert model.read_bytes() == b"my own edit"
    forced = world.cat.restore(train, roles=("outputs",), force=True)
    assert forced["ok"] and b3(model) == hash_bytes(MODEL_V1)
    # a folder in the place of a file is never replaced
    (world.root / "src/train.py").unlink()
    (world.root / "src/train.py").mkdir()
    bad = world.cat.restore(train, roles=("code",), force=True)
    assert bad["files"][0]["status"] == "failed" and "folder" in bad["files"][0]["reason"]


def test_only_referenced_versions_are_skipped_and_say_what_is_there(world):
    big = world.run([("output", "big.bin", b"B" * 5000)], stored=False)
    report = world.cat.restore(big)
    assert report["files"][0]["status"] == "unchanged"  # the file still has that hash
    (world.root / "big.bin").write_bytes(b"changed")
    report = world.cat.restore(big)
    entry = report["files"][0]
    assert entry["status"] == "skipped" and not report["ok"]
    assert "other content" in entry["reason"] and entry["current_hash"] == hash_bytes(b"changed")
    (world.root / "big.bin").unlink()
    entry = world.cat.restore(big)["files"][0]
    assert entry["status"] == "skipped" and "missing" in entry["reason"]


def test_a_damaged_object_is_detected_and_nothing_is_written(world):
    _, train = pipeline(world)
    model = world.root / "models/model.pkl"
    model.unlink()
    blob = world.cat.objects.path_for(hash_bytes(MODEL_V1))
    os.chmod(blob, 0o644)
    blob.write_bytes(MODEL_V1[:-1] + bytes([MODEL_V1[-1] ^ 1]))  # one bit flipped
    report = world.cat.restore(train, roles=("outputs",))
    entry = report["files"][0]
    assert entry["status"] == "failed" and "damaged" in entry["reason"] and not report["ok"]
    assert not model.exists() and not list(model.parent.iterdir())  # no temp file left
    blob.unlink()
    entry = world.cat.restore(train, roles=("outputs",))["files"][0]
    assert entry["status"] == "failed" and "missing from the store" in entry["reason"]


def test_an_unwritable_target_is_one_error_and_nothing_half_written(world, tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes anywhere")
    _, train = pipeline(world)
    dest = tmp_path / "ro"
    dest.mkdir()
    os.chmod(dest, 0o500)
    try:
        with pytest.raises(RestoreError, match="cannot write .*Permission denied"):
            world.cat.restore(train, to=dest)
        assert list(dest.iterdir()) == []
    finally:
        os.chmod(dest, 0o700)


def test_progress_is_reported(world):
    _, train = pipeline(world)
    for p, _ in SMALL:
        (world.root / p).unlink()
    seen = []
    world.cat.restore(train, on_progress=lambda *a: seen.append(a))
    assert seen[-1][0] == seen[-1][1] == 43 and seen[-1][2] == seen[-1][3]
    assert [s[0] for s in seen] == sorted(s[0] for s in seen)


def test_path_at_hash(world):
    _, train = pipeline(world)
    world.run([("input", "models/model.pkl", MODEL_V1),
               ("output", "models/model.pkl", MODEL_V2)])
    model = world.root / "models/model.pkl"
    v1 = hash_bytes(MODEL_V1)
    report = world.cat.restore_version("models/model.pkl", v1[7:19])
    assert report["run"] is None and report["files"][0]["status"] == "restored"
    assert b3(model) == v1
    again = world.cat.restore_version(str(model), v1[:20])  # absolute, with blake3:
    assert again["files"][0]["status"] == "unchanged"
    with pytest.raises(VersionNotFound, match="no version whose hash starts with 0000"):
        world.cat.restore_version("models/model.pkl", "0000")
    with pytest.raises(VersionNotFound, match="not in the catalog"):
        world.cat.restore_version("models/never.pkl", "ab")
    with pytest.raises(VersionNotFound, match="not a hash"):
        world.cat.restore_version("models/model.pkl", "xyz")


def test_an_ambiguous_prefix_names_the_count(world):
    # versions of one path until two share a first hex digit
    seen: dict[str, list[bytes]] = {}
    i = 0
    while True:
        data = b"v%d" % i
        i += 1
        world.run([("output", "notes.txt", data)])
        digit = hash_bytes(data)[7]
        seen.setdefault(digit, []).append(data)
        if len(seen[digit]) == 2:
            break
    with pytest.raises(AmbiguousVersion, match=f"{digit} names 2 versions of notes.txt"):
        world.cat.restore_version("notes.txt", digit)


def test_a_full_disk_stops_with_one_error_and_leaves_no_partial_file(world, monkeypatch):
    import errno

    from onlooker.store import restore as restore_mod

    _, train = pipeline(world)
    model = world.root / "models/model.pkl"
    model.unlink()
    real_write = os.write
    budget = [100_000]

    def filling(fd, data):  # the disk fills 100 kB into the model
        if budget[0] <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        n = real_write(fd, data[:budget[0]])
        budget[0] -= n
        return n

    monkeypatch.setattr(restore_mod.os, "write", filling)
    with pytest.raises(RestoreError, match="No space left on device; nothing of it was left"):
        world.cat.restore(train, roles=("outputs",))
    monkeypatch.undo()
    assert not model.exists() and list(model.parent.iterdir()) == []


# copied in the kernel and hashed piece by piece beside the copy (16 MiB pieces): one
# piece, and several with a short last one, the flipped bit in a middle piece
@pytest.mark.parametrize("size", [6 * 1024 * 1024, 40 * 1024 * 1024 + 12345])
def test_a_big_loose_object_round_trips_and_a_damaged_one_is_caught(world, size):
    big = os.urandom(size)
    run = world.run([("output", "models/big.bin", big)])
    target = world.root / "models/big.bin"
    target.unlink()
    assert world.cat.restore(run)["ok"] and target.read_bytes() == big
    target.unlink()
    blob = world.cat.objects.path_for(hash_bytes(big))
    os.chmod(blob, 0o644)
    with open(blob, "r+b") as f:
        at = min(5_000_000, size // 2) if size < 32 << 20 else 20_000_000
        f.seek(at)
        f.write(bytes([big[at] ^ 1]))  # one bit flipped
    entry = world.cat.restore(run)["files"][0]
    assert entry["status"] == "failed" and "damaged" in entry["reason"]
    assert list(target.parent.iterdir()) == []
