"""What a Slurm cluster offers and what the sweep's tasks are doing there (sinfo, squeue).

    from lib.study import cluster
    offer = cluster.partition("debug")        # its nodes' CPUs, memory, GPUs, time limit
    cluster.check_request(offer, gpus=1, cpus=8, mem_gb=32, minutes=240)  # ClusterRefusal
    watcher = cluster.SqueueWatcher()         # task states and pending reasons, no sacct

lib.study.slurm imports this module when it submits, not for --help.
"""

from __future__ import annotations

import re
import subprocess
import time
from dataclasses import dataclass
from typing import Any

from submitit.slurm.slurm import SlurmInfoWatcher

# Pending reasons that do not clear while the job waits: the request exceeds what the
# partition allows, or the nodes it needs are down or drained. Waiting on them is forever.
NEVER_CLEARS = {
    "PartitionConfig": "the request exceeds the partition's configuration",
    "PartitionTimeLimit": "--time exceeds the partition's time limit",
    "PartitionNodeLimit": "the node count exceeds the partition's limit",
    "ReqNodeNotAvail": "the nodes it needs are down, drained or reserved",
    "BadConstraints": "no node satisfies the request",
    "InvalidAccount": "the account is not valid",
    "InvalidQOS": "the QOS is not valid",
    "DependencyNeverSatisfied": "a dependency can never be satisfied",
}
# squeue prints some reasons as their description rather than their name (Slurm 22.05).
_DESCRIBED = {"Nodes required for job are DOWN, DRAINED": "ReqNodeNotAvail"}


class ClusterRefusal(ValueError):
    """A cluster flag the cluster cannot satisfy (one line: the flag and what it offers)."""


def _slurm(*command: str) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise ClusterRefusal(f"{command[0]} failed: {error}") from None
    if done.returncode:
        last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise ClusterRefusal(f"{' '.join(command[:2])} failed: {last}")
    return done.stdout


def gpu_count(gres: str) -> int:
    """GPUs in a node's sinfo gres: 'gpu:a100:4(S:0-1),tmpdisk:100' -> 4; '(null)' -> 0."""
    total = 0
    for item in gres.split(","):
        fields = re.sub(r"\(.*?\)", "", item).strip().split(":")
        if fields[0] == "gpu":
            total += int(fields[-1]) if len(fields) > 1 and fields[-1].isdigit() else 1
    return total


def _minutes(limit: str) -> float:
    """sinfo's time limit ('infinite', '30:00', '1-00:00:00') in minutes."""
    if limit in ("infinite", "UNLIMITED", "n/a", "NONE"):
        return float("inf")
    days, _, clock = limit.rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    h, m, s = ([0] * (3 - len(parts)) + parts) if len(parts) > 1 else (0, parts[0], 0)
    return int(days or 0) * 1440 + h * 60 + m + s / 60


@dataclass
class Partition:
    """What one partition offers: the largest node's CPUs, memory and GPUs, its time limit."""

    name: str
    nodes: int
    cpus: int
    mem_gb: float
    gpus: int
    max_minutes: float
    default: bool = False

    def __str__(self) -> str:
        limit = (
            "no time limit"
            if self.max_minutes == float("inf")
            else (f"time limit {self.max_minutes:g} min")
        )
        return (
            f"sinfo: {self.nodes} node(s), at most {self.cpus} CPUs, {self.mem_gb:g} GB and "
            f"{self.gpus} GPUs per node, {limit}"
        )


def partitions() -> dict[str, Partition]:
    """Every partition of the cluster, from one `sinfo` call (one line per node)."""
    found: dict[str, Partition] = {}
    for line in _slurm("sinfo", "-h", "-N", "-o", "%P|%c|%m|%G|%l").splitlines():
        name, cpus, mem, gres, limit = line.strip().split("|")
        default, name = name.endswith("*"), name.rstrip("*")
        cpus_n, mem_gb = int(cpus.rstrip("+")), round(int(mem.rstrip("+")) / 1024, 1)
        p = found.setdefault(name, Partition(name, 0, 0, 0.0, 0, _minutes(limit), default))
        p.nodes += 1
        p.cpus, p.mem_gb = max(p.cpus, cpus_n), max(p.mem_gb, mem_gb)
        p.gpus = max(p.gpus, gpu_count(gres))
    return found


def partition(name: str | None) -> Partition:
    """The named partition, or the cluster's default one; ClusterRefusal if there is none."""
    found = partitions()
    names = ", ".join(sorted(found)) or "none"
    if name is None:
        default = [p for p in found.values() if p.default]
        if not default:
            raise ClusterRefusal(
                f"the cluster has no default partition: pass --partition ({names})"
            )
        return default[0]
    if name not in found:
        raise ClusterRefusal(f"--partition {name}: no such partition; choose one of: {names}")
    return found[name]


def check_request(offer: Partition, gpus: int, cpus: int, mem_gb: float, minutes: int) -> None:
    """Refuse, naming the flag, what no node of the partition can give (it would pend forever)."""
    where = f"partition {offer.name!r}"
    if gpus > offer.gpus:
        has = "has no GPUs" if offer.gpus == 0 else f"has at most {offer.gpus} GPUs per node"
        hint = "; pass --cpu-only (or --gpus-per-task 0)" if offer.gpus == 0 else ""
        raise ClusterRefusal(f"--gpus-per-task {gpus}: {where} {has} ({offer}){hint}")
    if cpus > offer.cpus:
        raise ClusterRefusal(f"--cpus-per-task {cpus}: more than any node of {where} has ({offer})")
    if mem_gb > offer.mem_gb:
        raise ClusterRefusal(f"--mem-gb {mem_gb:g}: more than any node of {where} has ({offer})")
    if minutes > offer.max_minutes:
        raise ClusterRefusal(f"--time {minutes}: above the time limit of {where} ({offer})")


def never_clears(reason: str) -> str | None:
    """The name of a pending reason that never clears ('ReqNodeNotAvail'), else None."""
    for text, name in _DESCRIBED.items():
        if reason.startswith(text):
            return name
    name = reason.split(",")[0].strip()
    return name if name in NEVER_CLEARS else None


def accounting() -> bool:
    """Whether sacct works here (accounting storage configured)."""
    config = _slurm("scontrol", "show", "config")
    match = re.search(r"AccountingStorageType\s*=\s*(\S+)", config)
    return bool(match) and match.group(1) != "accounting_storage/none"


def cancel(job_id: str) -> None:
    subprocess.run(["scancel", job_id], capture_output=True, timeout=60)


class SqueueWatcher(SlurmInfoWatcher):
    """submitit's job-state watcher on squeue instead of sacct: it works without accounting
    storage (sacct then fails and submitit warns on every poll), and it knows why a task pends.

    squeue lists finished jobs for MinJobAge (300 s by default; the sweep polls every 30 s);
    a task that left the list before it was seen finishing reads as GONE (done: its result
    file, or its absence, says the rest)."""

    def _make_command(self) -> list[str] | None:
        to_check = {x.split("_")[0] for x in self._registered - self._finished}
        if not to_check:
            return None
        fields = "%i|%T|%N|%r"  # -r: one line per array task, pending ones included
        return ["squeue", "-h", "-r", "-t", "all", "-o", fields, "-j", ",".join(sorted(to_check))]

    def read_info(self, string: bytes | str) -> dict[str, dict[str, Any]]:
        text = string.decode() if isinstance(string, bytes) else string
        info: dict[str, dict[str, Any]] = {}
        for line in text.splitlines():
            fields = line.strip().split("|", 3)
            if len(fields) == 4:
                job_id, state, nodes, reason = fields
                info[job_id] = {
                    "JobID": job_id,
                    "State": state,
                    "NodeList": nodes,
                    "Reason": reason,
                }
        for job_id in self._registered - self._finished - info.keys():
            if job_id in self._info_dict:  # seen before, no longer listed
                info[job_id] = {**self._info_dict[job_id], "State": "GONE"}
        return info

    def update(self) -> None:
        """One squeue call; a failing one (slurmctld busy) is retried at the next poll, quietly
        (submitit would log a warning per call)."""
        command = self._make_command()
        if command is None:
            return
        self._num_calls += 1
        try:
            output = subprocess.run(command, capture_output=True, timeout=60).stdout
        except (OSError, subprocess.TimeoutExpired):
            output = b""
        if output:
            self._info_dict.update(self.read_info(output))
        self._last_status_check = time.time()
        for job_id in self._registered - self._finished:
            if self.is_done(job_id, mode="cache"):
                self._finished.add(job_id)
