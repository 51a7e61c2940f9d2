"""Jupyter kernels as runs: the notebook a kernel serves, and its cells as steps.

A mixin of `Assembler` (agent/assembly/assembler.py), like the file side: the same
single writer. A run whose root process is a Jupyter kernel (``python -m
ipykernel_launcher -f .../kernel-ID.json``) lives as long as the kernel. Everything is
read from outside, with nothing asked of the kernel or of the person:

- **Which notebook** (`FOUND_BY`, tried in this order): ``kernel``: the kernel's own
  process names it (``JPY_SESSION_NAME`` in its environment, or ``jupyter_session`` in
  its connection file; jupyter_server 2+, JupyterLab 4, Notebook 7 and VS Code set
  them); ``server``: the session list of the Jupyter server whose runtime file
  (``jpserver-*.json``, ``nbserver-*.json``) lies beside the kernel's connection file,
  asked over its local HTTP API with its own token; ``saved``: a project notebook saved
  while the kernel lived whose code cells hold the sources it executed.
- **Cells**: IPython writes each cell's input to its history database as the cell
  begins (from a thread of its own: a short cell may be over by then;
  `agent/rules/notebook.py`). Each tick the database is looked at (a stat, and
  a read-only query only when it changed): a new row is a new cell, a step of the run
  with its execution count and source. Begin and end come from the kernel's main
  thread, sampled each tick: waiting in its event loop (``/proc/PID/wchan``
  ``do_epoll_wait`` and kin) is idle, anything else busy. A cell began at the last idle
  sample before it was first seen busy and ended at the first idle sample after its row
  was written; so both are known to within a tick. A file the kernel read or wrote
  goes to the cell that ran then: the last one begun, each claiming the time from the
  previous one's end (the kernel does nothing between cells), with basis ``window``
  (no tier can tell cells apart by process).
- **The notebook as code**: each saved content of it is a version linked as the run's
  code (never an output of the kernel: the front end writes it, not the cells); its
  ``parameters`` cell gives params, its cells' printed output gives metrics (the log
  parsers), its error outputs mark their cells failed.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.parse
import urllib.request
from typing import Any

from onlooker.agent import metrics
from onlooker.agent.assembly.model import Cell, Kernel, Run, Step
from onlooker.agent.events import HashDone, ProcInfo
from onlooker.agent.rules import notebook as nbrules
from onlooker.agent.rules import secrets
from onlooker.store import private

log = logging.getLogger(__name__)

FOUND_BY = ("kernel", "server", "saved")
_POLL_EVERY = 0.05  # seconds between two looks at a kernel (at most one per tick)
_SAMPLES_KEPT = 256  # busy/idle samples kept per kernel (the last ones matter)
_SERVER_TRIES = 10  # a server lists a kernel's session just after starting it
_SERVER_EVERY = 1.0
_SERVER_TIMEOUT = 0.3
_CANDIDATES = 16
_FRONT_END_DIRS = (".ipynb_checkpoints", ".virtual_documents")  # a Jupyter server's own
# Where a kernel's main thread waits between cells: its event loop's poll.
IDLE_WAITS = frozenset({"do_epoll_wait", "ep_poll", "do_sys_poll", "do_select",
                        "core_sys_select", "poll_schedule_timeout", "__x64_sys_epoll_wait",
                        "__se_sys_epoll_wait", "do_epoll_pwait"})


def main_thread_idle(pid: int) -> bool | None:
    """Whether a kernel process waits in its event loop now; None: cannot tell (the
    kernel hides wait channels, or the process is gone)."""
    try:
        with open(f"/proc/{pid}/wchan", "rb") as f:
            wchan = f.read().decode("ascii", "replace").strip()
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
    except OSError:
        return None
    state = stat.rsplit(")", 1)[-1].split()[:1]
    if state == ["R"]:
        return False
    if not wchan or wchan == "0":
        return None
    return wchan.split(".", 1)[0] in IDLE_WAITS  # `poll_schedule_timeout.constprop.0`


def server_sessions(runtime_dir: str) -> list[tuple[str, str]]:
    """(kernel id, absolute notebook path) of every session the Jupyter servers whose
    runtime files lie in `runtime_dir` list; [] when none answers."""
    out: list[tuple[str, str]] = []
    try:
        names = sorted(os.listdir(runtime_dir))
    except OSError:
        return out
    for name in names:
        if not (name.startswith(("jpserver-", "nbserver-")) and name.endswith(".json")):
            continue
        try:
            data = _read_head(os.path.join(runtime_dir, name), 65536)
            if data is None:
                continue
            info = json.loads(data)
            url = str(info["url"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        root = str(info.get("root_dir") or info.get("notebook_dir") or "")
        if urllib.parse.urlsplit(url).hostname not in ("localhost", "127.0.0.1", "::1"):
            continue  # only a server on this machine, asked on its loopback address
        req = urllib.request.Request(url.rstrip("/") + "/api/sessions",
                                     headers={"Authorization": f"token {info.get('token', '')}"})
        try:
            with urllib.request.urlopen(req, timeout=_SERVER_TIMEOUT) as resp:  # noqa: S310
                sessions = json.loads(resp.read(4 * 1024 * 1024))
        except (OSError, ValueError):
            continue
        for s in sessions if isinstance(sessions, list) else ():
            try:
                kid = str(s["kernel"]["id"])
                path = str(s.get("path") or (s.get("notebook") or {}).get("path") or "")
            except (KeyError, TypeError):
                continue
            if path:
                out.append((kid, os.path.normpath(os.path.join(root, path))))
    return out


class KernelSide:
    """Kernel runs: found at their start, looked at each tick, closed with the run."""

    # set by Assembler.__init__ (and FileSide)
    catalog: Any
    probes: Any
    ignore: Any
    clock: Any
    runs: list[Run]
    recent: list[Run]
    metric_limits: Any

    # -- start ----------------------------------------------------------------

    def _kernel_begin(self, run: Run, info: ProcInfo) -> None:
        """A run began: if its program is a Jupyter kernel, it is a kernel run."""
        try:
            self._kernel_start(run, info)
        except Exception:  # the run is recorded all the same, as a plain run
            log.exception("run %d: could not read its kernel", run.db_id)

    def _kernel_start(self, run: Run, info: ProcInfo) -> None:
        conn = nbrules.kernel_of(info.argv, info.exe, info.cwd)
        if conn is None:
            return
        environ = dict(info.environ)
        if not environ:
            again = self.probes.read_info(info.pid)
            environ = dict(again.environ) if again is not None else {}
        run.kernel = k = Kernel(connection=conn, environ=environ,
                                history=None if nbrules.other_kernel(info.argv)
                                else nbrules.history_path(environ, info.argv),
                                started_wall=self.clock.to_wall(info.started))
        # Read directly, not through the side door: the connection file lies outside the
        # project (the runtime folder), where no tier sees the agent's reads.
        data = _read_head(conn, 65536) if conn else None
        named = nbrules.session_name(environ, nbrules.read_connection(data), info.cwd)
        if named is not None:
            self._kernel_found(run, named, "kernel")
        log.info("run %d is a Jupyter kernel (history %s, notebook %s)", run.db_id,
                 k.history, k.notebook)

    def _kernel_found(self, run: Run, path: str, how: str) -> bool:
        """The notebook a kernel run serves is known: the run's name and its code."""
        k = run.kernel
        assert k is not None
        if k.notebook is not None or not self.ignore.inside(path) or self.ignore.skip_file(path):
            return False
        k.notebook, k.found_by = path, how
        self.catalog.update_run(run.db_id, notebook=self.ignore.rel(path), notebook_via=how)
        # The notebook as it was when found: read by the run (its code, kind notebook),
        # through the file side's own rules.
        self._file_record(run, path, write=False, step=run.root_step,
                          basis="argv" if how != "saved" else "window")
        for cand_path, ev in list(k.candidates):
            if cand_path == path:
                self._kernel_saved(run, ev)
        k.candidates.clear()
        log.info("run %d: kernel of %s (found by %s)", run.db_id, self.ignore.rel(path), how)
        return True

    def _file_record(self, run: Run | None, path: str, **kw: Any) -> None:
        raise NotImplementedError  # FileSide._record, past the kernel's own rule

    # -- each tick --------------------------------------------------------------

    def _kernel_poll(self, now: float) -> None:
        for run in self.runs:
            k = run.kernel
            if k is None or run.ended_at is not None or now - k.polled < _POLL_EVERY:
                continue
            k.polled = now
            try:
                self._kernel_look(run, k, now)
            except Exception:  # a kernel's odd database must not stop the agent
                log.exception("run %d: could not read its kernel's cells", run.db_id)

    def _kernel_look(self, run: Run, k: Kernel, now: float) -> None:
        idle = self.probes.kernel_idle(run.root_pid)
        if idle is not None:
            k.samples.append((now, idle))
            del k.samples[:-_SAMPLES_KEPT]
            if idle and k.ready is None:
                k.ready = now  # started up: waiting for its first cell
        if k.history is not None:
            self._kernel_history(run, k, now)
        cell = k.open_cell()
        if cell is not None and idle and (later := _idle_after(k, cell)):
            self._end_cell(cell, min(later))
        if k.notebook is None and k.connection and k.server_tries < _SERVER_TRIES \
                and now >= k.server_next:
            k.server_tries += 1
            k.server_next = now + _SERVER_EVERY
            kid = nbrules.kernel_id(k.connection)
            if kid is not None:
                for found_kid, path in self.probes.server_sessions(
                        os.path.dirname(k.connection)):
                    if found_kid == kid and self._kernel_found(run, path, "server"):
                        break

    def _kernel_history(self, run: Run, k: Kernel, now: float) -> None:
        sig = _db_sig(k.history)
        if sig is None or sig == k.db_sig or not private.may_read(k.history):
            return
        if k.session is None:
            taken = {r.kernel.session for r in self.runs + self.recent
                     if r.kernel is not None and r is not run and r.kernel.session is not None
                     and r.kernel.history == k.history}
            found = nbrules.pick_session(nbrules.read_sessions(k.history), k.started_wall,
                                         taken)
            if found is None:
                k.db_sig = sig
                return
            k.session = found.number
        rows = nbrules.read_inputs(k.history, k.session, k.last_count)
        if rows is None:
            return  # locked for now: the next tick reads it
        k.db_sig = sig
        if not rows:
            return
        # The row was on disk by the database's mtime (now, not before the read: a
        # change seen first is the commit's journal; the row is in once it is read).
        # IPython's saving thread may write it only once a short cell is over.
        after = _db_sig(k.history) or sig
        written = min(now, after[0] / 1e9 - self.clock.to_wall(0.0))
        prev = k.cells[-1] if k.cells else None
        if prev is not None and prev.ended is None:
            idle_since = _idle_after(k, prev)
            if idle_since:
                self._end_cell(prev, min(idle_since))
        if prev is None:
            claims = k.ready if k.ready is not None else run.started
        elif prev.ended is not None:
            claims = prev.ended  # the kernel did nothing between two cells
        else:  # never seen idle since: back to back
            claims = max(prev.claims, written - 0.005)
            self._end_cell(prev, claims)
        began = _began(k, claims, written)
        log.debug("run %d: cells %s seen at %.3f, written %.3f, claims %.3f, began %.3f",
                  run.db_id, [c for c, _ in rows], now, written, claims, began)
        for count, source in rows:
            last = k.open_cell()
            if last is not None:
                self._end_cell(last, max(began, last.started))
            self._new_cell(run, k, count, source, began, written, claims)
        if k.notebook is None:
            for path, ev in list(k.candidates):
                if self._kernel_matches(k, ev):
                    self._kernel_found(run, path, "saved")
                    break

    def _new_cell(self, run: Run, k: Kernel, count: int, source: str, began: float,
                  written: float, claims: float) -> None:
        root = run.root_step
        info = run.info
        sid = self.catalog.add_step(run.db_id, pid=run.root_pid, ppid=info.ppid,
                                    parent_step_id=root.db_id if root else None, argv=[],
                                    cwd=info.cwd, exe=info.exe,
                                    started_at=self.clock.to_wall(began))
        kept = secrets.redact_text(source[:nbrules.SOURCE_MAX])
        self.catalog.update_step(sid, cell=count, source=kept)
        step = Step(sid, run.root_pid, root, began)
        k.cells.append(Cell(count, source, step, began, written, claims))
        k.last_count = max(k.last_count, count)

    def _end_cell(self, cell: Cell, t: float) -> None:
        cell.ended = t
        cell.step.ended, cell.step.ended_t = True, t
        self.catalog.update_step(cell.step.db_id, ended_at=self.clock.to_wall(t),
                                 status="failed" if cell.failed else "completed")

    def _kernel_close(self, run: Run, ended: float | None) -> None:
        """The kernel is gone: its last cell ended with it at the latest."""
        k = run.kernel
        if k is None:
            return
        if k.history is not None:
            k.db_sig = None
            self._kernel_history(run, k, ended if ended is not None else self.clock.now())
        cell = k.open_cell()
        if cell is not None:
            later = _idle_after(k, cell)
            end = min(later) if later else (ended if ended is not None else cell.started)
            self._end_cell(cell, max(end, cell.started))

    # -- files ------------------------------------------------------------------

    def _kernel_step(self, run: Run, step: Step | None, t: float) -> Step | None:
        """The cell a kernel run's file use at `t` belongs to (a step of a child
        process keeps its own)."""
        k = run.kernel
        if k is None or (step is not None and step is not run.root_step):
            return None
        cell = k.cell_at(t)
        return cell.step if cell is not None else None

    def _kernel_saves(self, run: Run | None, path: str) -> bool:
        """Whether a use of a notebook attributed to a kernel run by time alone is the
        front end's (opening or saving the run's notebook), never the kernel's."""
        if run is None or run.kernel is None:
            return False
        if any(f"/{d}/" in path for d in _FRONT_END_DIRS):
            return True  # the server's checkpoint and language-server copies
        return path.endswith(".ipynb") and run.kernel.notebook in (None, path)

    def _kernel_on_hash(self, ev: HashDone) -> bool:
        """A project notebook's content is known: a kernel run's notebook saved, or a
        notebook that may say which kernel it was run in. True: a kernel run's code."""
        if ev.hash is None or not ev.path.endswith(".ipynb") or "/.ipynb_checkpoints/" in \
                ev.path or not self.ignore.inside(ev.path):
            return False
        linked = False
        for run in self.runs + self.recent:
            use = run.files.get(ev.path)
            if (run.kernel is None and use is not None and use.read_role == "code"
                    and use.read_vid is not None and ev.path not in run.notebooks_read):
                self._batch_params(run, ev)
        saved = ev.mtime_ns / 1e9 - self.clock.to_wall(0.0)  # on the agent clock
        for run in self.runs + self.recent:
            k = run.kernel
            # A save just before the kernel's shutdown is hashed after its end.
            if k is None or (run.ended_at is not None and saved > run.ended_at + 1.0):
                continue
            if k.notebook == ev.path:
                self._kernel_saved(run, ev)
                linked = True
            elif k.notebook is None:
                if self._kernel_matches(k, ev):
                    self._kernel_found(run, ev.path, "saved")
                    self._kernel_saved(run, ev)
                    linked = True
                else:
                    k.candidates.append((ev.path, ev))
                    del k.candidates[:-_CANDIDATES]
        return linked

    def _batch_params(self, run: Run, ev: HashDone) -> None:
        """A run that executes a notebook it read (papermill, nbconvert --execute): the
        notebook's parameters cell gives the params its command line does not."""
        run.notebooks_read.add(ev.path)
        data = self._content(ev, disk_limit=self.metric_limits.max_bytes)
        nb = nbrules.parse_ipynb(data) if data is not None else None
        if nb is None:
            return
        rel = self.ignore.rel(ev.path)
        found = {k: v for k, v in secrets.redact_mapping(nbrules.parameters(nb)).items()
                 if k not in run.params}
        if found:
            run.params.update({k: (v, rel) for k, v in found.items()})
            self.catalog.set_params(run.db_id, run.params)

    def _kernel_matches(self, k: Kernel, ev: Any) -> bool:
        if not k.cells:
            return False
        data = self._content(ev, disk_limit=None)
        nb = nbrules.parse_ipynb(data) if data is not None else None
        return nb is not None and nbrules.matches(nb, k.executed()) > 0

    def _content(self, ev: HashDone, *, disk_limit: int | None) -> bytes | None:
        raise NotImplementedError  # FileSide._content

    def _kernel_saved(self, run: Run, ev: HashDone) -> None:
        """One saved content of the run's notebook: code, params, metrics, failed cells."""
        k = run.kernel
        assert k is not None
        if ev.hash in k.saved or ev.hash is None:
            return
        k.saved.add(ev.hash)
        rel = self.ignore.rel(ev.path)
        vid = self.catalog.add_version(rel, hash=ev.hash, size=ev.size, mtime_ns=ev.mtime_ns,
                                       kind="notebook", stored=ev.stored,
                                       created_at=self.clock.to_wall(ev.t))
        self.catalog.link(run.db_id, vid, "code", step_id=run.root_step.db_id
                          if run.root_step else None,
                          basis="argv" if k.found_by != "saved" else "window")
        data = self._content(ev, disk_limit=self.metric_limits.max_bytes)
        nb = nbrules.parse_ipynb(data) if data is not None else None
        if nb is None:
            return
        found = nbrules.parameters(nb)
        if found:
            for key, value in secrets.redact_mapping(found).items():
                run.params[key] = (value, rel)
            self.catalog.set_params(run.db_id, run.params)
        text = nbrules.output_text(nb)
        if text or self.catalog.has_metrics(run.db_id, rel):
            self.catalog.set_metrics(run.db_id, rel, metrics.parse_log(text) if text else [])
        errors = {c.execution_count for c in nb.code()
                  if c.error and c.execution_count is not None}
        for cell in k.cells:
            if cell.count in errors and not cell.failed and any(
                    c.execution_count == cell.count and nbrules.same_source(c.source, cell.source)
                    for c in nb.code()):
                cell.failed = True
                self.catalog.update_step(cell.step.db_id, status="failed")


def _read_head(path: str, limit: int) -> bytes | None:
    # An agent run as root reads nothing the project's owner could not (store/private.py).
    if not private.may_read(path):
        return None
    try:
        with open(path, "rb") as f:
            return f.read(limit)
    except OSError:
        return None


def _idle_after(k: Kernel, cell: Cell) -> list[float]:
    """The idle samples taken after a cell's history row was on disk."""
    return [t for t, idle in k.samples if idle and t > cell.written]


def _began(k: Kernel, claims: float, written: float) -> float:
    """When a cell began, as the samples tell: the last idle one before the first busy
    one since `claims` (the previous cell's end); seen busy never, the last idle one
    before its row was written."""
    seen = [(t, idle) for t, idle in k.samples if claims < t <= written]
    busy = next((t for t, idle in seen if not idle), None)
    if busy is not None:
        return max([t for t, idle in seen if idle and t < busy] + [claims])
    return max([t for t, idle in seen if idle] + [claims])


def _db_sig(path: str) -> tuple[int, ...] | None:
    """What changes when IPython writes its database (or its rollback journal)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    sig = [st.st_mtime_ns, st.st_size]
    for suffix in ("-journal", "-wal"):
        try:
            side = os.stat(path + suffix)
            sig += [side.st_mtime_ns, side.st_size]
        except OSError:
            pass
    return tuple(sig)
