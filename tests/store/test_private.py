"""The store is its project owner's and private to them (store/private.py)."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import time
from pathlib import Path

import pytest

from onlooker.agent.workers.hasher import DONE, StatCache, hash_job
from onlooker.store import private
from onlooker.store.catalog import Catalog
from onlooker.store.errors import MissingObject, StoreError
from onlooker.store.objects import PACK_MIN, ObjectStore, hash_bytes
from onlooker.store.private import Owner, Reader

# Ids with no account on the machine: root may give files to any uid.
UID, GID = 54_321, 54_322
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="only root can give files away")


def mode(p: Path) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


def entries(folder: Path) -> list[Path]:
    return [folder, *folder.rglob("*")]


@pytest.fixture
def reader_reset():
    yield
    private.read_for(None)


@pytest.fixture
def open_dir():
    """A folder anyone may pass through (pytest's tmp_path is under a 0700 folder)."""
    base = Path(tempfile.mkdtemp(prefix="onlooker-private-"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def test_owner_is_the_nearest_existing_folders(tmp_path):
    st = os.stat(tmp_path)
    assert Owner.of(tmp_path / "not" / "yet") == Owner(st.st_uid, st.st_gid)


@root_only
def test_what_the_helpers_make_is_the_owners_and_private(tmp_path):
    owner = Owner(UID, GID)
    made = private.make_dir(tmp_path / "a" / "b", owner)
    os.close(private.open_private(made / "f", os.O_WRONLY, owner))
    private.write_private(made / "g.json", b"{}", owner)
    private.write_private(made / "g.json", b"{1}", owner)  # replaced, still private
    for p in (tmp_path / "a", made):
        assert (os.stat(p).st_uid, os.stat(p).st_gid, mode(p)) == (UID, GID, 0o700)
    for p in (made / "f", made / "g.json"):
        assert (os.stat(p).st_uid, os.stat(p).st_gid, mode(p)) == (UID, GID, 0o600)
    assert (made / "g.json").read_bytes() == b"{1}"
    assert sorted(x.name for x in made.iterdir()) == ["f", "g.json"]  # no temp left
    assert os.stat(tmp_path).st_uid == 0  # what was there is left as it was


def _fill(store: ObjectStore, tmp_path: Path) -> None:
    store.put_bytes(b"one loose object")
    with store.batch():  # enough small ones for a pack
        for i in range(PACK_MIN + 5):
            store.put_bytes(f"small {i}".encode())
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(3 << 20))
    from onlooker.store.hashing import hash_file
    assert hash_file(big, store=store, copy=True, copy_max_bytes=8 << 20).stored
    staged = store.tmp / "staged"
    staged.write_bytes(b"adopted")
    store.adopt(staged, hash_bytes(b"adopted"))


@root_only
def test_a_store_made_by_root_for_another_owner_is_theirs(tmp_path):
    root = tmp_path / "objects"
    root.mkdir(mode=0o700)
    os.chown(root, UID, GID)
    store = ObjectStore(root)
    _fill(store, tmp_path)
    packs = list((root / "packs").iterdir())
    assert {p.suffix for p in packs} == {".pack", ".idx"}
    for p in entries(root):
        st = os.lstat(p)
        assert (st.st_uid, st.st_gid) == (UID, GID), p
        if stat.S_ISDIR(st.st_mode):
            assert mode(p) == 0o700, p
        elif p.parent.name != "tmp":
            assert mode(p) == 0o400, p  # objects and packs: read-only, the owner's


def test_an_owners_own_store_is_private_too(tmp_path):
    store = ObjectStore(tmp_path / "objects", Owner(os.geteuid(), os.getegid()))
    _fill(store, tmp_path)
    for p in entries(tmp_path / "objects"):
        assert mode(p) & 0o077 == 0, (p, oct(mode(p)))


@root_only
def test_catalog_and_its_wal_belong_to_the_project_owner(tmp_path):
    project = tmp_path / "proj"
    project.mkdir()
    os.chown(project, UID, GID)
    with Catalog.init(project) as cat:
        with cat.transaction():
            cat.put_env({"python": "3"})
        store = cat.store_dir
        names = {p.name for p in store.iterdir()}
        assert {"catalog.db", "catalog.db-wal", "catalog.db-shm", "objects"} <= names
        for p in entries(store):
            st = os.lstat(p)
            assert (st.st_uid, st.st_gid) == (UID, GID), p
            assert mode(p) == (0o700 if p.is_dir() else 0o600), p


@root_only
def test_secure_store_fixes_an_old_store_but_leaves_links_and_loose_objects(tmp_path):
    project = tmp_path / "proj"
    store = project / ".onlooker"
    for d in ("objects/ab", "objects/packs", "tmp/read", "launcher"):
        (store / d).mkdir(parents=True)
    for p in entries(store):
        p.chmod(0o755)
    for name in ("catalog.db", "agent.log", "agent.json", "launcher/1.json"):
        (store / name).write_text("x")
        (store / name).chmod(0o644)
    (store / "objects/packs/p.pack").write_bytes(b"p")
    (store / "objects/packs/p.pack").chmod(0o444)
    loose = store / "objects/ab" / ("c" * 62)
    loose.write_bytes(b"o")
    loose.chmod(0o444)
    in_project = project / "data.csv"
    in_project.write_text("a,b\n")
    os.link(in_project, store / "tmp/read/1-1-1")  # the side door's link to a project file
    os.chown(project, UID, GID)

    changed = private.secure_store(store, Owner.of(project))
    assert changed > 0
    for p in entries(store):
        st = os.lstat(p)
        if p == loose or p.parent.name == "read":
            continue
        assert (st.st_uid, st.st_gid) == (UID, GID), p
        if p.is_dir():
            assert mode(p) == 0o700, p
    for name in ("catalog.db", "agent.log", "agent.json", "launcher/1.json"):
        assert mode(store / name) == 0o600, name
    assert mode(store / "objects/packs/p.pack") == 0o400  # read-only stays read-only
    assert (os.stat(loose).st_uid, mode(loose)) == (0, 0o444)  # not walked: see docstring
    assert (os.stat(in_project).st_uid, mode(in_project)) == (0, 0o644)  # never touched
    assert private.secure_store(store, Owner.of(project)) == 0  # once is enough


def test_reader_follows_the_kernels_classes(open_dir):
    tmp_path = open_dir
    r = Reader(UID, frozenset({GID, 7}))

    def st(uid: int, gid: int, bits: int) -> os.stat_result:
        return os.stat_result((stat.S_IFREG | bits, 0, 0, 1, uid, gid, 0, 0, 0, 0))

    f = tmp_path / "f"
    f.write_text("x")
    assert r.may_read(f, st(UID, 0, 0o400))
    assert not r.may_read(f, st(UID, 0, 0o044))  # the owner class decides for the owner
    assert r.may_read(f, st(0, 7, 0o040))
    assert not r.may_read(f, st(0, 7, 0o404))  # a group of the owner's: the group class
    assert r.may_read(f, st(0, 0, 0o004))
    assert not r.may_read(f, st(0, 0, 0o600))  # root's secret
    assert not r.may_read(tmp_path / "missing")


def test_reader_needs_search_on_every_folder_above(open_dir):
    tmp_path = open_dir
    locked = tmp_path / "locked"
    locked.mkdir()
    f = locked / "f"
    f.write_text("x")
    f.chmod(0o644)
    locked.chmod(0o700)  # root's folder: nobody else may pass
    assert not Reader(UID, frozenset({GID})).may_read(f)
    locked.chmod(0o711)
    assert Reader(UID, frozenset({GID})).may_read(f)


def test_no_limit_when_the_agent_is_the_owner(reader_reset, tmp_path):
    assert private.read_for(Owner(os.geteuid(), os.getegid())) is None
    assert private.read_for(Owner(0, 0)) is None  # root's project: root reads it all
    f = tmp_path / "f"
    f.write_text("x")
    f.chmod(0)
    assert private.may_read(f)


def test_the_hasher_takes_in_nothing_the_owner_may_not_read(reader_reset, open_dir):
    tmp_path = open_dir
    store = ObjectStore(tmp_path / "objects")
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"hunter2\n")
    secret.chmod(0o600)
    old = time.time() - 60
    os.utime(secret, (old, old))
    shared = tmp_path / "shared.txt"
    shared.write_bytes(b"for all\n")
    shared.chmod(0o644)
    os.utime(shared, (old, old))
    owner = Owner(UID, GID) if os.geteuid() == 0 else Owner(os.geteuid() + 1, 0)
    private.read_for(owner)

    def job(p: Path) -> tuple:
        return hash_job(str(p), True, True, 0, True, None, objects=store, cache=StatCache(),
                        quiet=0.0, copy_max=1 << 20)

    kind, done, read = job(secret)
    assert (kind, done[2], read) == (DONE, None, False)
    assert "owner may not read" in done[8]
    assert not store.has(hash_bytes(b"hunter2\n"))
    kind, done, _ = job(shared)
    assert (kind, done[2]) == (DONE, hash_bytes(b"for all\n"))


def test_open_private_never_follows_a_link(tmp_path):
    target = tmp_path / "elsewhere"
    target.write_text("not the store's\n")
    (tmp_path / "agent.log").symlink_to(target)
    with pytest.raises(OSError):
        private.open_private(tmp_path / "agent.log", os.O_WRONLY | os.O_APPEND, Owner(UID, GID))
    assert target.read_text() == "not the store's\n"


@root_only
def test_a_link_in_another_users_store_stops_a_root_agent(tmp_path):
    project = tmp_path / "proj"
    (project / ".onlooker" / "objects").mkdir(parents=True)
    os.chown(project, UID, GID)
    elsewhere = tmp_path / "etc"
    elsewhere.mkdir()
    (project / ".onlooker" / "tmp").symlink_to(elsewhere)
    with pytest.raises(StoreError, match="symbolic link"):
        private.secure_store(project / ".onlooker", Owner.of(project))
    assert os.stat(elsewhere).st_uid == 0  # not given away
    # The owner's own agent may keep a link it made (a store on another disk, say).
    assert private.secure_store(project / ".onlooker", Owner(0, os.getegid())) >= 0


def test_an_object_that_is_a_link_is_not_followed(tmp_path):
    store = ObjectStore(tmp_path / "objects")
    h = hash_bytes(b"what the link pretends to hold")
    (tmp_path / "secret").write_bytes(b"root's secret")
    store.path_for(h).parent.mkdir(parents=True)
    store.path_for(h).symlink_to(tmp_path / "secret")
    with pytest.raises(MissingObject, match="symbolic link"):
        store.open(h)


def _deny_acl(uid: int) -> bytes:
    """A POSIX access ACL (the kernel's xattr form) of a 0644 file that denies `uid`."""
    import struct
    entries = [(0x01, 6, 0xFFFFFFFF), (0x02, 0, uid), (0x04, 4, 0xFFFFFFFF),
               (0x10, 4, 0xFFFFFFFF), (0x20, 4, 0xFFFFFFFF)]
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)


def test_an_acl_on_someone_elses_file_is_refused(open_dir):
    f = open_dir / "f"
    f.write_text("x")
    f.chmod(0o644)
    r = Reader(UID, frozenset({GID}))
    assert r.may_read(f)
    try:
        os.setxattr(f, "system.posix_acl_access", _deny_acl(UID))
    except OSError as err:
        pytest.skip(f"no ACLs here: {err}")
    assert not r.may_read(f)  # "others may read" but the ACL names the owner: refused


@root_only
def test_open_private_refuses_a_fifo_and_a_hard_link_for_another_owner(tmp_path):
    os.mkfifo(tmp_path / "agent.log")
    with pytest.raises(OSError):  # at once (ENXIO: no reader), never a hang
        private.open_private(tmp_path / "agent.log", os.O_WRONLY | os.O_APPEND, Owner(UID, GID))
    victim = tmp_path / "passwd"
    victim.write_text("root:x:0:0\n")
    os.link(victim, tmp_path / "agent.json")
    with pytest.raises(OSError, match="hard links"):
        private.open_private(tmp_path / "agent.json", os.O_WRONLY | os.O_APPEND, Owner(UID, GID))
    assert os.stat(victim).st_uid == 0 and victim.read_text() == "root:x:0:0\n"


def test_a_params_file_the_owner_may_not_read_gives_no_params(reader_reset, open_dir):
    from onlooker.agent.rules import params

    shared, secret = open_dir / "shared.yaml", open_dir / "secret.yaml"
    shared.write_text("lr: 0.1\n")
    shared.chmod(0o644)
    secret.write_text("api_key: hunter2\n")
    secret.chmod(0o600)
    private.read_for(Owner(UID, GID) if os.geteuid() == 0 else Owner(os.geteuid() + 1, 0))
    assert params._read_small(str(shared), None) == "lr: 0.1\n"
    assert params._read_small(str(secret), None) is None
