"""Redact credentials from argv, environments and params before anything is stored.

Decisions (what counts as a secret):

* By name: a name is split into lowercase words (``_``, ``-``, ``.``, spaces and
  camelCase boundaries) and looks secret when it holds a password word
  (``password``, ``passwd``, ``passphrase``, ``pwd``), ``secret``, ``credential``,
  ``auth``/``authorization``/``oauth``/``bearer``, ``cookie``, a qualified key
  (``api_key``, ``apikey``, ``access_key``, ``private_key``, ``session_key``,
  ``ssh_key``...), or the singular word ``token`` (``HF_TOKEN``, ``access_token``).
  Not secret: plural ``tokens`` (``max_tokens``, ``num_tokens``,
  ``tokens_per_batch``), ``tokenizer``, tokenizer vocabulary names (``pad_token``,
  ``eos_token``...), ``token_id(s)``/``token_len``..., a bare ``key``, and the
  directory variables ``PWD``/``OLDPWD`` (upper case only: ``--pwd`` is a password).
* By value, whatever the name: known credential formats (``sk-``, ``ghp_``/
  ``gho_``/``github_pat_``, ``hf_``, ``AKIA``/``ASIA``, ``xox?-``, ``glpat-``,
  ``AIza``, JWTs, PEM private keys) and long random-looking tokens: at least 32
  characters of ``[A-Za-z0-9+/=_-]`` with upper case, lower case and digits,
  short lowercase runs (not a CamelCase name) and a high character entropy.
  Pure hexadecimal strings (git shas, BLAKE3/MD5/SHA digests, uuids) are never
  secret by value: hex API keys are caught by their name. Strings holding ``/``
  are taken for paths unless they end in ``=``.
* URLs keep their user but lose the password: ``https://u:p@h`` -> ``https://u:***@h``.
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping

log = logging.getLogger(__name__)

MASK = "***"

_TOKEN_WORDS_NOT_SECRET = (
    "bos|eos|pad|unk|sep|cls|mask|start|end|special|max|min|num|n|new|added|image|video|"
    "audio|first|last|total|per|next|prev|stop|extra|vocab|decoder|encoder|sentence|word"
)
_TOKEN_SUFFIX_NOT_SECRET = (
    "ids?|len|length|count|type|index|idx|limit|budget|level|size|num|embedding|embeddings|"
    "pattern|regex"
)
_KEY_QUALIFIERS = (
    "api|access|secret|private|session|signing|encryption|master|client|account|ssh|"
    "license|licence|auth|app|consumer|subscription|service|storage|deploy|pass|gpg|pgp|"
    "ingest|admin|write|read|sas|rsa|hmac|jwt|webhook"
)

#: Matches a *normalised* name (see `normalize_name`): lowercase words joined by ``_``.
SECRET_NAME = re.compile(
    r"(?:^|_)(?:"
    r"[a-z0-9]*pass(?:word|wd|phrase)[a-z0-9]*"
    r"|pwd|[a-z0-9]*secrets?[a-z0-9]*|[a-z0-9]*credentials?[a-z0-9]*|creds?"
    r"|auth|authorization|authentication|oauth[a-z0-9]*|bearer|cookies?|netrc|pgpass"
    rf"|[a-z0-9]*(?:{_KEY_QUALIFIERS})_?keys?"
    r")(?=_|$)"
    # The singular word token, unless it names a tokenizer symbol or a count.
    rf"|(?:^|(?:^|_)(?!(?:{_TOKEN_WORDS_NOT_SECRET})_)[a-z0-9]+_)[a-z0-9]*token(?=_|$)"
    rf"(?!_(?:{_TOKEN_SUFFIX_NOT_SECRET})(?:_|$))"
)

# The shell's directory variables, spelled as the shell spells them; ``--pwd`` stays secret.
_NOT_SECRET_NAMES = frozenset({"PWD", "OLDPWD"})

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_SEP = re.compile(r"[^a-z0-9]+")


def normalize_name(name: str) -> str:
    """``WANDB-apiKey`` -> ``wandb_api_key``: the form SECRET_NAME matches."""
    return _SEP.sub("_", _CAMEL.sub("_", name).lower()).strip("_")


def is_secret_name(name: str) -> bool:
    if name in _NOT_SECRET_NAMES:
        return False
    return SECRET_NAME.search(normalize_name(name)) is not None


_KNOWN_VALUE = re.compile(
    r"sk-[A-Za-z0-9_\-]{16,}"
    r"|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}"
    r"|hf_[A-Za-z0-9]{20,}"
    r"|(?:AKIA|ASIA)[0-9A-Z]{16}"
    r"|xox[baprs]-[A-Za-z0-9\-]{10,}"
    r"|glpat-[A-Za-z0-9_\-]{16,}"
    r"|AIza[0-9A-Za-z_\-]{35}"
    r"|npm_[A-Za-z0-9]{30,}"
    r"|eyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]*"
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----"
)
_RANDOMISH = re.compile(r"[A-Za-z0-9+/=_\-]{32,}")
_HEXISH = re.compile(r"[0-9a-fA-F\-]+")
# The scheme is tried only where one can start: without the look-behind, a long run of
# letters is rescanned from every position (quadratic on a hex dump or a base64 line).
_URL_USERINFO = re.compile(
    r"(?P<pre>(?<![A-Za-z0-9+.\-])[A-Za-z][A-Za-z0-9+.\-]*://[^/\s:@]*):(?P<pw>[^/\s@]*)@")
_BEARER = re.compile(r"(?i)\b(bearer|basic|token)(\s+)([A-Za-z0-9._~+/=\-]{8,})")
_WORD = re.compile(r"[^\s'\"`;|&<>(),]+")


def _entropy(s: str) -> float:
    n = len(s)
    return -sum(c / n * math.log2(c / n) for c in Counter(s).values())


def looks_secret_value(value: object) -> bool:
    """True when a value looks like a credential whatever it is called."""
    if not isinstance(value, str) or len(value) < 8:
        return False
    if _KNOWN_VALUE.search(value):
        return True
    s = value.strip()
    if not _RANDOMISH.fullmatch(s) or _HEXISH.fullmatch(s):
        return False
    if "/" in s and not s.endswith("="):
        return False
    if not (re.search(r"[a-z]", s) and re.search(r"[A-Z]", s) and re.search(r"[0-9]", s)):
        return False
    # CamelCase names (``ResNet50ImageNetPretrained...``) have long lowercase runs;
    # random tokens average under two letters per run.
    runs = re.findall(r"[a-z]+", s)
    if sum(map(len, runs)) / len(runs) >= 3.5:
        return False
    return _entropy(s) >= 4.0


def redact_url(text: str) -> str:
    """Drop the password of every ``scheme://user:password@`` in text."""
    return _URL_USERINFO.sub(lambda m: f"{m['pre']}:{MASK}@", text)


def redact_text(text: str) -> str:
    """Redact inside free text (a ``-c`` one-liner): URLs, ``NAME=v``, bearer tokens,
    secret-looking words, and the word after a secret-named option."""
    text = redact_url(text)
    text = _BEARER.sub(lambda m: f"{m[1]}{m[2]}{MASK}", text)
    out: list[str] = []
    pos = 0
    mask_next = False
    for m in _WORD.finditer(text):
        word = m.group()
        new = word
        if mask_next and not word.startswith("--"):
            new = MASK
            mask_next = False
        elif "=" in word:
            name, _, val = word.partition("=")
            if val and (is_secret_name(name.lstrip("-")) or looks_secret_value(val)):
                new = f"{name}={MASK}"
        elif word.startswith("-") and is_secret_name(word.lstrip("-")):
            mask_next = True
        elif looks_secret_value(word):
            new = MASK
        out.append(text[pos:m.start()])
        out.append(new)
        pos = m.end()
    out.append(text[pos:])
    return "".join(out)


def _is_option(arg: str) -> bool:
    return arg.startswith("-") and len(arg) > 1


def redact_argv(argv: Iterable[str]) -> list[str]:
    """A copy of argv with credentials replaced by ``***``."""
    args = list(argv)
    out: list[str] = []
    mask_next = False
    for arg in args:
        if mask_next:
            mask_next = False
            if not arg.startswith("--"):
                out.append(MASK)
                continue
        if _is_option(arg) and "=" in arg:
            name, _, val = arg.partition("=")
            if is_secret_name(name.lstrip("-")) or looks_secret_value(val):
                out.append(f"{name}={MASK}")
            else:
                out.append(redact_text(arg) if " " in arg else redact_url(arg))
        elif _is_option(arg):
            mask_next = is_secret_name(arg.lstrip("-"))
            out.append(arg)
        elif "=" in arg and re.match(r"[+~]{0,2}[A-Za-z_][\w.\-/@]*=", arg):
            name, _, val = arg.partition("=")
            if is_secret_name(name.rsplit(".", 1)[-1]) or looks_secret_value(val):
                out.append(f"{name}={MASK}")
            else:
                out.append(f"{name}={redact_url(val)}")
        elif looks_secret_value(arg):
            out.append(MASK)
        elif any(c.isspace() for c in arg):
            out.append(redact_text(arg))
        else:
            out.append(redact_url(arg))
    return out


def redact_env(environ: Mapping[str, str]) -> dict[str, str]:
    """A copy of an environment with secret-named or secret-looking values masked."""
    out: dict[str, str] = {}
    for name, value in environ.items():
        if is_secret_name(name) or looks_secret_value(value):
            out[name] = MASK
        else:
            out[name] = redact_url(value) if "://" in value else value
    return out


def _last_component(key: str) -> str:
    """``params.yaml:db.password`` -> ``password``; ``--api-key`` -> ``api-key``."""
    key = key.rsplit(":", 1)[-1]
    return key.rsplit(".", 1)[-1].lstrip("-+~")


def _redact_value(value: object) -> object:
    if isinstance(value, str):
        if looks_secret_value(value):
            return MASK
        return redact_url(value) if "://" in value else value
    if isinstance(value, list):
        return [_redact_value(v) for v in value]
    if isinstance(value, dict):
        return redact_mapping(value)
    return value


def redact_mapping(params: Mapping[str, object]) -> dict[str, object]:
    """Flattened params with secrets masked; the key's last component decides."""
    out: dict[str, object] = {}
    for key, value in params.items():
        if value is not None and not isinstance(value, bool) and is_secret_name(
            _last_component(str(key))
        ):
            out[key] = MASK
        else:
            out[key] = _redact_value(value)
    return out


# ---- files: does a text hold a credential? -------------------------------------------------
# For what leaves the project (store/secret_scan.py, export). Every pattern is a C-level
# regex tried only where its token can start, so a file costs a pass or two over its
# text: a lone random-looking word is not enough here (hashes, base64 blobs and ids fill
# files); a secret name, a URL password, a bearer token or a known format is.
_NAME_VALUE = re.compile(
    r"""(?<![\w.\-])(?P<name>[A-Za-z_][\w.\-]{0,63})["']?[ \t]{0,8}[:=][ \t]{0,8}"""
    r"""(?P<value>"[^"\n]{0,4096}"|'[^'\n]{0,4096}'|[^\s,}\]]{0,4096})""")
_OPTION_VALUE = re.compile(
    r"(?<![\w\-])--?(?P<name>[A-Za-z][\w\-]{0,63})(?:[ \t]+|=)(?P<value>[^\s-]\S{0,4095})")
_UNSET = {"", "null", "none", "~", "''", '""', MASK, "[]", "{}", "|", ">", "true", "false"}


def _set_value(value: str) -> bool:
    v = value.strip().strip("\"'")
    return v.lower() not in _UNSET and not v.startswith(("${", "{{", "<", "%(", "$"))


def credential_in(text: str) -> str | None:
    """What in `text` is a credential (`a credential under api_key`, `a password in a
    URL`, ...), or None. Names, URLs, bearer tokens and known formats, as redact_text."""
    for m in _NAME_VALUE.finditer(text):
        if is_secret_name(m["name"]) and _set_value(m["value"]):
            return f"a credential under {m['name']}"
    for m in _OPTION_VALUE.finditer(text):
        if is_secret_name(m["name"]) and _set_value(m["value"]):
            return f"a credential after --{m['name']}"
    for m in _URL_USERINFO.finditer(text):
        if m["pw"] and m["pw"] != MASK:
            return "a password in a URL"
    for m in _BEARER.finditer(text):
        if m[3] != MASK:
            return f"a {m[1].lower()} token"
    if _KNOWN_VALUE.search(text):
        return "a credential in a known format"
    return None
