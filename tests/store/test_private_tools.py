"""What the tools beside the agent make in a project (init, `onlooker run`, gc, restore)
is the project owner's, whoever runs them (store/private.py); a root agent reads no
kernel file the owner could not."""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
import tempfile
import time
from pathlib import Path

import pytest

from onlooker.agent import config, launcher
from onlooker.agent.assembly import kernel
from onlooker.store import manage, private
from onlooker.store.catalog import Catalog
from onlooker.store.errors import StoreError
from onlooker.store.private import Owner

# Ids with no account on the machine: root may give files to any uid.
UID, GID = 54_321, 54_322
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="only root can give files away")
T0 = time.time() - 10 * 86400


def mode(p: Path) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


def whose(p: Path) -> tuple[int, int]:
    st = os.lstat(p)
    return st.st_uid, st.st_gid


@pytest.fixture
def project(tmp_path):
    """A project folder of another user's, as root sees it under sudo."""
    p = tmp_path / "proj"
    p.mkdir()
    os.chown(p, UID, GID)
    return p


@pytest.fixture
def reader_reset():
    yield
    private.read_for(None)


@root_only
def test_init_leaves_the_owner_a_private_store_and_a_config_to_edit(project):
    assert config.instrument(project)
    store = project / ".onlooker"
    assert (whose(store), mode(store)) == ((UID, GID), 0o700)
    for name in ("config.toml", ".gitignore", "catalog.db"):
        assert (whose(store / name), mode(store / name)) == ((UID, GID), 0o600), name
    assert (store / "config.toml").read_text() == config.TEMPLATE
    # An edited config survives a second init; an old store's loose modes are fixed.
    (store / "config.toml").write_text("[capture]\npoll_hz = 10\n")
    (store / "config.toml").chmod(0o644)
    os.chown(store / ".gitignore", 0, 0)
    assert not config.instrument(project)
    assert (store / "config.toml").read_text() == "[capture]\npoll_hz = 10\n"
    assert mode(store / "config.toml") == 0o600
    assert whose(store / ".gitignore") == (UID, GID)


def test_init_by_the_owner_is_private_too(tmp_path):
    config.instrument(tmp_path)
    store = tmp_path / ".onlooker"
    assert mode(store) == 0o700
    assert mode(store / "config.toml") == mode(store / ".gitignore") == 0o600


@root_only
def test_onlooker_run_keeps_its_log_and_record_for_the_owner(project):
    store = project / ".onlooker"
    out = launcher.run([sys.executable, "-c", "print('hello')"], project=project,
                       store_dir=store, cwd=project, quiet=True)
    assert out.exit_code == 0
    assert out.log_path.read_bytes().strip() == b"hello"
    for folder in (store, store / launcher.LAUNCHER_DIR, store / launcher.LOGS_DIR):
        assert (whose(folder), mode(folder)) == ((UID, GID), 0o700), folder
    for f in (out.log_path, out.record_path):
        assert (whose(f), mode(f)) == ((UID, GID), 0o600), f
    assert json.loads(out.record_path.read_text())["exit_code"] == 0
    assert sorted(p.name for p in out.record_path.parent.iterdir()) == [out.record_path.name]


@root_only
def test_onlooker_run_as_root_follows_no_link_and_fixes_an_old_store(project, tmp_path):
    store = project / ".onlooker"
    (store / launcher.LAUNCHER_DIR).mkdir(parents=True, mode=0o755)  # an older version's
    elsewhere = tmp_path / "etc"
    elsewhere.mkdir()
    (store / launcher.LOGS_DIR).symlink_to(elsewhere)
    with pytest.raises(launcher.LaunchError, match="symbolic link"):
        launcher.run([sys.executable, "-c", "pass"], project=project, store_dir=store,
                     cwd=project, quiet=True)
    assert list(elsewhere.iterdir()) == [] and whose(elsewhere) == (0, 0)
    (store / launcher.LOGS_DIR).unlink()
    out = launcher.run([sys.executable, "-c", "pass"], project=project, store_dir=store,
                       cwd=project, quiet=True)
    assert out.exit_code == 0
    assert (whose(store / launcher.LAUNCHER_DIR), mode(store / launcher.LAUNCHER_DIR)) == (
        (UID, GID), 0o700)


def _garbage(cat: Catalog) -> None:
    """One loose object and one packed one that no run names, old enough for gc."""
    cat.objects.put_bytes(os.urandom(300_000))
    with cat.objects.batch():
        for i in range(40):
            cat.objects.put_bytes(f"small {i}".encode())
    then = time.time() - 7200
    for folder, _, names in os.walk(cat.objects.root):
        for name in names:
            os.utime(os.path.join(folder, name), (then, then))


@root_only
def test_a_root_gc_leaves_its_lock_and_trash_to_the_owner(project, monkeypatch):
    trashes: list[Path] = []
    real_rmtree = shutil.rmtree

    def keep_trash(path, *a, **kw):  # looked at before it goes
        if Path(path).name.startswith("gc-"):
            trashes.append(Path(path))
            assert (whose(Path(path)), mode(Path(path))) == ((UID, GID), 0o700)
            for p in Path(path).iterdir():
                assert whose(p) == (UID, GID), p
        real_rmtree(path, *a, **kw)

    monkeypatch.setattr(manage.shutil, "rmtree", keep_trash)
    with Catalog.init(project) as cat:
        _garbage(cat)
        report = manage.gc(cat)
        assert report["freed"]["objects"] == 41
    assert trashes, "gc made no trash folder"
    lock = project / ".onlooker" / manage.GC_LOCK
    assert (whose(lock), mode(lock)) == ((UID, GID), 0o600)
    for p in (project / ".onlooker").rglob("*"):
        assert whose(p) == (UID, GID), p


@root_only
def test_a_root_gc_stops_at_a_link_in_the_owners_store(project, tmp_path):
    elsewhere = tmp_path / "etc"
    elsewhere.mkdir()
    with Catalog.init(project) as cat:
        _garbage(cat)
        shutil.rmtree(cat.objects.tmp, ignore_errors=True)
        cat.objects.tmp.symlink_to(elsewhere)
        before = sorted(cat.objects.entries())
        with pytest.raises(StoreError, match="symbolic link"):
            manage.gc(cat)
        assert sorted(cat.objects.entries()) == before  # stopped before it began
    assert list(elsewhere.iterdir()) == []


# ---- restore -----------------------------------------------------------------------------


def _one_run(cat: Catalog, files: dict[str, bytes]) -> int:
    run = cat.begin_run(command=["python", "x.py"], cwd=str(cat.project), exe=None, pid=1,
                        pid_start=1, user="ana", hostname="box", started_at=T0,
                        tier="netlink")
    for path, data in files.items():
        vid = cat.add_version(path, hash=cat.objects.put_bytes(data), size=len(data),
                              mtime_ns=1, kind="other", stored=True, created_at=T0)
        cat.link(run, vid, "output")
    cat.update_run(run, status="completed", exit_code=0, ended_at=T0 + 1)
    return run


@root_only
def test_root_restores_new_files_and_folders_as_the_owners(project):
    with Catalog.init(project) as cat:
        run = _one_run(cat, {"models/deep/model.bin": b"weights", "top.txt": b"top",
                             "big.bin": os.urandom(5 << 20)})
        report = cat.restore(run)
    assert report["ok"], report
    for p in ("models", "models/deep"):
        assert whose(project / p) == (UID, GID), p
        assert mode(project / p) & 0o700 == 0o700
    for p in ("models/deep/model.bin", "top.txt", "big.bin"):
        assert whose(project / p) == (UID, GID), p
    assert (project / "models/deep/model.bin").read_bytes() == b"weights"


@root_only
def test_a_replaced_file_keeps_its_owner_and_a_root_folder_keeps_roots(project):
    with Catalog.init(project) as cat:
        run = _one_run(cat, {"mine.txt": b"v1", "rootdir/made.txt": b"x",
                             "roots.txt": b"r1"})
        (project / "mine.txt").write_bytes(b"v1")
        os.chown(project / "mine.txt", UID, GID)
        (project / "mine.txt").write_bytes(b"v1 changed")  # not recorded: --force
        (project / "roots.txt").write_bytes(b"r1 changed")  # root's, stays root's
        (project / "rootdir").mkdir()  # root's folder in the owner's tree
        assert cat.restore(run, force=True)["ok"]
    assert whose(project / "mine.txt") == (UID, GID)
    assert (project / "mine.txt").read_bytes() == b"v1"
    assert whose(project / "roots.txt") == (0, 0)
    assert whose(project / "rootdir" / "made.txt") == (0, 0)


@root_only
def test_root_follows_no_link_in_another_users_tree(project, tmp_path):
    elsewhere = tmp_path / "etc"
    elsewhere.mkdir()
    with Catalog.init(project) as cat:
        run = _one_run(cat, {"out/cron.txt": b"* * * * * evil\n", "fine.txt": b"ok"})
        (project / "out").symlink_to(elsewhere)
        report = cat.restore(run)
    byname = {f["path"]: f for f in report["files"]}
    assert byname["out/cron.txt"]["status"] == "refused"
    assert "symbolic link" in byname["out/cron.txt"]["reason"]
    assert byname["fine.txt"]["status"] == "restored"
    assert list(elsewhere.iterdir()) == []


@root_only
def test_root_reads_nothing_through_a_link_in_another_users_tree(project, tmp_path):
    elsewhere = tmp_path / "etc"
    elsewhere.mkdir()
    (elsewhere / "same.txt").write_bytes(b"recorded")  # what the run wrote, by chance
    (elsewhere / "shadow").write_bytes(b"root:secret\n")
    (elsewhere / "shadow").chmod(0o600)
    with Catalog.init(project) as cat:
        run = _one_run(cat, {"out/same.txt": b"recorded", "out/shadow": b"x"})
        (project / "out").symlink_to(elsewhere)
        for dry_run in (True, False):
            report = cat.restore(run, dry_run=dry_run)
            for f in report["files"]:
                # not "unchanged", nor "content never recorded" with the hash of a
                # file of root's: what is behind the link is never read
                assert f["status"] == "refused", f
                assert f["reason"].startswith(f"{project / 'out'} is a symbolic link"), f
                assert "current_hash" not in f
    assert (elsewhere / "shadow").read_bytes() == b"root:secret\n"


@pytest.fixture
def home(tmp_path):
    """A user's folder outside the project, in folders of root's (tmp_path's)."""
    p = tmp_path / "home" / "ana"
    p.mkdir(parents=True)
    os.chown(p, UID, GID)
    return p


@root_only
def test_root_follows_no_link_in_a_users_folder_outside_the_project(project, home,
                                                                   tmp_path):
    roots = tmp_path / "etc"
    roots.mkdir()
    data = home / "data"
    data.mkdir()
    os.chown(data, UID, GID)
    with Catalog.init(project) as cat:
        run = _one_run(cat, {f"{data}/cron.txt": b"* * * * * evil\n",
                             f"{home}/fine.txt": b"ok"})
        data.rmdir()
        data.symlink_to(roots)  # what ana can do in her folder
        os.lchown(data, UID, GID)
        (roots / "cron.txt").write_bytes(b"* * * * * evil\n")  # as if restored already
        dry = cat.restore(run, dry_run=True)
        report = cat.restore(run)
    for got in (dry, report):
        byname = {f["path"]: f for f in got["files"]}
        assert byname[f"{data}/cron.txt"]["status"] == "refused"
        assert byname[f"{data}/cron.txt"]["reason"].startswith(
            f"{data} is a symbolic link, which a restore by root")
    assert [p.name for p in roots.iterdir()] == ["cron.txt"]
    assert byname[f"{home}/fine.txt"]["status"] == "restored"
    assert whose(home / "fine.txt") == (UID, GID)


@root_only
def test_root_restores_outside_the_project_as_the_folders_owner(project, home, tmp_path):
    os.chmod(home, 0o2775)  # a setgid folder's group is handed down
    os.chown(home, UID, 4242)
    with Catalog.init(project) as cat:
        run = _one_run(cat, {f"{home}/new/deep/x.csv": b"a,b\n",
                             f"{tmp_path}/made/r.txt": b"r"})
        assert cat.restore(run)["ok"]
    assert (home / "new/deep/x.csv").read_bytes() == b"a,b\n"
    for p in ("new", "new/deep", "new/deep/x.csv"):
        assert whose(home / p) == (UID, 4242), p
    # in root's folders, what root makes stays root's
    assert whose(tmp_path / "made") == whose(tmp_path / "made/r.txt") == (0, 0)


@root_only
def test_root_follows_roots_own_links_outside_the_project(project, tmp_path):
    srv = tmp_path / "srv"
    (srv / "ana").mkdir(parents=True)
    os.chown(srv / "ana", UID, GID)
    (tmp_path / "run").symlink_to("srv")  # root's, relative: like /var/run -> /run
    (tmp_path / "abs").symlink_to(srv / "ana")  # root's, absolute, into ana's folder
    (tmp_path / "theirs").symlink_to(srv)  # a user's link in root's folder (/tmp)
    os.lchown(tmp_path / "theirs", UID, GID)
    with Catalog.init(project) as cat:
        run = _one_run(cat, {f"{tmp_path}/run/ana/m/out.bin": b"m",
                             f"{tmp_path}/abs/n.txt": b"n",
                             f"{tmp_path}/theirs/ana/t.txt": b"t"})
        report = cat.restore(run)
    byname = {f["path"]: f for f in report["files"]}
    assert byname[f"{tmp_path}/run/ana/m/out.bin"]["status"] == "restored"
    assert (srv / "ana/m/out.bin").read_bytes() == b"m"
    assert whose(srv / "ana/m") == whose(srv / "ana/m/out.bin") == (UID, GID)
    assert byname[f"{tmp_path}/abs/n.txt"]["status"] == "restored"
    assert whose(srv / "ana/n.txt") == (UID, GID)
    assert byname[f"{tmp_path}/theirs/ana/t.txt"]["status"] == "refused"
    assert byname[f"{tmp_path}/theirs/ana/t.txt"]["reason"].startswith(
        f"{tmp_path}/theirs is a symbolic link")
    assert not (srv / "ana/t.txt").exists()


@root_only
def test_root_replaces_a_link_outside_the_project_never_what_it_points_at(project, home,
                                                                         tmp_path):
    secret = tmp_path / "shadow"
    secret.write_bytes(b"root's")
    link = home / "x.csv"
    with Catalog.init(project) as cat:
        run = _one_run(cat, {str(link): b"a,b\n"})
        link.symlink_to(secret)
        os.lchown(link, UID, GID)
        first = cat.restore(run)
        assert first["files"][0]["status"] == "refused", first
        assert cat.restore(run, force=True)["ok"]
    assert secret.read_bytes() == b"root's" and whose(secret) == (0, 0)
    assert not link.is_symlink() and link.read_bytes() == b"a,b\n"
    assert whose(link) == (UID, GID)


def test_the_owner_still_follows_links_in_their_own_tree(tmp_path):
    big = tmp_path / "big"
    big.mkdir()
    project = tmp_path / "proj"
    project.mkdir()
    with Catalog.init(project) as cat:
        run = _one_run(cat, {"data/rows.csv": b"a,b\n"})
        (project / "data").symlink_to(big)  # data on another disk
        assert cat.restore(run)["ok"]
    assert (big / "rows.csv").read_bytes() == b"a,b\n"


@root_only
def test_restore_to_a_folder_is_that_folders_owners(project, tmp_path):
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, UID, GID)
    roots = tmp_path / "roots"
    roots.mkdir()
    with Catalog.init(project) as cat:
        run = _one_run(cat, {"models/m.bin": b"m"})
        assert cat.restore(run, to=theirs / "new" / "copy")["ok"]
        assert cat.restore(run, to=roots)["ok"]
    for p in ("new", "new/copy", "new/copy/models", "new/copy/models/m.bin"):
        assert whose(theirs / p) == (UID, GID), p
    assert whose(roots / "models") == whose(roots / "models/m.bin") == (0, 0)


@root_only
def test_roots_export_into_a_users_folder_is_that_users(project, tmp_path):
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, UID, GID)
    roots = tmp_path / "roots"
    roots.mkdir()
    with Catalog.init(project) as cat:
        run = _one_run(cat, {"models/m.bin": b"m"})
        cat.export([run], theirs / "runs.tar")
        cat.export([run], roots / "runs.tar")
    assert whose(theirs / "runs.tar") == (UID, GID)
    assert whose(roots / "runs.tar") == (0, 0)
    assert sorted(p.name for p in theirs.iterdir()) == ["runs.tar"]  # no temp file left


# ---- the kernel side ---------------------------------------------------------------------


def test_a_kernel_file_the_owner_may_not_read_is_not_read(reader_reset, monkeypatch):
    asked: list[str] = []

    def urlopen(req, timeout):
        asked.append(req.full_url)
        raise OSError("no server here")

    monkeypatch.setattr(kernel.urllib.request, "urlopen", urlopen)
    base = Path(tempfile.mkdtemp(prefix="onlooker-kernel-"))
    try:
        base.chmod(0o755)
        shared, secret = base / "kernel-1.json", base / "kernel-2.json"
        for f, bits in ((shared, 0o644), (secret, 0o600)):
            f.write_text('{"jupyter_session": "/p/a.ipynb", "key": "k"}')
            f.chmod(bits)
        (base / "jpserver-1.json").write_text('{"url": "http://127.0.0.1:9/", "token": "t"}')
        (base / "jpserver-1.json").chmod(0o600)
        private.read_for(Owner(UID, GID) if os.geteuid() == 0 else Owner(os.geteuid() + 1, 0))
        assert kernel._read_head(str(shared), 65536) is not None
        assert kernel._read_head(str(secret), 65536) is None
        assert kernel.server_sessions(str(base)) == [] and asked == []  # token never taken
        private.read_for(None)
        assert kernel.server_sessions(str(base)) == [] and len(asked) == 1
    finally:
        shutil.rmtree(base, ignore_errors=True)
