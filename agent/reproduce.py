"""Reproduce a recorded run: re-run its command, under capture, on the exact versions it
read, and say whether it gave the same results (store/reproduce.py compares).

The steps, each of which can refuse in one sentence before anything runs:

1. A scratch folder (a fresh temporary one, or `into`, which must be empty and outside
   the project) gets the run's code, configs and inputs, restored from the object store
   and verified by hash. A version that was only referenced (too large to copy) is taken
   from the project when the file there still has its hash; otherwise the reproduction
   is refused: it would run on other data. An input outside the project is read where it
   is, and must still have its hash too. The folders the run wrote into are made.
2. The scratch folder is instrumented with the project's own config and watched by an
   agent of its own; the command runs there through the launcher (so its exit status is
   exact) with the same argv (absolute paths into the project moved to the scratch
   folder, except to what was not restored: a virtualenv's interpreter stays where it
   is), in the same project-relative cwd, with our environment and the run's recorded
   `env:NAME` params set again (a listed variable the run did not have is unset).
   Secrets were never recorded, so they come from the environment as it is now.
3. Once that agent has caught up and stopped, the reproduction's run is imported into
   the project's catalog (store/share.py), noted as the reproduction of the original,
   and the two are compared. The scratch folder is removed unless kept.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from onlooker.agent import config as config_mod
from onlooker.agent import launcher, lifecycle
from onlooker.store.errors import HashError
from onlooker.store.hashing import hash_file
from onlooker.store.reproduce import DEFAULT_RTOL, ReproduceError, compare_runs

if TYPE_CHECKING:
    from onlooker.store.catalog import Catalog

SETTLE_TIMEOUT = 300.0  # the scratch agent's catch-up after the command (hashing, parsing)
_LOG_TAIL = 20
Say = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def _refuse(run_id: int, why: str) -> ReproduceError:
    return ReproduceError(f"cannot reproduce run {run_id}: {why}")


def _root_of(catalog: Catalog, run: dict[str, Any]) -> str:
    """The project folder the run's absolute paths are under (the exporter's, when
    imported)."""
    origin = run.get("origin") or {}
    return os.path.abspath(origin.get("project") or str(catalog.project))


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def scratch_folder(catalog: Catalog, into: str | os.PathLike[str] | None) -> tuple[Path, bool]:
    """(the folder to reproduce in, whether we made it)."""
    if into is None:
        return Path(tempfile.mkdtemp(prefix="onlooker-reproduce-")), True
    folder = Path(os.path.abspath(into))
    if _inside(str(folder), str(catalog.project)):
        raise ReproduceError(f"cannot reproduce in {folder}: it is inside the project, whose"
                             " agent would take the reproduction for a run of its own")
    if folder.exists():
        if not folder.is_dir():
            raise ReproduceError(f"cannot reproduce in {folder}: it is not a folder")
        if any(folder.iterdir()):
            raise ReproduceError(f"cannot reproduce in {folder}: it is not empty")
        return folder, False
    try:
        folder.mkdir(parents=True)
    except OSError as err:
        raise ReproduceError(f"cannot make {folder}: {err.strerror or err}") from err
    return folder, True


def _current_hash(path: str) -> str | None:
    try:
        return hash_file(path).hash
    except (HashError, OSError):
        return None


def _materialise(catalog: Catalog, run_id: int, run: dict[str, Any], scratch: Path,
                 say: Say) -> list[dict[str, Any]]:
    """Put the run's inputs and code into `scratch`, each verified; refuses (raises)
    before writing anything when one cannot be had. Returns what came from where."""
    from onlooker.store.restore import restore

    wanted: dict[str, dict[str, Any]] = {}
    for role in ("code", "inputs"):  # a path in both: the input's entry (same version)
        for entry in run[role]:
            wanted[entry["path"]] = entry
    outside = {p: e for p, e in wanted.items() if os.path.isabs(p)}
    inside = sorted(p for p in wanted if p not in outside)
    for path, entry in sorted(outside.items()):
        if entry.get("hash") and _current_hash(path) != entry["hash"]:
            now = "is missing" if not os.path.exists(path) else "has other content now"
            raise _refuse(run_id, f"its input {path} (outside the project) {now}")
    plan = restore(catalog, run_id, paths=inside, roles=("inputs", "code"), to=scratch,
                   dry_run=True) if inside else {"files": []}
    from_project: list[tuple[str, str]] = []
    for f in plan["files"]:
        if f["status"] in ("would_restore", "unchanged"):
            continue
        current = os.path.join(str(catalog.project), f["path"])
        if f["hash"] and _current_hash(current) == f["hash"]:
            from_project.append((f["path"], f["hash"]))
            continue
        if f["status"] == "skipped":
            now = ("is missing" if not os.path.exists(current)
                   else "no longer has that content")
            raise _refuse(run_id, f"{f['path']} was only referenced (too large to copy when"
                          f" recorded) and the file in the project {now}; put that version"
                          " back first")
        raise _refuse(run_id, f"{f['path']} cannot be restored: {f.get('reason', f['status'])}")
    got = [{"path": p, "from": "object store"} for p in inside
           if p not in dict(from_project)]
    if got:
        report = restore(catalog, run_id, paths=[g["path"] for g in got],
                         roles=("inputs", "code"), to=scratch)
        bad = [f for f in report["files"] if f["status"] not in ("restored", "unchanged")]
        if bad:
            raise _refuse(run_id, f"{bad[0]['path']} could not be restored:"
                          f" {bad[0].get('reason', bad[0]['status'])}")
    for path, want in from_project:
        target = scratch / path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(os.path.join(str(catalog.project), path), target)
        if _current_hash(str(target)) != want:  # it changed while we copied
            raise _refuse(run_id, f"{path} changed in the project while it was copied")
        got.append({"path": path, "from": "project"})
    for path in outside:
        got.append({"path": path, "from": "in place"})
    # folders the run wrote into: scripts expect the ones that were there before
    for entry in run["outputs"]:
        if not os.path.isabs(entry["path"]):
            (scratch / entry["path"]).parent.mkdir(parents=True, exist_ok=True)
    say(f"restored {len(got)} file{'s' if len(got) != 1 else ''} into {scratch}")
    return got


def _excluded(rel: str, excludes: Iterable[str]) -> bool:
    return any(part in excludes for part in Path(rel).parts)


def command_for(run: dict[str, Any], root: str, scratch: Path, restored: set[str],
                excludes: Iterable[str]) -> list[str]:
    """The run's argv with paths into the project moved to `scratch`; the program itself
    stays where it is when it was not restored (a virtualenv's python, a binary)."""
    argv = list(run["command"])
    cwd = run["cwd"]
    excludes = set(excludes)

    def moved(path: str) -> str | None:
        rel = os.path.relpath(path, root)
        if rel.startswith("..") or _excluded(rel, excludes):
            return None
        return str(scratch / rel) if rel != "." else str(scratch)

    program = argv[0]
    if "/" in program:
        absolute = os.path.normpath(os.path.join(cwd, program))
        rel = os.path.relpath(absolute, root)
        if _inside(absolute, root) and rel not in restored:
            argv[0] = absolute  # not restored: use it where it is
        elif os.path.isabs(program) and _inside(program, root):
            argv[0] = str(scratch / rel)
    for i in range(1, len(argv)):
        arg = argv[i]
        head, eq, tail = arg.partition("=")
        if os.path.isabs(arg) and _inside(arg, root):
            argv[i] = moved(arg) or arg
        elif eq and os.path.isabs(tail) and _inside(tail, root):
            new = moved(tail)
            argv[i] = f"{head}={new}" if new else arg
    return argv


def environment_for(run: dict[str, Any], names: Iterable[str],
                    base: dict[str, str] | None = None) -> dict[str, str]:
    """Our environment with the run's `env:NAME` params set again; a listed name the
    run did not have is removed (a SEED set in this shell would change the result)."""
    env = dict(os.environ if base is None else base)
    recorded = {k[4:]: v for k, v in run["params"].items() if k.startswith("env:")}
    for pattern in names:
        for name in ([n for n in env if fnmatch.fnmatchcase(n, pattern)]
                     if any(c in pattern for c in "*?[") else [pattern]):
            if name not in recorded:
                env.pop(name, None)
    for name, value in recorded.items():
        if value is None or value == "***":  # redacted: leave ours
            continue
        env[name] = value if isinstance(value, str) else _text(value)
    return env


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def _settle(scratch: Path, since: float, timeout: float) -> None:
    """Wait until the scratch agent says, after `since`, that it has nothing left."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = lifecycle.status(scratch)
        if not st["running"]:
            return
        b, c = st.get("backlog") or {}, st.get("counts") or {}
        if ((st.get("updated_at") or 0) > since and not c.get("runs_open")
                and not b.get("queue") and not b.get("hashing")
                and not b.get("pending_events") and not b.get("scanning")):
            return
        time.sleep(0.1)


def _log_tail(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    return lines[-_LOG_TAIL:]


def _pick(runs: list[dict[str, Any]], argv: list[str]) -> dict[str, Any] | None:
    for r in runs:
        if r["command"] == argv:
            return r
    return min(runs, key=lambda r: r["id"]) if runs else None


def reproduce(catalog: Catalog, run: int | str, *, into: str | os.PathLike[str] | None = None,
              rtol: float = DEFAULT_RTOL, ignore: Iterable[str] = (), keep: bool = False,
              quiet: bool = True, say: Say = _quiet) -> dict[str, Any]:
    """Re-run `run` under capture and compare (see the module's doc). `catalog` must be
    writable: the reproduction is imported into it. Returns store.reproduce.compare_runs's
    report plus `run` (the reproduction's new id), `folder`, `kept`, `files` (what was
    restored from where), `command` and, when its ending differs, `log_tail`. `quiet`:
    the command's output goes to its log only; `say` gets one line per stage."""
    from onlooker.store.catalog import Catalog as _Catalog
    from onlooker.store.share import export_runs, import_archive

    if catalog.readonly:
        raise ReproduceError("the catalog is open read-only: reproduce imports its result")
    run_id = catalog.resolve_run(run)
    original = catalog.run(run_id)
    if original["status"] == "running":
        raise _refuse(run_id, "it is still running; reproduce it once it has ended")
    if not original["command"]:
        raise _refuse(run_id, "it has no recorded command")
    root = _root_of(catalog, original)
    rel_cwd = os.path.relpath(original["cwd"], root)
    if rel_cwd.startswith(".."):
        raise _refuse(run_id, f"it ran in {original['cwd']}, outside the project")
    cfg = config_mod.load(catalog.project)
    scratch, made = scratch_folder(catalog, into)
    remove = made and not keep and into is None
    try:
        files = _materialise(catalog, run_id, original, scratch, say)
        config_mod.instrument(scratch)
        own = catalog.project / config_mod.STORE_DIR / config_mod.CONFIG_NAME
        if own.is_file():
            shutil.copyfile(own, scratch / config_mod.STORE_DIR / config_mod.CONFIG_NAME)
        cwd = scratch / rel_cwd
        cwd.mkdir(parents=True, exist_ok=True)
        excludes = set(cfg["watch"]["exclude"])
        argv = command_for(original, root, scratch,
                           {f["path"] for f in files if f["from"] != "in place"}, excludes)
        env = environment_for(original, cfg["params"]["env"])
        store_dir = lifecycle.store_dir_of(scratch)
        try:
            lifecycle.start(scratch)
        except lifecycle.LifecycleError as err:
            raise _refuse(run_id, f"no agent could watch the scratch folder: {err}") from err
        try:
            say(f"running {' '.join(argv)} in {cwd}")
            try:
                outcome = launcher.run(argv, project=scratch, store_dir=store_dir, cwd=cwd,
                                       env=env, quiet=quiet)
            except launcher.LaunchError as err:
                raise _refuse(run_id, str(err)) from err
            say("waiting for the capture to catch up")
            _settle(scratch, time.time(), SETTLE_TIMEOUT)
        finally:
            try:
                lifecycle.stop(scratch, timeout=SETTLE_TIMEOUT)
            except lifecycle.LifecycleError:
                pass
        tail = _log_tail(outcome.log_path)
        scratch_catalog = _Catalog.find(scratch, readonly=True)
        try:
            made_run = _pick(scratch_catalog.runs(), argv)
            if made_run is None:
                raise _refuse(run_id, "the capture recorded no run of the command (see"
                              f" {store_dir / lifecycle.LOG_NAME})")
            if made_run["status"] == "running":
                raise _refuse(run_id, "the capture did not finish recording the reproduction")
            archive = scratch / config_mod.STORE_DIR / "reproduction.tar"
            export_runs(scratch_catalog, [made_run["id"]], archive)
        finally:
            scratch_catalog.close()
        imported = import_archive(catalog, archive)
        new_id = next(m["id"] for m in imported["mapping"] if m["source_id"] == made_run["id"])
        catalog.set_note(new_id, f"reproduction of run {run_id}")
        report = compare_runs(catalog, run_id, new_id, rtol=rtol, ignore=ignore)
    finally:
        if remove:
            shutil.rmtree(scratch, ignore_errors=True)
    report.update(run=new_id, folder=str(scratch), kept=not remove, files=files,
                  command=argv, cwd=str(cwd))
    if report["ending"]["same"] is False:
        report["log_tail"] = tail
    return report
