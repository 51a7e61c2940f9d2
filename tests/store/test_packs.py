"""The packs' index: every packed object found, across many packs, in one process that
wrote them and in another that loads them all at once."""

from __future__ import annotations

import random

from onlooker.store.packs import _MERGE_AT, PackSet, PackWriter


def test_every_object_is_found_across_packs_merges_and_shared_key_prefixes(tmp_path):
    objects = tmp_path / "objects"
    packs = PackSet(objects)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    rnd = random.Random(5)
    # The index keys an object by its digest's first 8 bytes: some digests here share
    # them, in one pack and across packs (a writer takes any name it is given).
    shared = "ab" * 8
    want: dict[str, bytes] = {}
    n_packs, per_pack = 45, 400
    assert n_packs * per_pack > _MERGE_AT  # the newest keys are merged in at least once
    for p in range(n_packs):
        writer = PackWriter(packs, tmp)
        items = []
        for i in range(per_pack):
            head = shared if i % 97 == 0 else f"{rnd.getrandbits(64):016x}"
            h = head + f"{rnd.getrandbits(192):048x}"
            items.append((h, f"{p}-{i}".encode()))
            want[h] = f"{p}-{i}".encode()
        writer.add_many(items)
        writer.finish()
    assert sum(h.startswith(shared) for h in want) == 5 * n_packs
    assert all(packs.read(h) == data for h, data in want.items())
    assert packs.lookup_many(list(want)) == [packs.lookup(h) for h in want]
    assert packs.lookup(shared + "0" * 48) is None
    assert packs.lookup_many([shared + "0" * 48, "00" * 32]) == [None, None]

    # another process: every index loaded in one go
    other = PackSet(objects)
    assert all(other.read(h) == data for h, data in want.items())
    # an object dropped from its index (doctor's removal) is gone; the others stay
    victim = next(h for h in want if h.startswith(shared))
    assert other.remove(victim) and other.lookup(victim) is None
    assert all(other.read(h) == data for h, data in want.items() if h != victim)
