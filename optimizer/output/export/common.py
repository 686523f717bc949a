"""What every runtime export shares: the plan cut into serving instances (one per EDP copy),
each plan GPU's seat (instance, runtime rank, runtime EP rank) under a runtime's rank rule, the
``Launch``/``Export`` results, launch.sh and README.txt text, and writing the files.

Security: every plan-derived string that reaches launch.sh is a shell word quoted with
``shlex.quote`` (``q``) or a comment with control characters escaped (``comment``); output
files are written only inside the chosen folder, never through a symbolic link.
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from optimizer.costs.layout import GpuSlot
from optimizer.errors import InputError
from optimizer.inputs.files import write_atomic
from optimizer.plan.files import PlanData, printable
from optimizer.plan.rules import ranges

# ----------------------------------------------------------------------------------------------
# Instances and runtime ranks


@dataclass(frozen=True)
class Split:
    """The plan cut into independent serving instances (one per EDP copy)."""

    count: int
    tp: int                       # attention TP inside an instance
    dp: int                       # attention DP inside an instance
    instance: dict[int, int]      # plan rank -> instance
    local_dp: dict[int, int]      # plan rank -> attention DP rank inside its instance

    @property
    def moe_world(self) -> int:
        return self.tp * self.dp


def split_instances(p: PlanData, runtime: str) -> Split:
    """EDP copies as separate instances; InputError when a copy would cut an attention TP group."""
    d = p.deg
    if d.edp == 1:
        return Split(1, d.tp, d.dp, {g.rank: 0 for g in p.gpus}, {g.rank: g.dp_rank for g in p.gpus})
    copy_of: dict[tuple[int, int], set[int]] = {}
    for g in p.gpus:
        copy_of.setdefault((g.tp_rank, g.dp_rank), set()).add(g.edp_rank)
        copy_of.setdefault((-1, g.dp_rank), set()).add(g.edp_rank)
    if any(len(v) > 1 for v in copy_of.values()):
        raise InputError(
            f"{runtime}: the plan's {d.edp} expert-data-parallel copies (EDP={d.edp} of EP{d.ep} x "
            f"ETP{d.etp}) cut through attention TP{d.tp} groups (or differ between stages); "
            f"{runtime} has no EDP inside one server, so it cannot be split into separate instances")
    dps: dict[int, set[int]] = {}
    for g in p.gpus:
        dps.setdefault(g.edp_rank, set()).add(g.dp_rank)
    local = {}
    for g in p.gpus:
        local[g.rank] = sorted(dps[g.edp_rank]).index(g.dp_rank)
    return Split(d.edp, d.tp, d.dp // d.edp, {g.rank: g.edp_rank for g in p.gpus}, local)


@dataclass(frozen=True)
class Seat:
    """Where a plan GPU sits in a runtime instance."""

    instance: int
    rank: int          # global rank inside the instance
    ep_rank: int       # the EP rank the runtime gives it


RankRule = Callable[[GpuSlot, Split, PlanData], tuple[int, int]]


def seats(p: PlanData, split: Split, rule: RankRule) -> dict[int, Seat]:
    out = {}
    for g in p.gpus:
        rank, ep_rank = rule(g, split, p)
        out[g.rank] = Seat(split.instance[g.rank], rank, ep_rank)
    world = len(p.gpus) // split.count
    for k in range(split.count):
        ranks = sorted(s.rank for s in out.values() if s.instance == k)
        if ranks != list(range(world)):   # a bug in a rank rule, not bad input
            raise RuntimeError(f"rank rule gives instance {k} ranks {ranks[:8]}..., not 0..{world - 1}")
    return out


def node_fill_notes(world: int, gpn: int) -> list[str]:
    if world > gpn and world % gpn:
        return [f"an instance of {world} GPUs does not fill whole {gpn}-GPU nodes: the launchers "
                "assume the same GPU count on every node"]
    return []


def seat_warnings(p: PlanData, split: Split, placed: dict[int, Seat], runtime: str,
                  note: str = "") -> list[str]:
    """Differences between the runtime's rank order and the plan's GPU layout."""
    warnings = []
    wrong = [g for g in p.gpus if placed[g.rank].ep_rank != g.ep_rank]
    if wrong and p.deg.ep > 1:
        g = wrong[0]
        warnings.append(
            f"{runtime} gives {len(wrong)} of {len(p.gpus)} GPUs another EP rank than the plan "
            f"(plan rank {g.rank}: plan EP rank {g.ep_rank}, {runtime} EP rank {placed[g.rank].ep_rank})"
            f"{note}: each EP rank still holds the plan's experts, but on other GPUs than planned, "
            "so the plan's intra-node expert groups may differ")
    world = len(p.gpus) // split.count
    gpn = p.gpus_per_node

    def runtime_node(s: Seat) -> tuple[int, int]:
        return (s.instance, s.rank // gpn) if world >= gpn else (0, (s.instance * world + s.rank) // gpn)

    to_rt: dict[int, set] = {}
    to_plan: dict[tuple[int, int], set] = {}
    for g in p.gpus:
        node = runtime_node(placed[g.rank])
        to_rt.setdefault(g.node, set()).add(node)
        to_plan.setdefault(node, set()).add(g.node)
    if any(len(v) > 1 for v in to_rt.values()) or any(len(v) > 1 for v in to_plan.values()):
        warnings.append(
            f"{runtime} fills nodes in its own rank order, which groups GPUs onto nodes differently "
            "than the plan's gpus list: groups the plan keeps inside a node may cross nodes "
            "(see the rank map in README.txt)")
    return warnings


def instance_devices(p: PlanData, split: Split, placed: dict[int, Seat]) -> list[str | None]:
    """Per instance 'node:gpu,gpu,...' in runtime rank order, or None when it spans nodes."""
    out: list[str | None] = []
    for k in range(split.count):
        members = sorted((s.rank, r) for r, s in placed.items() if s.instance == k)
        nodes = {p.gpus[r].node for _, r in members}
        if len(nodes) != 1:
            out.append(None)
            continue
        out.append(f"{nodes.pop()}:" + ",".join(str(p.gpus[r].local_rank) for _, r in members))
    return out


def rank_map_text(p: PlanData, split: Split, placed: dict[int, Seat]) -> str:
    lines = []
    for k in range(split.count):
        members = sorted((s.rank, r) for r, s in placed.items() if s.instance == k)
        plan_ranks = [r for _, r in members]
        if plan_ranks == list(range(plan_ranks[0], plan_ranks[0] + len(plan_ranks))):
            desc = f"runtime ranks 0..{len(members) - 1} = plan ranks {plan_ranks[0]}..{plan_ranks[-1]}"
        else:
            desc = "runtime rank:plan rank " + " ".join(f"{rr}:{r}" for rr, r in members)
        gpus = sorted({(p.gpus[r].node, p.gpus[r].local_rank) for r in plan_ranks})
        nodes: dict[int, list[int]] = {}
        for n, l in gpus:
            nodes.setdefault(n, []).append(l)
        where = "; ".join(f"node {n} GPUs {ranges(ls)}" for n, ls in sorted(nodes.items()))
        lines.append(f"  instance {k}: {desc} ({where})")
    return "\n".join(lines)

# ----------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class Launch:
    """One launch command; ``when`` is a bash condition on NODE_RANK for multi-node variants."""

    command: str
    when: str | None = None
    label: str = ""


@dataclass
class Export:
    fmt: str
    files: dict[str, str]
    launches: list[Launch]
    env: dict[str, str]
    instances: int
    gpus_per_instance: int | None     # None for a disaggregated plan: per pool in ``pools``
    settings: dict
    warnings: list[str]
    notes: list[str] = field(default_factory=list)
    needs: tuple[str, ...] = ()       # shell variables the launch needs besides MODEL
    instance_gpus: list[str | None] = field(default_factory=list)  # CUDA_VISIBLE_DEVICES per
                                                                    # instance (None: multi-node)
    pools: list[dict] = field(default_factory=list)   # disaggregated plans: one entry per pool

    @property
    def variables(self) -> tuple[str, ...]:
        """Shell variables launch.sh needs: MODEL, the multi-node ones, INSTANCE; for a
        disaggregated plan ROLE and REPLICA per server, NODES for the router."""
        if self.pools:
            return ("ROLE", "REPLICA", "MODEL") + self.needs + ("NODES",)
        return ("MODEL",) + self.needs + (("INSTANCE",) if self.instances > 1 else ())

    def summary(self, out_dir: Path, written: list[Path]) -> dict:
        here = str(out_dir.resolve())
        return {"format": self.fmt, "output_dir": str(out_dir), "files": [str(w) for w in written],
                "instances": self.instances, "gpus_per_instance": self.gpus_per_instance,
                "settings": self.settings, "env": self.env, "variables": list(self.variables),
                "launch": [{"when": lc.when, "command": lc.command.replace("$HERE", here)}
                           for lc in self.launches],
                "warnings": self.warnings, "notes": self.notes,
                **({"pools": self.pools} if self.pools else {})}


def q(value: object) -> str:
    """``value`` as one shell word."""
    return shlex.quote(str(value))


def comment(text: str) -> str:
    """A one-line comment body: shell words quoted, nothing that can end the line."""
    return printable(" ".join(q(word) for word in text.split(" ")))


def shell_command(prog: list[str], args: list[tuple[str, object | None]]) -> str:
    """A multi-line shell command: prog, then one flag (and value) per line."""
    parts = [" ".join(prog)]
    for flag, value in args:
        parts.append(flag if value is None else f"{flag} {value}")
    return " \\\n    ".join(parts)


def launch_sh(ex: Export, title: str) -> str:
    lines = ["#!/usr/bin/env bash", f"# {comment(title)}", "# written by moeopt export; see README.txt",
             "set -euo pipefail", 'HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"',
             'MODEL="${MODEL:?set MODEL to the model path or name}"']
    for var in ex.needs:
        lines.append(f'{var}="${{{var}:?set {var}}}"')
    if ex.instances > 1:
        lines.append(f"# run once per instance: INSTANCE=0..{ex.instances - 1} ({ex.instances} "
                     f"instances of {ex.gpus_per_instance} GPUs; rank map in README.txt)")
        lines.append('INSTANCE="${INSTANCE:?set INSTANCE to 0..' + str(ex.instances - 1) + '}"')
        lines.append('case "$INSTANCE" in')
        for k, devices in enumerate(ex.instance_gpus):
            if devices is None:
                lines.append(f"  {k}) ;;  # spans nodes: GPUs per node in README.txt")
            else:
                node, ids = devices.split(":")
                lines.append(f"  {k}) export CUDA_VISIBLE_DEVICES={ids} ;;  # on node {node}")
        lines.append(f'  *) echo "INSTANCE must be 0..{ex.instances - 1}" >&2; exit 2 ;;')
        lines.append("esac")
        lines.append('PORT="${PORT:-$((30000 + INSTANCE))}"')
    for key, value in ex.env.items():
        lines.append(f"export {key}={q(value)}")
    if len(ex.launches) == 1:
        lines.append(ex.launches[0].command)
    else:
        for i, lc in enumerate(ex.launches):
            if lc.when:
                lines.append(f"{'if' if i == 0 else 'elif'} [ {lc.when} ]; then")
            else:
                lines.append("else")
            lines.append("  " + lc.command.replace("\n", "\n  "))
        lines.append("fi")
    return "\n".join(lines) + "\n"


def readme(p: PlanData, ex: Export, title: str, body: list[str], rank_map: str | None) -> str:
    d = p.deg
    e = p.experts
    title = printable(title)
    lines = [title, "=" * len(title), "",
             f"plan: {printable(p.source)} (instance {printable(p.name)})",
             f"moeopt degrees: TP{d.tp} PP{d.pp} DP{d.dp} | MoE EP{d.ep} ETP{d.etp} EDP{d.edp} | "
             f"{d.num_gpus} GPUs, {p.gpus_per_node} per node",
             f"layers: {e.num_layers} ({len(e.moe_layers)} MoE), stages: "
             f"{[len(s) for s in p.stages]}, experts: {e.num_experts} logical, {e.num_slots} slots "
             f"per MoE layer ({e.redundant} redundant), {e.slots_per_rank} per EP rank", ""]
    lines.append(f"instances to launch: {ex.instances} (each {ex.gpus_per_instance} GPUs)")
    if ex.settings:
        lines.append("runtime settings: " + json.dumps(ex.settings))
    if ex.env:
        lines.append("environment: " + " ".join(f"{k}={v}" for k, v in ex.env.items()))
    lines += ["", f"launch (launch.sh; set {', '.join(ex.variables)}):"]
    for lc in ex.launches:
        if lc.label or lc.when:
            lines.append(f"  # {lc.label or lc.when}")
        lines.append("  " + lc.command.replace("\n", "\n  "))
    lines += [""] + body
    if ex.warnings:
        lines += ["", "WARNINGS:"] + [f"  - {w}" for w in ex.warnings]
    if ex.notes:
        lines += ["", "notes:"] + [f"  - {n}" for n in ex.notes]
    if rank_map:
        lines += ["", "rank map (runtime rank -> plan GPU):", rank_map]
    return "\n".join(lines) + "\n"


def uneven_stages(p: PlanData) -> bool:
    return len({len(s) for s in p.stages}) > 1


def stage_partition(p: PlanData) -> str:
    return ",".join(str(len(s)) for s in p.stages)


def node_count(world: int, gpn: int) -> int:
    return -(-world // gpn)

# ----------------------------------------------------------------------------------------------
# Helpers, dispatch


def unranges(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        if "-" in part:
            a, b = part.split("-")
            out.extend(range(int(a), int(b) + 1))
        elif part:
            out.append(int(part))
    return out


def write_export(ex: Export, out_dir: Path, root: Path | None = None) -> list[Path]:
    """Write every file atomically inside ``out_dir``; launch.sh becomes executable.
    ``root`` (default: ``out_dir``) is the folder every written path must stay inside, and no
    folder between ``root`` and the files, nor a file, may be a symbolic link (which could
    send the writing elsewhere)."""
    root = out_dir if root is None else root
    _refuse_links(root, out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--output {out_dir}: exists and is not a directory")
    mask = os.umask(0)
    os.umask(mask)
    written = []
    for name, text in ex.files.items():
        path = out_dir / name
        _refuse_links(out_dir, path.parent)   # a pool's sub-folder (disaggregated plans)
        if path.is_symlink():
            raise InputError(f"--output {out_dir}: {name} is a symbolic link; moeopt export does "
                             "not write through links")
        write_atomic(path, text)
        # write_atomic leaves mkstemp's 0600; runtimes often run as another user
        os.chmod(path, (0o777 if name.endswith(".sh") else 0o666) & ~mask)
        written.append(path)
    return written


def _refuse_links(root: Path, out_dir: Path) -> None:
    """InputError unless ``out_dir`` is ``root`` or below it by plain names (no ``..``) and no
    existing folder below ``root`` on the way is a symbolic link (nor ``root`` itself when it
    is a default parent folder rather than the folder the user named)."""
    try:
        rel = out_dir.relative_to(root)
    except ValueError:
        raise InputError(f"output folder {str(out_dir)!r}: not inside {str(root)!r}") from None
    if ".." in rel.parts:
        raise InputError(f"output folder {str(out_dir)!r}: '..' leaves {str(root)!r}")
    if rel.parts and root.is_symlink():   # the default ./results/ must be a real folder
        raise InputError(f"output folder {str(root)!r}: is a symbolic link; moeopt export "
                         "creates its folders only inside the working directory")
    here = root
    for part in rel.parts:
        here = here / part
        if here.is_symlink():
            raise InputError(f"output folder {str(here)!r}: is a symbolic link; moeopt export "
                             f"creates its folders only inside {str(root)!r}")
