"""Benchmark: `onlooker export` and `onlooker import` (the real CLI, in a subprocess)
against a bare copy of the same bytes, on one large model and on many small files.

Baselines, measured in the same run, interleaved, best of --repeat:
- export: `tar cf` of the project's original files (the same bytes the store holds
  for them) into one archive;
- import: `tar xf` of that archive into a fresh folder.
tar is what a user would otherwise use to move these bytes, and it does no hashing,
no verifying and no catalog work, so it is the floor. onlooker syncs what it writes
(export fsyncs the archive, import syncs the store once), so each baseline is timed
with an os.sync() after it; the fraction against tar without the sync is printed
too. Fractions are baseline time / onlooker time: 1.0 = as fast as the bare copy.
The target is at least 0.7.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from onlooker.store.catalog import Catalog
from onlooker.store.hashing import hash_file

ONLOOKER = [sys.executable, "-m", "onlooker.cli.main"]


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


def timed(cmd: list[str], cwd: Path | None = None, sync: bool = False) -> float:
    os.sync()  # start each from the same state: nothing dirty from the one before
    t = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL)
    if sync:
        os.sync()
    return time.perf_counter() - t


def case(name: str, root: Path, make, repeat: int) -> None:
    base = root / "case"
    project = base / "proj"
    project.mkdir(parents=True)
    files = make(project)
    total = sum(p.stat().st_size for p in files)
    run = record(project, files)
    rel = [str(p.relative_to(project)) for p in files]
    listing = base / "files.txt"
    listing.write_text("\n".join(rel) + "\n")
    best = {k: float("inf") for k in ("tar_c", "tar_c_nosync", "export", "tar_x",
                                      "tar_x_nosync", "import")}
    for i in range(repeat):  # interleaved, best of each: a shared machine is noisy
        bare = base / f"bare{i}.tar"
        best["tar_c"] = min(best["tar_c"], timed(
            ["tar", "cf", str(bare), "-C", str(project), "-T", str(listing)], sync=True))
        bare.unlink()
        best["tar_c_nosync"] = min(best["tar_c_nosync"], timed(
            ["tar", "cf", str(bare), "-C", str(project), "-T", str(listing)]))
        archive = base / f"runs{i}.tar"
        best["export"] = min(best["export"], timed(
            [*ONLOOKER, "-C", str(project), "export", str(run), "-o", str(archive)]))
        for key, sync in (("tar_x", True), ("tar_x_nosync", False)):
            out = base / f"{key}{i}"
            out.mkdir()
            best[key] = min(best[key], timed(["tar", "xf", str(bare), "-C", str(out)],
                                             sync=sync))
            shutil.rmtree(out)
        target = base / f"dst{i}"
        target.mkdir()
        Catalog.init(target).close()
        best["import"] = min(best["import"], timed(
            [*ONLOOKER, "-C", str(target), "import", str(archive)]))
        dst = Catalog.find(target)
        assert dst._execute("SELECT count(*) FROM io").fetchone()[0] == len(files)
        dst.close()
        shutil.rmtree(target)
        bare.unlink()
        archive.unlink()
    mb = total / 1e6
    print(f"{name}: {len(files)} files, {mb:.0f} MB")
    for op, bare_key in (("export", "tar_c"), ("import", "tar_x")):
        ours, bare, nosync = best[op], best[bare_key], best[bare_key + "_nosync"]
        print(f"  {op}: onlooker {ours:.2f} s ({mb / ours:.0f} MB/s); tar {bare:.2f} s with"
              f" sync, {nosync:.2f} s without; fraction {bare / ours:.2f}"
              f" ({nosync / ours:.2f} against tar without sync)")
    shutil.rmtree(base)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model-mb", type=int, default=1024)
    ap.add_argument("--small", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=3, help="best of this many (default 3)")
    ap.add_argument("--dir", default=None, help="where to work (default: a temp folder)")
    ap.add_argument("--only", choices=("model", "small"), default=None)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-share-", dir=args.dir))
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

        if args.only in (None, "model"):
            case(f"model {args.model_mb} MiB", root, model, args.repeat)
        if args.only in (None, "small"):
            case(f"{args.small} small files", root, small, args.repeat)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
