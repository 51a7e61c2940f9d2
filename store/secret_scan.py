"""Does a stored file's text hold a credential? For what leaves the project (an export):
the object store keeps verbatim copies (restore is byte for byte), but a copy that goes
to someone else must not carry the API key a config file or a log line held.

The rules are the agent's (onlooker.agent.rules.secrets.credential_in): a ``name:
value`` / ``"name": "value"`` / ``NAME=value`` whose name is secret (``api_key``,
``password``, ``HF_TOKEN``...), a ``--password VALUE`` option, a URL with a password,
a bearer token, and the known formats (``sk-...``, ``hf_...``, ``AKIA...``, a PEM
private key). A lone random-looking word is not enough in a file, as it is in argv:
hashes, ids and base64 blobs fill files. Binary files (a NUL in their first 8 KiB) are
not looked into: models and arrays hold no text to redact.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache

# Before the text is looked at, one pass over the bytes for words every credential the
# rules know comes with (a secret name, `://`, a bearer, a known format's prefix): most
# files hold none, and 20,000 small ones must cost little each. One Aho-Corasick pass
# (ahocorasick_rs, Rust) finds any of them in about 0.25 ms a MiB: leftmost-first
# matching lets it use its SIMD prefilter (the standard kind, 2-8 ms). A substring
# search per word was 0.7 ms each, 20 ms a MiB for the 28, and Python's re tries every
# branch of an alternation at every byte (40-60 ms).
_WORDS = (b"pass", b"secret", b"token", b"key", b"auth", b"bearer", b"basic", b"cred",
          b"cookie", b"pwd", b"netrc", b"://", b"sk-", b"ghp_", b"gho_", b"ghu_", b"ghs_",
          b"ghr_", b"github_pat_", b"hf_", b"akia", b"asia", b"xox", b"glpat-", b"aiza",
          b"npm_", b"eyj", b"private")
SCAN_MAX = 64 * 1024 * 1024  # larger files are data, not configs or logs


@cache
def _matcher():
    import ahocorasick_rs

    return ahocorasick_rs.BytesAhoCorasick(list(_WORDS),
                                           matchkind=ahocorasick_rs.MATCHKIND_LEFTMOST_FIRST)


def _triggered(data: bytes) -> bool:
    return bool(_matcher().find_matches_as_indexes(data.lower()))


def secret_in(data: bytes) -> str | None:
    """Why `data` is not to leave the project (`a credential under api_key`, `a
    password in a URL`...), or None when it holds none (or is binary, or too big)."""
    if len(data) > SCAN_MAX or b"\0" in data[:8192] or not _triggered(data):
        return None
    from onlooker.agent.rules.secrets import credential_in

    return credential_in(data.decode("utf-8", errors="replace"))


_BATCH_BYTES = 1 << 20


def secrets_among(items: Iterable[tuple[str, bytes]]) -> dict[str, str]:
    """{name: why} for the items (name, data) whose data holds a credential. Small items
    are looked at a batch at a time: one pass over a megabyte of them, and only a batch
    that trips the first filter is looked into item by item."""
    found: dict[str, str] = {}
    batch: list[tuple[str, bytes]] = []
    size = 0

    def flush() -> None:
        texts = [(n, d) for n, d in batch if b"\0" not in d[:8192]]
        if texts and _triggered(b"\n".join(d for _, d in texts)):
            for name, data in texts:
                why = secret_in(data)
                if why:
                    found[name] = why
        batch.clear()

    for name, data in items:
        if len(data) >= _BATCH_BYTES:
            why = secret_in(data)
            if why:
                found[name] = why
            continue
        batch.append((name, data))
        size += len(data)
        if size >= _BATCH_BYTES:
            flush()
            size = 0
    flush()
    return found
