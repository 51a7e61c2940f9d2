"""Real ML libraries from the registry, held to the truth of what each run did.

Each project in `libprojects` uses a library the way its docs show (DVCLive in a
git + DVC repo, MLflow's file and sqlite stores, Hydra overrides and a multirun,
a TensorBoard writer, W&B offline, a papermill notebook, a make pipeline, a job
script from outside the project) and states exactly what its runs read, wrote and
were given. The test runs it unchanged under the real agent, in both capture tiers,
and asserts that `onlooker show --json` says exactly that: inputs, outputs, code,
params and metric keys; the tools' own files may be anywhere under `meta`.

The libraries are the `libs` extra (`pip install -e '.[libs]'`, which .ci/run does);
a project whose library is missing is skipped. `ONLOOKER_LIBS_REPORT=DIR` writes
each project's and tier's differences (and the runs as shown) as JSON there.
"""

from __future__ import annotations

import os
import shutil

import pytest

from . import libprojects as lp

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("tier", ["privileged", "unprivileged"])
@pytest.mark.parametrize("name", list(lp.PROJECTS))
def test_library_run_is_captured_exactly(tmp_path, name, tier):
    build, modules, programs = lp.PROJECTS[name]
    if tier == "privileged" and os.geteuid() != 0:
        pytest.skip("the privileged tiers need root")
    for module in modules:
        pytest.importorskip(module)
    for program in programs:
        if shutil.which(program) is None:
            pytest.skip(f"{program} is not installed")
    project, outside = tmp_path / "proj", tmp_path / "jobs"
    project.mkdir()
    outside.mkdir()
    env = lp.run_env(tmp_path)
    spec = build(project, outside)
    runs = lp.capture(project, spec, tier, env)
    lp.check(name, tier, spec.wants, runs)
