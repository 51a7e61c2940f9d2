"""Benchmark: `onlooker export` and `onlooker import` against a bare copy of the same
bytes, on one large model and on many small files (binary, and text that export's
credential scan reads).

What is timed, in each repetition, in an order that rotates from one repetition to the
next (so neither side always runs first, on a cache or a disk the other just warmed):

- export: `onlooker export RUN -o FILE` (the real CLI, in a subprocess, so Python's
  start-up and imports count), the store function `export_runs` alone (timed inside a
  child process around the call: what a Python caller pays), and the bare copy: `tar cf`
  of the project's original files (the same bytes the store holds) into one archive;
- import: `onlooker import FILE`, `import_archive` alone, and the bare copy: `tar xf` of
  that tar into a fresh folder.

onlooker makes what it writes durable before it answers (export fsyncs its archive,
import fsyncs its pack and its large objects), so the bare copy is timed making its
output durable the same way: `tar cf` then an fsync of the archive; `tar xf` then an
fsync of each file it wrote (a syncfs of the filesystem where it wrote more than 64).
The bare copy with no sync at all (tar leaving its bytes in the page cache) is timed
too, and its fraction printed beside. Every timing starts with nothing dirty
(os.sync() first), and the archives both sides read were just written (warm cache).

A fraction is bare time / onlooker time of one repetition (1.0 = as fast as the bare
copy); printed: the median over the repetitions, and the lowest and highest. The
target is at least 0.7. On a shared machine the disk's speed swings (writing 1 GiB
took 0.6-3 s here): look at the medians, and run it more than once.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from onlooker.store.catalog import Catalog
from onlooker.store.hashing import hash_file

ONLOOKER = [sys.executable, "-m", "onlooker.cli.main"]
# the store function alone, timed around the call inside a child process
FUNCTION = """
import json, sys, time
from onlooker.store.catalog import Catalog
cat = Catalog.find(sys.argv[2], readonly=sys.argv[1] == "export")
t = time.perf_counter()
if sys.argv[1] == "export":
    cat.export([int(sys.argv[4])], sys.argv[3])
else:
    cat.import_archive(sys.argv[3])
print(json.dumps(time.perf_counter() - t))
"""


def record(project: Path, files: list[Path]) -> int:
    """One finished run whose outputs are `files`, every byte in the object store
    (the copy limit raised for the model, as `store.object_max_bytes` would)."""
    cat = Catalog.init(project)
    run = cat.begin_run(command=["python", "train.py"], cwd=str(project), exe=None, pid=1,
                        pid_start=1, user="bench", hostname="box", started_at=time.time(),
                        tier="netlink")
    results = []
    with cat.objects.batch():  # as the agent stores a scan: small files packed
        for p in files:
            results.append((p, hash_file(p, store=cat.objects, copy=True,
                                         copy_max_bytes=4 << 30)))
    with cat.transaction():
        for p, r in results:
            vid = cat.add_version(str(p), hash=r.hash, size=r.size, mtime_ns=r.mtime_ns,
                                  kind="other", stored=r.stored, created_at=time.time())
            cat.link(run, vid, "output")
    cat.update_run(run, status="completed", exit_code=0, ended_at=time.time())
    cat.close()
    return run


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def durable(out: Path, names: list[str]) -> None:
    """Make what tar extracted under `out` durable, as onlooker makes its own files."""
    if len(names) > 64:
        os.sync()  # what one would do for 20,000 files: one sync, not 20,000 fsyncs
        return
    folders = set()
    for name in names:
        fsync_path(out / name)
        folders.add((out / name).parent)
    for folder in sorted(folders):
        fsync_path(folder)


def timed(step: Callable[[], float | None]) -> float:
    """Seconds `step` took; a step that returns a number times itself (the function
    figures: the call alone, without the child's start-up)."""
    os.sync()  # start each from the same state: nothing dirty from the one before
    t = time.perf_counter()
    got = step()
    return got if got is not None else time.perf_counter() - t


def run(cmd: list[str], cwd: Path | None = None) -> None:
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL)


def function(*args: str) -> float:
    out = subprocess.run([sys.executable, "-c", FUNCTION, *args], check=True,
                         capture_output=True, text=True).stdout
    return float(json.loads(out.strip().splitlines()[-1]))


def fresh_project(path: Path) -> Path:
    path.mkdir()
    Catalog.init(path).close()
    return path


def check_imported(target: Path, n: int) -> None:
    dst = Catalog.find(target)
    try:
        assert dst._execute("SELECT count(*) FROM io").fetchone()[0] == n
    finally:
        dst.close()


def case(name: str, root: Path, make: Callable[[Path], list[Path]], repeat: int) -> dict:
    base = root / "case"
    project = base / "proj"
    project.mkdir(parents=True)
    files = make(project)
    total = sum(p.stat().st_size for p in files)
    run_id = record(project, files)
    rel = [str(p.relative_to(project)) for p in files]
    listing = base / "files.txt"
    listing.write_text("\n".join(rel) + "\n")
    bare, archive = base / "bare.tar", base / "runs.tar"
    times: dict[str, list[float]] = {k: [] for k in (
        "tar_c", "tar_c_nosync", "export", "export_fn",
        "tar_x", "tar_x_nosync", "import", "import_fn")}
    tar_c = ["tar", "cf", str(bare), "-C", str(project), "-T", str(listing)]

    def export_steps() -> dict[str, Callable[[], float | None]]:
        def tar_c_durable() -> None:
            run(tar_c)
            fsync_path(bare)

        return {
            "tar_c": tar_c_durable,
            "tar_c_nosync": lambda: run(tar_c),
            "export": lambda: run([*ONLOOKER, "-C", str(project), "export", str(run_id),
                                   "-o", str(archive)]),
            "export_fn": lambda: function("export", str(project), str(archive), str(run_id)),
        }

    def import_step(key: str, out: Path) -> Callable[[], float | None]:
        """The step `key`, writing into the folder `out` (made here, not timed)."""
        if key.startswith("import"):
            target = fresh_project(out)
            if key == "import_fn":
                return lambda: function("import", str(target), str(archive))
            return lambda: run([*ONLOOKER, "-C", str(target), "import", str(archive)])

        def step() -> None:
            out.mkdir()
            run(["tar", "xf", str(bare), "-C", str(out)])
            if key == "tar_x":
                durable(out, rel)
        return step

    for i in range(repeat):
        # export: each step leaves its archive; keep the ones import reads next
        steps = export_steps()
        keys = list(steps)
        for key in keys[i % len(keys):] + keys[:i % len(keys)]:
            for leftover in (bare, archive):
                if key.startswith("tar") == (leftover == bare):
                    leftover.unlink(missing_ok=True)
            times[key].append(timed(steps[key]))
        keys = ["import", "tar_x", "import_fn", "tar_x_nosync"]
        for key in keys[i % len(keys):] + keys[:i % len(keys)]:
            out = base / "out"
            times[key].append(timed(import_step(key, out)))
            if key.startswith("import"):
                check_imported(out, len(files))
            shutil.rmtree(out)
    mb = total / 1e6
    print(f"{name}: {len(files)} files, {mb:.0f} MB, {repeat} repetitions")
    result = {"case": name, "files": len(files), "mb": mb, "times": times}
    for op, bare_key in (("export", "tar_c"), ("import", "tar_x")):
        for ours, label in ((op, "CLI"), (op + "_fn", "function")):
            fractions = [b / o for b, o in zip(times[bare_key], times[ours], strict=True)]
            nosync = [b / o for b, o in zip(times[bare_key + "_nosync"], times[ours],
                                            strict=True)]
            med = statistics.median(times[ours])
            print(f"  {op} ({label}): onlooker {med:.2f} s ({mb / med:.0f} MB/s), tar"
                  f" {statistics.median(times[bare_key]):.2f} s durable,"
                  f" {statistics.median(times[bare_key + '_nosync']):.2f} s not;"
                  f" fraction {statistics.median(fractions):.2f}"
                  f" ({min(fractions):.2f}-{max(fractions):.2f}),"
                  f" against tar not syncing {statistics.median(nosync):.2f}"
                  f" ({min(nosync):.2f}-{max(nosync):.2f})")
            result[f"{ours}_fraction"] = statistics.median(fractions)
    shutil.rmtree(base)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-mb", type=int, default=1024)
    ap.add_argument("--small", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=5,
                    help="repetitions, each timing every step once (default 5)")
    ap.add_argument("--dir", default=None, help="where to work (default: a temp folder)")
    ap.add_argument("--only", choices=("model", "small", "text"), default=None,
                    help="one case: the model, the small binary files, or small text"
                         " files (CSV rows, every one read by export's credential scan)")
    ap.add_argument("--json", default=None, help="also write every timing to this file")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-share-", dir=args.dir))
    results = []
    try:
        def model(project: Path) -> list[Path]:
            p = project / "models" / "model.bin"
            p.parent.mkdir()
            with open(p, "wb") as f:
                for _ in range(args.model_mb):
                    f.write(os.urandom(1 << 20))
            return [p]

        def small(project: Path) -> list[Path]:
            out = []
            for i in range(args.small):
                d = project / "data" / f"d{i // 1000:03d}"
                d.mkdir(parents=True, exist_ok=True)
                p = d / f"f{i:06d}.csv"
                p.write_bytes(os.urandom(512 + (i * 37) % 3584))
                out.append(p)
            return out

        def text(project: Path) -> list[Path]:
            out = []
            for i in range(args.small):
                d = project / "data" / f"d{i // 1000:03d}"
                d.mkdir(parents=True, exist_ok=True)
                p = d / f"f{i:06d}.csv"
                size = 512 + (i * 37) % 3584  # the sizes of `small`, as text
                rows = os.urandom(size // 2).hex()
                p.write_text("\n".join(rows[j:j + 63] + "," for j in range(0, len(rows), 64)))
                out.append(p)
            return out

        if args.only in (None, "model"):
            results.append(case(f"model {args.model_mb} MiB", root, model, args.repeat))
        if args.only in (None, "small"):
            results.append(case(f"{args.small} small files", root, small, args.repeat))
        if args.only in (None, "text"):
            results.append(case(f"{args.small} small text files", root, text, args.repeat))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
