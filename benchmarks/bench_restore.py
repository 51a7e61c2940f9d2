"""Benchmark: `Catalog.restore` (read from the store, BLAKE3-verify, temp file + rename)
against a bare copy of the same files (shutil.copyfile), on one large model and on
many small files. Prints seconds, MB/s and restore's throughput as a fraction of the
bare copy's (the target is at least 0.7)."""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from onlooker.store.catalog import Catalog
from onlooker.store.hashing import hash_file


def record(project: Path, files: list[Path]) -> tuple[Catalog, int]:
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
    return cat, run


def bare_copy(project: Path, files: list[Path], dest: Path) -> None:
    for p in files:
        target = dest / p.relative_to(project)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, target)


def case(name: str, root: Path, make, repeat: int) -> None:
    project = root / name / "proj"
    project.mkdir(parents=True)
    files = make(project)
    total = sum(p.stat().st_size for p in files)
    cat, run = record(project, files)
    bare = ours = float("inf")
    for i in range(repeat):  # interleaved, best of each: a shared machine is noisy
        os.sync()
        t = time.perf_counter()
        bare_copy(project, files, root / name / f"bare{i}")
        bare = min(bare, time.perf_counter() - t)
        os.sync()
        t = time.perf_counter()
        report = cat.restore(run, to=root / name / f"restored{i}")
        ours = min(ours, time.perf_counter() - t)
        assert report["ok"] and report["counts"]["restored"] == len(files), report["counts"]
        shutil.rmtree(root / name / f"bare{i}")
        shutil.rmtree(root / name / f"restored{i}")
    cat.close()
    mb = total / 1e6
    print(f"{name}: {len(files)} files, {mb:.0f} MB; bare copy {bare:.2f} s "
          f"({mb / bare:.0f} MB/s), restore {ours:.2f} s ({mb / ours:.0f} MB/s); "
          f"restore/bare throughput {bare / ours:.2f}")
    shutil.rmtree(root / name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model-mb", type=int, default=1024)
    ap.add_argument("--small", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=3, help="best of this many (default 3)")
    ap.add_argument("--dir", default=None, help="where to work (default: a temp folder)")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-restore-", dir=args.dir))
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

        case(f"model {args.model_mb} MiB", root, model, args.repeat)
        case(f"{args.small} small files", root, small, args.repeat)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
