"""Benchmark: hash_file (with storing) against a bare stat+read+blake3 loop."""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import blake3

from onlooker.store.objects import ObjectStore, hash_file


def make_small(root: Path, n: int, size: int) -> list[str]:
    paths = []
    for i in range(n):
        d = root / f"d{i // 1000:03d}"
        d.mkdir(parents=True, exist_ok=True)
        p = d / f"f{i:06d}.bin"
        p.write_bytes(os.urandom(size))
        paths.append(str(p))
    return paths


def bare_loop(paths: list[str]) -> None:
    for p in paths:
        os.stat(p)
        with open(p, "rb") as f:
            blake3.blake3(f.read()).hexdigest()


def ours(paths: list[str], objects: Path) -> None:
    store = ObjectStore(objects)
    with store.batch():
        for p in paths:
            hash_file(p, store=store, copy=True, copy_max_bytes=1 << 30)
    store.close()


def timed(fn: Callable[..., object], *args: object) -> float:
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--files", type=int, default=20_000)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--big-mib", type=int, default=1024)
    ap.add_argument("--dir", default=None, help="where to build the files (default: a temp dir)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bench_hash_", dir=args.dir))
    try:
        paths = make_small(base / "files", args.files, args.size)
        os.sync()  # else the first fsync pays for writing back the test files themselves
        bare_loop(paths)  # warm the page cache
        best_bare = best_ours = float("inf")
        for i in range(args.repeat):
            best_bare = min(best_bare, timed(bare_loop, paths))
            objects = base / f"objects{i}"  # a fresh store: every file is really stored
            best_ours = min(best_ours, timed(ours, paths, objects))
        n = len(paths)
        print(f"small files: {n} x {args.size} B (best of {args.repeat})")
        print(f"  bare stat+read+blake3      {n / best_bare:10.0f} files/s")
        print(f"  hash_file copy=True batch  {n / best_ours:10.0f} files/s")
        print(f"  ratio                      {best_bare / best_ours:10.2f}")
        if args.big_mib:
            big = base / "big.bin"
            with open(big, "wb") as f:  # random blocks: no sparse holes, no compression
                block = 8 << 20
                for _ in range(max(1, args.big_mib * (1 << 20) // block)):
                    f.write(os.urandom(block))
            size = big.stat().st_size

            def bare_big() -> None:
                h = blake3.blake3(max_threads=blake3.blake3.AUTO)
                h.update_mmap(str(big))
                h.hexdigest()

            bare_big()
            tb = min(timed(bare_big) for _ in range(args.repeat))
            to = min(timed(hash_file, big) for _ in range(args.repeat))
            gib = size / (1 << 30)
            print(f"large file: {gib:.2f} GiB")
            print(f"  bare update_mmap AUTO      {gib / tb:10.2f} GiB/s")
            print(f"  hash_file copy=False       {gib / to:10.2f} GiB/s")
            print(f"  ratio                      {tb / to:10.2f}")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
