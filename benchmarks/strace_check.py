"""Hold onlooker against strace: what did each run really read and write?

    python benchmarks/strace_check.py PROJECT [--tier both|privileged|unprivileged]
        [--json] [--keep DIR] -- CMD... [--- CMD...]

PROJECT is never touched: it is copied (without `.onlooker/` and `__pycache__/`) to a
work folder, always at the same path, and put back from that copy before each pass so
every pass starts from the same files:

1. strace pass: each CMD (commands are separated by a lone ``---``) runs under
   ``strace -f -y`` (open/openat/creat, rename*, unlink*, execve, chdir, clone*). From the
   trace comes the set of project files each command read only and the set it wrote
   (an open with O_WRONLY/O_RDWR/O_CREAT/O_TRUNC, creat, a rename target; a rename
   source and a written-then-removed file are not outputs; read-and-written is an
   output). Reads of ``__pycache__/*.pyc`` count as reads of their source. Writes under
   ``.onlooker``, ``.git``, ``__pycache__``, a virtual env (``pyvenv.cfg``) and the
   agent's ``watch.exclude`` folders are ignored. A read of a code or notebook file is
   ``code``, any other read an ``input``.
2. one pass per tier: ``onlooker init``, the tier's config, ``start``, the same CMDs one
   after another, ``stop``, then ``runs --json`` / ``show ID --json``.

It prints, per command and tier, the missing and spurious inputs, outputs and code,
files listed under the wrong role, the same per step (matched by argv), and the
params: argv params of the command plus the keys of every config file the command
read (parsed with onlooker's own parser: the check is about *which* files fed the run).
Exit status 0 when every pass matches, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from onlooker.agent.config import DEFAULTS
from onlooker.agent.rules import classify, kinds
from onlooker.agent.rules import params as oparams

ONLOOKER = [sys.executable, "-m", "onlooker.cli.main"]
TIERS = {
    "privileged": "",
    "unprivileged": '[capture]\nprocess = "poll"\nfiles = "inotify"\n',
}
SYSCALLS = ("open,openat,openat2,creat,rename,renameat,renameat2,unlink,unlinkat,"
            "execve,execveat,chdir,fchdir,clone,clone3,fork,vfork")
EXCLUDE = set(DEFAULTS["watch"]["exclude"]) | {".onlooker", ".git", "__pycache__"}
WRITE_FLAGS = ("O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC")
_LINE = re.compile(r"^(?P<pid>\d+)\s+(?P<rest>.*)$")
_CALL = re.compile(r"^(?P<name>\w+)\((?P<args>.*)\)\s+=\s+(?P<ret>-?\d+|\?)(?P<tail>.*)$", re.S)
_STR = r'"((?:[^"\\]|\\.)*)"'
_PYC = re.compile(r"^(?P<mod>[^.]+)\.[A-Za-z]+-?\d+(?:\.opt-\d+)?\.pyc$")


def _unescape(s: str) -> str:
    """strace prints C-escaped strings."""
    if "\\" not in s:
        return s
    return s.encode("latin-1", "backslashreplace").decode("unicode_escape").encode(
        "latin-1").decode("utf-8", "surrogateescape")


# ---------------------------------------------------------------------------- strace side


@dataclass
class TStep:
    argv: list[str]
    pid: int
    reads: set[str] = field(default_factory=set)
    writes: set[str] = field(default_factory=set)
    gone: set[str] = field(default_factory=set)


def _join_unfinished(lines):
    """Glue ``<unfinished ...>`` / ``<... x resumed>`` halves back into one line per call."""
    pending: dict[str, str] = {}
    for raw in lines:
        m = _LINE.match(raw.rstrip("\n"))
        if not m:
            continue
        pid, rest = m["pid"], m["rest"]
        if rest.endswith("<unfinished ...>"):
            pending[pid] = rest[: -len("<unfinished ...>")].rstrip()
            continue
        r = re.match(r"^<\.\.\. \w+ resumed>\s?(.*)$", rest)
        if r:
            rest = pending.pop(pid, "") + r.group(1)
        yield int(pid), rest


def parse_trace(text: str, root_argv: list[str], start_cwd: str) -> list[TStep]:
    """Per exec'd program (a step): the absolute paths it read and wrote, in order."""
    cwd: dict[int, str] = {}
    step_of: dict[int, TStep] = {}
    steps: list[TStep] = []
    pre_exec: dict[int, list[tuple[str, str]]] = {}
    calls = []
    parent_of: dict[int, int] = {}
    for pid, rest in _join_unfinished(text.splitlines()):
        m = _CALL.match(rest)
        if m:
            calls.append((pid, m))
            if m["name"] in ("clone", "clone3", "fork", "vfork") and m["ret"].isdigit():
                parent_of[int(m["ret"])] = pid
    first = True
    for pid, m in calls:
        name, args, ret, tail = m["name"], m["args"], m["ret"], m["tail"]
        if first:
            root = TStep(list(root_argv), pid)
            steps.append(root)
            step_of[pid] = root
            cwd[pid] = start_cwd
            first = False
        if pid not in step_of and pid in parent_of:
            # A child often runs before strace prints its parent's `clone(...) = pid`
            # (the call shows as unfinished, then resumed): it is still the parent's
            # program until it execs.
            parent = parent_of[pid]
            step_of[pid] = step_of.get(parent, steps[0])
            cwd[pid] = cwd.get(parent, start_cwd)
            pre_exec[pid] = []
        if ret == "?" or int(ret) < 0:
            continue
        here = cwd.get(pid, start_cwd)
        at = re.match(r"^AT_FDCWD<(?P<p>[^>]*)>", args)
        if at:
            here = cwd[pid] = at["p"]
        step = step_of.get(pid)
        if name in ("clone", "clone3", "fork", "vfork"):
            child = int(ret)
            if child not in step_of:  # else it already ran (see above)
                step_of[child] = step  # a thread or a forked child: same program until exec
                pre_exec[child] = []
                cwd[child] = here
            continue
        if step is None:  # a pid we did not see born (should not happen under -f)
            step = step_of[pid] = steps[0]
        if name in ("execve", "execveat"):
            strs = re.findall(_STR, args)
            arr = re.search(r'\[((?:"(?:[^"\\]|\\.)*"(?:\.\.\.)?(?:, )?)*)\]', args)
            argv = [_unescape(s) for s in re.findall(_STR, arr.group(1))] if arr else strs[1:]
            new = TStep(argv, pid)
            if step is steps[0] and pid == steps[0].pid and len(steps) == 1 \
                    and not step.reads and not step.writes:
                steps[0].argv = argv  # strace's own exec of the command
            else:
                steps.append(new)
                step_of[pid] = new
                # what this process opened since its fork or exec (a shell's `> log`
                # redirect) was opened for the program it now runs
                for kind_, path_ in pre_exec.pop(pid, []):
                    (step.writes if kind_ == "w" else step.reads).discard(path_)
                    (new.writes if kind_ == "w" else new.reads).add(path_)
            pre_exec[pid] = []
            # exec of a file in the project: its text is read (a script run as ./x)
            if strs:
                path = strs[0] if strs[0].startswith("/") else os.path.join(here, strs[0])
                step_of[pid].reads.add(os.path.normpath(_unescape(path)))
            continue
        if name in ("chdir",):
            (p,) = re.findall(_STR, args)[:1] or [None]
            if p is not None:
                p = _unescape(p)
                cwd[pid] = os.path.normpath(p if p.startswith("/") else os.path.join(here, p))
            continue
        if name == "fchdir":
            fd = re.match(r"^\d+<(?P<p>[^>]*)>", args)
            if fd:
                cwd[pid] = fd["p"]
            continue
        if name in ("open", "openat", "openat2", "creat"):
            fd = re.match(r"^<(?P<p>[^>]*)>", tail.strip())
            if fd is None:
                continue
            path = fd["p"]
            if name == "creat":
                write = True
            else:
                flags = args.split(", ")[1 if name == "open" else 2] if args.count(", ") >= 1 \
                    else ""
                if "O_DIRECTORY" in flags or "O_PATH" in flags:
                    continue
                write = any(f in flags for f in WRITE_FLAGS)
            (step.writes if write else step.reads).add(path)
            pre_exec.setdefault(pid, []).append(("w" if write else "r", path))
            if write:
                step.gone.discard(path)
            continue
        if name.startswith("rename"):
            paths = _two_paths(name, args, here)
            if paths:
                src, dst = paths
                if src in step.writes:
                    step.writes.discard(src)
                step.gone.add(src)
                step.writes.add(dst)
                step.gone.discard(dst)
            continue
        if name.startswith("unlink"):
            strs = re.findall(_STR, args)
            if not strs:
                continue
            p = _unescape(strs[0])
            base = here
            d = re.match(r"^(?P<fd>\d+)<(?P<p>[^>]*)>", args)
            if name == "unlinkat" and d:
                base = d["p"]
            path = os.path.normpath(p if p.startswith("/") else os.path.join(base, p))
            step.gone.add(path)
            step.writes.discard(path)
    return steps


def _two_paths(name: str, args: str, here: str) -> tuple[str, str] | None:
    strs = [_unescape(s) for s in re.findall(_STR, args)]
    if len(strs) < 2:
        return None
    if name == "rename":
        bases = [here, here]
    else:
        dirs = re.findall(r"(?:^|, )(?:AT_FDCWD|\d+)<([^>]*)>", args)
        bases = (dirs + [here, here])[:2]
    out = []
    for base, p in zip(bases, strs[:2], strict=False):
        out.append(os.path.normpath(p if p.startswith("/") else os.path.join(base, p)))
    return out[0], out[1]


class Project:
    """Which absolute paths are project files worth comparing, and their relative names."""

    def __init__(self, root: Path):
        self.root = Path(os.path.realpath(root))

    def rel(self, path: str) -> str | None:
        real = os.path.realpath(path)
        try:
            rel = Path(real).relative_to(self.root)
        except ValueError:
            return None
        parts = rel.parts
        if not parts:
            return None
        if parts[-1].endswith(".pyc") and len(parts) >= 2 and parts[-2] == "__pycache__":
            m = _PYC.match(parts[-1])
            if not m:
                return None
            src = Path(*parts[:-2], m["mod"] + ".py")
            return str(src) if (self.root / src).is_file() else None
        if any(p in EXCLUDE for p in parts[:-1]):
            return None
        for i in range(1, len(parts)):
            if (self.root.joinpath(*parts[:i]) / "pyvenv.cfg").exists():
                return None  # inside a virtual env
        return str(rel)


def code_like(rel: str) -> bool:
    low = os.path.basename(rel).lower()
    ext = os.path.splitext(low)[1]
    return ext in kinds.CODE_EXT or ext in kinds.NOTEBOOK_EXT or low in kinds.CODE_NAMES


def expected(proj: Project, steps: list[TStep]) -> dict:
    """Project-relative sets of the run and of each step: inputs, outputs, code."""

    def sets(reads, writes, gone):
        # A bytecode cache an import writes is the interpreter's, not an output of the
        # source it stands for (with no cache yet, as in a fresh clone, every import
        # writes one).
        outs = {r for p in writes if p not in gone and "/__pycache__/" not in p
                and (r := proj.rel(p)) and (proj.root / r).is_file()}
        ins = {r for p in reads if (r := proj.rel(p)) and (proj.root / r).is_file()} - outs
        code = {r for r in ins if code_like(r)}
        return {"inputs": ins - code, "outputs": outs, "code": code}

    all_r, all_w, all_g = set(), set(), set()
    per_step = []
    for s in steps:
        all_r |= s.reads
        all_w |= s.writes
        all_g |= s.gone
    # A file written by one step and removed by another is no output of the run.
    run = sets(all_r, all_w, {g for g in all_g if not os.path.exists(g)})
    for s in steps:
        per_step.append({"argv": s.argv, **sets(s.reads, s.writes,
                                                {g for g in s.gone if not os.path.exists(g)})})
    return {"run": run, "steps": per_step}


def strace_pass(work: Path, cmds: list[list[str]], env: dict) -> list[dict]:
    proj = Project(work)
    out = []
    with tempfile.TemporaryDirectory(prefix="strace-") as td:
        for i, cmd in enumerate(cmds):
            trace = Path(td) / f"trace{i}"
            res = subprocess.run(["strace", "-f", "-y", "-qq", "-v", "-s", "65535", "-o",
                                  str(trace), "-e", f"trace={SYSCALLS}", "--", *cmd],
                                 cwd=work, env=env)
            steps = parse_trace(trace.read_text(errors="surrogateescape"), cmd,
                                str(proj.root))
            exp = expected(proj, steps)
            exp["exit_code"] = res.returncode
            exp["params"] = config_params(proj, exp["run"])
            out.append(exp)
    return out


def config_params(proj: Project, run: dict) -> dict:
    """The keys of every config file the command read."""
    want: dict = {}
    for rel in sorted(run["inputs"]):
        head = (proj.root / rel).read_bytes()[:4096]
        if kinds.kind_of(rel, head, size=len(head), role="input", rules={}) != "config":
            continue
        want.update(oparams.config_params(rel, (proj.root / rel).read_bytes(), rel))
    return want


# ---------------------------------------------------------------------------- agent side


def cli(project: Path, *args: str) -> str:
    res = subprocess.run([*ONLOOKER, "-C", str(project), *args], capture_output=True,
                         text=True, timeout=600)
    if res.returncode != 0:
        raise SystemExit(f"onlooker {' '.join(args)} failed: {res.stderr.strip()}")
    return res.stdout


def agent_pass(work: Path, cmds: list[list[str]], env: dict, tier: str) -> dict:
    cli(work, "init")
    if TIERS[tier]:
        (work / ".onlooker" / "config.toml").write_text(TIERS[tier])
    cli(work, "start")
    codes = []
    try:
        for cmd in cmds:
            codes.append(subprocess.run(cmd, cwd=work, env=env).returncode)
    finally:
        cli(work, "stop")
    runs = sorted(json.loads(cli(work, "runs", "--json", "--all")),
                  key=lambda r: (r["started_at"], r["id"]))
    full = [json.loads(cli(work, "show", str(r["id"]), "--json")) for r in runs]
    return {"codes": codes, "runs": full}


# ---------------------------------------------------------------------------- comparing


def _paths(entries) -> set[str]:
    return {e["path"] for e in entries if not e["path"].startswith("/")}


def diff_sets(want: dict, got: dict) -> dict:
    """missing / spurious per role, and files listed under another role."""
    out: dict[str, list] = {}
    roles = ("inputs", "outputs", "code")
    for role in roles:
        missing = want[role] - got[role]
        spurious = got[role] - want[role]
        for p in sorted(missing):
            other = [r for r in roles if r != role and p in got[r]]
            if other:
                out.setdefault("misfiled", []).append(f"{p}: {other[0]} instead of {role}")
            else:
                out.setdefault(f"missing_{role}", []).append(p)
        for p in sorted(spurious):
            if not any(p in want[r] for r in roles if r != role):
                out.setdefault(f"spurious_{role}", []).append(p)
    return out


def compare(want: list[dict], got: dict) -> list[dict]:
    runs = got["runs"]
    report = []
    if len(runs) != len(want):
        report.append({"command": None, "problems": {
            "run_count": f"{len(runs)} runs recorded for {len(want)} commands: "
                         + "; ".join(" ".join(r["command"]) for r in runs)}})
    for i, w in enumerate(want):
        if i >= len(runs):
            break
        r = runs[i]
        got_sets = {"inputs": _paths(r["inputs"]), "outputs": _paths(r["outputs"]),
                    "code": _paths(r["code"])}
        probs = diff_sets(w["run"], got_sets)
        outside = sorted(e["path"] for e in r["inputs"] + r["outputs"] + r["code"]
                         if e["path"].startswith("/"))
        if got["codes"][i] != w["exit_code"]:
            probs["exit"] = f"strace pass exited {w['exit_code']}, agent pass {got['codes'][i]}"
        # params: config keys of files read, argv keys; env: keys are out of scope
        gp = {k: v for k, v in r["params"].items() if not k.startswith("env:")}
        # argv params come from the recorded command, which must be one strace saw exec'd
        if list(r["command"]) not in [list(s["argv"]) for s in w["steps"]]:
            probs["command"] = f"{r['command']} was never exec'd under strace"
        wp = {**oparams.argv_params(r["command"]), **w["params"]}
        if classify.parse_invocation(list(r["command"])).mode == "command":
            # a one-liner (`bash -c "python x.py --lr 0.1 > log"`): its programs' argv
            # hold the run's params
            for st in w["steps"]:
                if list(st["argv"]) != list(r["command"]):
                    wp.update(oparams.argv_params(st["argv"]))
        if set(gp) - set(wp):
            probs["spurious_params"] = sorted(set(gp) - set(wp))
        if set(wp) - set(gp):
            probs["missing_params"] = sorted(set(wp) - set(gp))
        wrong = sorted(k for k in set(gp) & set(wp) if gp[k] != wp[k])
        if wrong:
            probs["wrong_params"] = [f"{k}: {gp[k]!r} != {wp[k]!r}" for k in wrong]
        steps = _compare_steps(w["steps"], r.get("steps", []))
        if steps:
            probs["steps"] = steps
        report.append({"command": r["command"], "status": r["status"], "tier": r.get("tier"),
                       "counts": {k: len(v) for k, v in got_sets.items()},
                       "outside": outside, "problems": probs})
    return report


def _compare_steps(want_steps: list[dict], got_steps: list[dict]) -> list[str]:
    """Per exec'd program with a project file to its name: matched by argv, in order."""
    out = []
    pool = list(got_steps)
    for ws in want_steps:
        if not (ws["inputs"] or ws["outputs"] or ws["code"]):
            continue
        match = next((g for g in pool if list(g["argv"]) == list(ws["argv"])), None)
        label = " ".join(ws["argv"])[:80]
        if match is None:
            out.append(f"no step for [{label}]")
            continue
        pool.remove(match)
        gi = {p for p in match["inputs"] if not p.startswith("/")}
        go = {p for p in match["outputs"] if not p.startswith("/")}
        wi, wo = ws["inputs"] | ws["code"], ws["outputs"]
        for what, s in (("missing input", wi - gi - go), ("spurious input", gi - wi - wo),
                        ("missing output", wo - go), ("spurious output", go - wo - wi)):
            if s:
                out.append(f"[{label}] {what}: {', '.join(sorted(s))}")
    return out


# ---------------------------------------------------------------------------- main


def _copy(src: Path, dst: Path) -> None:
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, symlinks=True,
                    ignore=shutil.ignore_patterns(".onlooker", "__pycache__"))


def split_cmds(rest: list[str]) -> list[list[str]]:
    cmds, cur = [], []
    for tok in rest:
        if tok == "---":
            if cur:
                cmds.append(cur)
            cur = []
        else:
            cur.append(tok)
    if cur:
        cmds.append(cur)
    return cmds


def check(project: Path, cmds: list[list[str]], tiers: list[str], *, keep: Path | None = None,
          env: dict | None = None) -> dict:
    """Run the strace pass and the agent passes; return {tier: report}."""
    env = dict(os.environ if env is None else env)
    with tempfile.TemporaryDirectory(prefix="onlooker-strace-") as td:
        pristine, work = Path(td) / "pristine", Path(td) / "proj"
        _copy(project, pristine)
        _copy(pristine, work)
        want = strace_pass(work, cmds, env)
        result = {"expected": [{k: (sorted(v) if isinstance(v, set) else v)
                                for k, v in w["run"].items()} for w in want], "tiers": {}}
        for tier in tiers:
            _copy(pristine, work)
            got = agent_pass(work, cmds, env, tier)
            result["tiers"][tier] = compare(want, got)
            if keep is not None:
                dst = keep / tier
                if dst.exists():
                    shutil.rmtree(dst)
                shutil.copytree(work, dst, symlinks=True)
    return result


def ok(result: dict) -> bool:
    return all(not rep["problems"] for reps in result["tiers"].values() for rep in reps)


def render(result: dict) -> str:
    lines = []
    for i, exp in enumerate(result["expected"]):
        lines.append(f"strace, command {i + 1}: " + ", ".join(
            f"{k} {len(v)}" for k, v in exp.items()))
    for tier, reps in result["tiers"].items():
        for rep in reps:
            cmd = " ".join(rep["command"]) if rep["command"] else "(all)"
            head = f"[{tier}] {cmd[:90]}"
            if "counts" in rep:
                head += f"  ({rep['status']}; " + ", ".join(
                    f"{k} {v}" for k, v in rep["counts"].items()) + ")"
            lines.append(head)
            if not rep["problems"]:
                lines.append("    matches strace")
            for k, v in rep["problems"].items():
                if isinstance(v, list):
                    for item in v:
                        lines.append(f"    {k}: {item}")
                else:
                    lines.append(f"    {k}: {v}")
            if rep.get("outside"):
                lines.append(f"    (outside the project: {', '.join(rep['outside'])})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--" not in argv:
        print(__doc__, file=sys.stderr)
        return 2
    cut = argv.index("--")
    ap = argparse.ArgumentParser(description="hold onlooker against strace")
    ap.add_argument("project", type=Path)
    ap.add_argument("--tier", choices=("both", "privileged", "unprivileged"), default="both")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--keep", type=Path, help="copy each tier's project (with .onlooker) here")
    args = ap.parse_args(argv[:cut])
    cmds = split_cmds(argv[cut + 1:])
    if not cmds:
        ap.error("no command after --")
    if shutil.which("strace") is None:
        ap.error("strace is not installed")
    tiers = ["privileged", "unprivileged"] if args.tier == "both" else [args.tier]
    if "privileged" in tiers and os.geteuid() != 0:
        print("not root: the privileged tier is skipped", file=sys.stderr)
        tiers.remove("privileged")
    result = check(args.project, cmds, tiers, keep=args.keep)
    print(json.dumps(result, indent=1, default=sorted) if args.json else render(result))
    return 0 if ok(result) else 1


if __name__ == "__main__":
    sys.exit(main())
