"""The slurm backend on a real single-node Slurm (tools/slurm-local): sbatch, squeue, arrays,
scancel, the time-limit requeue and the refusals of flags the cluster cannot satisfy.

The session fixture starts that Slurm when the tests run as root (CI does), installing
Debian's packages on first use, and stops it at the end. Without root, or with neither
Slurm nor apt-get here, the tests skip with that reason (pytest -rs prints it).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from lib.core.utils import project_root
from lib.study import compare, results, slurm, sweep

TOOL = project_root() / "tools" / "slurm-local"
STATE = Path(os.environ.get("SLURM_LOCAL_DIR", "/var/lib/slurm-local"))
MARK = "written by sparse-vp tools/slurm-local"
# Small tasks, so that two could run at once on a 2-core node (--array-parallelism decides).
TASK = ["--cpus-per-task", "1", "--mem-gb", "1", "--poll", "1"]
# Slurm lists finished jobs for 10 minutes: each session names its own (job name = study).
RUN = os.getpid()


@pytest.fixture(scope="session")
def local_slurm():
    """A running local Slurm for the session (started by tools/slurm-local, stopped after)."""
    if os.geteuid() != 0:
        pytest.skip("a local Slurm needs root to start (sudo tools/slurm-local start)")
    if shutil.which("slurmctld") is None and shutil.which("apt-get") is None:
        pytest.skip("no Slurm packages and no apt-get to install them (slurmctld, munge)")
    conf = Path("/etc/slurm/slurm.conf")
    if conf.exists() and MARK not in conf.read_text():
        pytest.skip(f"{conf} belongs to this machine's own Slurm: tools/slurm-local leaves it")
    ours = (STATE / "slurmctld.pid").exists()  # started before the tests: left running
    start = time.perf_counter()
    done = subprocess.run([str(TOOL), "start"], capture_output=True, text=True)
    print(done.stdout, end="")
    assert done.returncode == 0, f"tools/slurm-local start failed:\n{done.stdout}{done.stderr}"
    print(f"[test] local Slurm up in {time.perf_counter() - start:.0f} s")
    yield
    if not ours:
        subprocess.run([str(TOOL), "stop"], check=True)


def _params(tmp_path: Path, tickets: Path, study: str, epochs: list[int]) -> Path:
    """One tiny VP run on sklearn's digits per entry of `epochs`: one notebook execution each
    (tests/test_slurm.py's grid, cut to one n-shot and seed)."""
    params = {
        "study": study,
        "defaults": {
            "pretrained_dir": str(tickets),
            "dataset": "digits",
            "device": "cpu",
            "train_pool": 150,
            "max_test": 100,
            "max_val": 30,
            "method": "vp",
            "n_shot": 5,
            "seed": 1,
        },
        "grid": {"epochs": epochs},
        "report": False,
    }
    path = tmp_path / f"{study}.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def _jobs(study: str) -> list[str]:
    """Array job ids of the study's submissions that Slurm still lists (MinJobAge)."""
    out = subprocess.run(
        ["squeue", "-h", "-t", "all", "-n", f"sparse-vp-{study}", "-o", "%F"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sorted(set(out.split()), key=int)


def _tasks(job: str) -> dict[int, dict[str, str]]:
    """scontrol's fields of each array task of `job`, by task index."""
    out = subprocess.run(
        ["scontrol", "-o", "show", "job", job], capture_output=True, text=True, check=True
    ).stdout
    tasks = {}
    for line in out.splitlines():
        fields = dict(re.findall(r"(\w+)=(\S*)", line))
        ids = fields.get("ArrayTaskId", "0").split("%")[0]  # pending ones: "1-3%1"
        low, _, high = ids.partition("-")
        for index in range(int(low), int(high or low) + 1):
            tasks[index] = fields
    return tasks


def _in_thread(argv: list[str]) -> tuple[threading.Thread, list[int]]:
    """sweep.main(argv) in a thread, so that the test can act on Slurm meanwhile."""
    code: list[int] = []
    thread = threading.Thread(target=lambda: code.append(sweep.main(argv)), daemon=True)
    thread.start()
    return thread, code


def _wait_for(condition, what: str, seconds: float = 240) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"no {what} after {seconds} s"
        time.sleep(0.3)


def test_records_equal_the_local_backend_one_task_at_a_time_cancel_keeps_finished_ones(
    local_slurm, tmp_path, tickets, monkeypatch, capsys, caplog
):
    """One submission of two tasks, one at a time (--array-parallelism 1), cancelled with
    scancel while the second runs; a re-run completes it, a third submits nothing."""
    study = f"slurmreal{RUN}"
    params = str(_params(tmp_path, tickets, study, [1, 2]))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the same arithmetic in both backends
    monkeypatch.setenv("SPARSE_VP_OUTPUTS", str(tmp_path / "local"))
    assert sweep.main([params, "--backend", "local", "--workers", "2"]) == 0
    monkeypatch.setenv("SPARSE_VP_OUTPUTS", str(tmp_path / "slurm"))
    flags = [params, "--backend", "slurm", *TASK, "--array-parallelism", "1"]
    thread, code = _in_thread(flags)
    _wait_for(lambda: len(_jobs(study)) == 1, "job in squeue")
    (job,) = _jobs(study)
    _wait_for(lambda: _tasks(job)[1]["JobState"] == "RUNNING", "second task running")
    subprocess.run(["scancel", job], check=True)
    thread.join(120)
    assert code == [1]
    out, err = capsys.readouterr()
    assert "2 notebooks in 2 slurm tasks on 'debug'" in out
    assert "1 pending (JobArrayTaskLimit)" in out  # the second task waited for the first
    assert "1 done, 0 skipped, 0 failed, 1 cancelled" in out
    assert re.search(rf"CANCELLED \S+: cancelled by Slurm \(task {job}_1\)", out)
    assert len(results.read_records(study)) == 1  # the finished notebook's records stay
    _wait_for(lambda: _tasks(job)[1]["JobState"] == "CANCELLED", "cancelled state")
    first, second = _tasks(job)[0], _tasks(job)[1]
    assert first["JobState"] == "COMPLETED" and second["StartTime"] >= first["EndTime"]

    assert sweep.main(flags) == 0
    out = capsys.readouterr().out
    assert "1 to execute" in out and "1 done, 1 skipped, 0 failed" in out
    a, _ = compare.load_study(str(tmp_path / "local" / study))
    b, _ = compare.load_study(str(tmp_path / "slurm" / study))
    assert len(a) == 2 and compare.compare(a, b)["identical"]

    assert sweep.main(flags) == 0  # everything done: nothing submitted
    out, err2 = capsys.readouterr()
    assert "2 runs in 2 notebooks, 0 to execute" in out and "0 done, 2 skipped" in out
    assert len(_jobs(study)) == 2
    assert "sacct" not in caplog.text + err + err2  # no accounting here: squeue, quietly


def test_a_task_at_its_time_limit_is_requeued_with_what_its_chunk_has_left(
    local_slurm, tmp_path, tickets, outputs, capsys
):
    """Slurm warns a task `signal_delay_s` before its limit with USR2 (submitit's --signal);
    the test sends that warning at once instead of waiting out a limit (within 10 minutes
    of a limit of 5, submitit counts it as a timeout: MAX_REQUEUES bounds them)."""
    study = f"slurmrequeue{RUN}"
    params = str(_params(tmp_path, tickets, study, [1, 2]))
    flags = [params, "--backend", "slurm", *TASK, "--chunk-size", "2", "--time", "5"]
    thread, code = _in_thread(flags)
    runs = outputs / study / "runs"
    done = lambda: [p for p in runs.glob("*.ipynb") if not p.name.startswith(".")]  # noqa: E731
    _wait_for(lambda: len(done()) == 1, "first executed notebook")
    (notebook,) = done()
    stamp = notebook.stat().st_mtime_ns
    name = f"sparse-vp-{study}"
    subprocess.run(["scancel", "--signal", "USR2", "-n", name], check=True)
    thread.join(240)
    assert code == [0]
    assert "2 done, 0 skipped, 0 failed" in capsys.readouterr().out
    assert len(results.read_records(study)) == 2
    assert notebook.stat().st_mtime_ns == stamp  # the finished notebook was not run again
    (job,) = _jobs(study)
    _wait_for(lambda: _tasks(job)[0]["JobState"] == "COMPLETED", "completed state")
    assert _tasks(job)[0]["Restarts"] == "1"
    logs = "".join(p.read_text() for p in (outputs / study / "slurm").rglob("*_log.*"))
    assert f"({slurm.MAX_REQUEUES - 1} remaining timeouts)" in logs  # bounded: submitit counts


def test_a_reason_that_never_clears_stops_the_wait(local_slurm, tmp_path, tickets, outputs, capsys):
    node = subprocess.run(["hostname", "-s"], capture_output=True, text=True).stdout.strip()
    study = f"slurmstuck{RUN}"
    params = str(_params(tmp_path, tickets, study, [1]))
    subprocess.run(["scontrol", "update", f"NodeName={node}", "State=DRAIN", "Reason=test"])
    try:
        assert sweep.main([params, "--backend", "slurm", *TASK]) == 1
    finally:
        subprocess.run(["scontrol", "update", f"NodeName={node}", "State=RESUME"], check=True)
    out = capsys.readouterr().out
    assert re.search(r"task \d+ pends on ReqNodeNotAvail: .*; job \d+ cancelled", out)
    assert "FAILED" in out and not results.read_records(study)
    (job,) = _jobs(study)
    assert _tasks(job)[0]["JobState"] == "CANCELLED"


def test_flags_the_partition_cannot_satisfy_are_one_line_refusals(local_slurm, tmp_path, tickets):
    params = str(_params(tmp_path, tickets, "slurmrefuse", [1]))
    offer = slurm.parse_args([])  # a CPU-only partition: no flags needed
    assert (offer.partition, offer.gpus_per_task) == ("debug", 0)
    assert offer.cpus_per_task == min(8, os.cpu_count()) and 0 < offer.mem_gb <= 32
    for flag, value, says in [
        ("--gpus-per-task", "1", "partition 'debug' has no GPUs"),
        ("--cpus-per-task", "999", "more than any node of partition 'debug' has"),
        ("--mem-gb", "9999", "more than any node of partition 'debug' has"),
        ("--partition", "gpu", "no such partition; choose one of: debug"),
    ]:
        command = [sys.executable, "-m", "lib.sweep", params, "--backend", "slurm", flag, value]
        done = subprocess.run(command, capture_output=True, text=True, cwd=project_root())
        assert done.returncode == 2, done.stderr
        assert done.stderr.count("\n") == 1 and f"error: {flag} {value}: {says}" in done.stderr
        assert "sinfo: 1 node(s), at most" in done.stderr or flag == "--partition"
