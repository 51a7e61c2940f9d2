"""`onlooker reproduce RUN`: re-run a recorded run on the exact versions it read, under
capture, and say whether it gave the same results (agent/reproduce.py does the work)."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from onlooker.agent.errors import AgentError
from onlooker.cli.commands import AppState, pass_state, run_ref_id
from onlooker.cli.output import CliError, emit, emit_json, json_option, note, short_hash, table
from onlooker.store.diff.causes import value_text
from onlooker.store.errors import StoreError


def _rtol(ctx: click.Context, param: click.Parameter, value: float) -> float:
    if value < 0:
        raise click.BadParameter("the tolerance is a relative difference: 0 or more")
    return value


def headline(report: dict[str, Any]) -> str:
    verdict = report["verdict"]
    words = {"exactly": "reproduced exactly", "within tolerance": "reproduced within"
             f" tolerance (rtol {report['rtol']:g})", "differs": "did not reproduce"}[verdict]
    same = sum(1 for o in report["outputs"] if o["change"] == "same")
    equal = sum(1 for m in report["metrics"] if m["change"] == "same")
    return (f"{words}: run {report['original']} re-ran as run {report['run']}"
            f" ({report['ending']['reproduction']}; {same} of {len(report['outputs'])} outputs"
            f" with the same hash; {equal} of {len(report['metrics'])} metrics equal)")


def _diff_text(m: dict[str, Any]) -> str:
    if m.get("detail"):
        return m["detail"]
    if m["max_rel_diff"] is None:
        return ""
    return "0" if m["max_rel_diff"] == 0 else f"{m['max_rel_diff']:.3g}"


def render(report: dict[str, Any]) -> str:
    out = [headline(report)]
    if report["outputs"]:
        rows = [(o["path"], o["kind"], short_hash(o["original"]) if o["original"] else "-",
                 short_hash(o["reproduction"]) if o["reproduction"] else "-", o["change"])
                for o in report["outputs"]]
        out += ["", table(("OUTPUT", "KIND", "ORIGINAL", "REPRODUCTION", "CHANGE"), rows)]
    if report["metrics"]:
        rows = [(m["key"], value_text(m["original"]), value_text(m["reproduction"]),
                 _diff_text(m), m["change"]) for m in report["metrics"]]
        out += ["", table(("METRIC", "ORIGINAL", "REPRODUCTION", "MAX REL DIFF", "CHANGE"),
                          rows)]
    skipped = [f"  {o['path']}: {o['why']}" for o in report["not_compared"]["outputs"]]
    skipped += [f"  {m['key']}: {m['why']}" for m in report["not_compared"]["metrics"]]
    if skipped:
        out += ["", "not compared:", *skipped]
    if report["reasons"]:
        out += ["", "likely reasons:"] + [f"  - {r}" for r in report["reasons"]]
    if report.get("log_tail"):
        out += ["", "the reproduction's output ended with:"]
        out += [f"  | {line}" for line in report["log_tail"]]
    return "\n".join(out)


@click.command()
@click.argument("run")
@click.option("--in", "into", metavar="DIR", type=click.Path(file_okay=False),
              help="Reproduce in DIR (empty or new, outside the project; kept) instead of a "
                   "temporary folder.")
@click.option("--rtol", type=float, default=1e-6, show_default=True, callback=_rtol,
              help="Relative tolerance for metrics: |a-b| / max(|a|,|b|).")
@click.option("--ignore", "ignore", metavar="GLOB", multiple=True,
              help="Leave outputs or metrics matching GLOB out of the comparison "
                   "(repeatable).")
@click.option("--keep", is_flag=True, help="Keep the temporary folder and say where it is.")
@click.option("--show-output", is_flag=True,
              help="Show the command's output as it runs (on stderr with --json).")
@json_option
@pass_state
def reproduce(state: AppState, run: str, into: str | None, rtol: float,
              ignore: tuple[str, ...], keep: bool, show_output: bool, as_json: bool) -> None:
    """Re-run RUN on the exact code, configs and inputs it read, under capture, and say
    whether it reproduced: outputs by hash, metrics within --rtol.

    The files come from the object store (a version only referenced is taken from the
    project when the file there still has its hash; otherwise this refuses). The command
    runs with the same argv and project-relative cwd, this shell's environment and the
    run's recorded env: params, in a scratch folder watched by an agent of its own. The
    reproduction becomes a run of this catalog (noted "reproduction of run N"), so
    `onlooker diff N M` compares the two. Exit 0 when it reproduced (exactly or within
    tolerance), 1 when it differs or cannot be reproduced."""
    from onlooker.agent.reproduce import reproduce as do_reproduce

    say = (lambda line: note(line)) if not as_json else (lambda line: None)
    with state.writable_catalog() as catalog:
        run_id = run_ref_id(catalog, run)
        saved = None
        if show_output and as_json:
            # stdout is the report's: the command's output goes to stderr meanwhile
            sys.stdout.flush()
            saved = os.dup(1)
            os.dup2(2, 1)
        try:
            report = do_reproduce(catalog, run_id, into=into, rtol=rtol, ignore=ignore,
                                  keep=keep, quiet=not show_output, say=say)
        except (StoreError, AgentError) as err:
            raise CliError(str(err)) from err
        finally:
            if saved is not None:
                os.dup2(saved, 1)
                os.close(saved)
    if as_json:
        emit_json(report)
    else:
        emit(render(report))
        where = (f"its files are in {report['folder']}" if report["kept"]
                 else "the scratch folder was removed (--keep keeps it)")
        note(f"the reproduction is run {report['run']}: `onlooker diff {report['original']}"
             f" {report['run']}` compares them; {where}")
    if report["verdict"] == "differs":
        raise CliError(f"run {report['original']} did not reproduce", exit_code=1)
