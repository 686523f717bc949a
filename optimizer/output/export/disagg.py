"""Disaggregated plans (a prefill pool and a decode pool, ``optimizer.plan.pools``) to launches:
one server per pool replica, each with the runtime's own prefill/decode flags and the settings
its pool's figures assume, and the router that pairs them.

Layout. Replica ``k`` of a pool of ``g`` GPUs per replica starts at the global rank that
``pools.replica_first_ranks`` gives it; its GPUs are ``first .. first+g-1``, on node
``first // gpn`` (``g`` divides or is a multiple of the GPUs per node ``gpn``, so a replica
smaller than a node never straddles two). Each replica is ONE server of exactly ``g`` GPUs: a
replica whose plan has EDP copies (several servers) is refused, its copies belong in the
pool's ``replicas``.

Ports. Several replicas may share a node, so every port a server opens is a base plus
``local``, the node-local index of the replica's first GPU: replicas on one node hold disjoint
GPUs, so their ``local`` values differ by at least ``g``, and a server that opens one port per
attention-DP rank (vLLM's NIXL side channel, ``base + dp_rank``, ``dp <= g``) stays inside its
own range. Bases: HTTP ``30000``, SGLang bootstrap ``8998``, SGLang engine-info ``6789``, vLLM
NIXL side channel ``5600``, vLLM DP RPC ``13345``; the router listens on ``8000``.

KV transfer: NIXL in every runtime (SGLang ``--disaggregation-transfer-backend nixl``, vLLM
``NixlConnector`` with ``kv_role`` ``kv_producer``/``kv_consumer``, TensorRT-LLM
``cache_transceiver_config.backend: NIXL``), the one backend all three share.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from optimizer.costs.expert_loads import expert_loads
from optimizer.errors import InputError
from optimizer.inputs.schema import Instance
from optimizer.output.export.common import Export, Launch, comment, q, shell_command, split_instances
from optimizer.output.export.csv import export_csv
from optimizer.output.export.launch_settings import (
    RUNTIME_VERSIONS,
    LaunchSettings,
    launch_settings,
    version_line,
)
from optimizer.output.export.sglang import export_sglang
from optimizer.output.export.trtllm import export_trtllm
from optimizer.output.export.vllm import export_vllm
from optimizer.plan.pools import Pool, read_pools, replica_first_ranks

# The routers the exports launch in front of the pools (separate PyPI packages; their argument
# parsers are checked like the runtimes', tests/output/test_runtime_parsers.py).
ROUTER_VERSIONS = {"sglang": ("sglang-router", "0.3.2"), "vllm": ("vllm-router", "0.1.17")}
PORT_BASE = {"http": 30000, "bootstrap": 8998, "engine_info": 6789, "nixl": 5600,
             "dp_rpc": 13345}
ROUTER_PORT = 8000
TRTLLM_ROLE = {"prefill": "context_servers", "decode": "generation_servers"}


@dataclass(frozen=True)
class ReplicaSeat:
    """Where one replica of a pool sits on the cluster."""

    role: str
    index: int          # replica number inside its pool
    first_rank: int     # global rank of its first GPU
    gpus: int           # GPUs of the replica
    gpus_per_node: int

    @property
    def node(self) -> int:
        return self.first_rank // self.gpus_per_node

    @property
    def local(self) -> int:
        """Node-local index of its first GPU (0 for a replica of whole nodes)."""
        return self.first_rank % self.gpus_per_node

    def port(self, kind: str) -> int:
        return PORT_BASE[kind] + self.local


def replica_seats(pools: list[Pool], gpn: int) -> dict[str, list[ReplicaSeat]]:
    firsts = replica_first_ranks({p.role: (p.replicas, p.gpus_per_replica) for p in pools})
    return {p.role: [ReplicaSeat(p.role, k, first, p.gpus_per_replica, gpn)
                     for k, first in enumerate(firsts[p.role])] for p in pools}


def export_disagg(doc: dict, fmt: str, out_dir: Path, inst: Instance | None = None,
                  source: str = "(in memory)") -> Export:
    """The files and launches of a disaggregated plan in ``fmt``; InputError (exit 2) when
    the runtime cannot express it (Megatron-Core: training has no prefill/decode pools)."""
    if fmt == "megatron":
        raise InputError(f"--to=megatron: plan {source} is disaggregated (prefill and decode "
                         "pools); Megatron-Core trains and has no prefill/decode serving: export "
                         "it --to sglang, vllm, trtllm or csv")
    return export_pools(read_pools(doc, inst, source), doc, fmt, out_dir, inst, source)


def export_pools(pools: list[Pool], doc: dict, fmt: str, out_dir: Path,
                 inst: Instance | None = None, source: str = "(in memory)") -> Export:
    """``export_disagg`` of pools already read (``pools.read_pools``)."""
    if fmt == "megatron":
        return export_disagg(doc, fmt, out_dir, inst, source)   # the one refusal
    # with an instance every pool has its node size; without one a pool's GPU list shows at
    # most its own size, so the largest is taken (and said in the notes)
    gpn = max(p.plan.gpus_per_node for p in pools)
    if inst is None:
        pools = [replace(p, plan=replace(p.plan, gpus_per_node=gpn)) for p in pools]
    seats = replica_seats(pools, gpn)
    if fmt == "csv":
        return _csv(pools, out_dir)
    parts = {p.role: _pool_export(p, i, fmt, out_dir, inst, seats[p.role][0]) for i, p in enumerate(pools)}
    return _compose(doc, fmt, pools, parts, seats, inst is not None)


# ----------------------------------------------------------------------------------------------
# One pool


def pd_args(fmt: str, role: str, pool: Pool, settings: LaunchSettings | None, seat: ReplicaSeat):
    """The prefill/decode flags of one replica of ``pool`` (ports as shell variables that
    launch.sh sets per replica, see the module doc)."""
    d = pool.plan.deg
    if fmt == "sglang":
        args: list[tuple[str, object | None]] = [
            ("--host", "0.0.0.0"), ("--port", '"$PORT"'), ("--disaggregation-mode", role),
            ("--disaggregation-transfer-backend", "nixl")]
        if role == "prefill":
            args.append(("--disaggregation-bootstrap-port", '"$BOOTSTRAP_PORT"'))
        args.append(("--engine-info-bootstrap-port", '"$ENGINE_INFO_PORT"'))
        return args
    if fmt == "vllm":
        kv_role = "kv_producer" if role == "prefill" else "kv_consumer"
        args = [("--port", '"$PORT"'),
                ("--kv-transfer-config", q(json.dumps({"kv_connector": "NixlConnector",
                                                       "kv_role": kv_role})))]
        if d.dp > 1 and d.num_gpus <= seat.gpus_per_node:   # several DP servers on one node
            args.append(("--data-parallel-rpc-port", '"$DP_RPC_PORT"'))
        return args
    # trtllm: the cache transceiver of every server, the overlap scheduler off on context
    # servers (TensorRT-LLM's disaggregated serving requires it there)
    buffer = settings.context_tokens or settings.chunk_tokens if settings is not None else None
    transceiver: dict = {"backend": "NIXL"}
    if buffer:
        transceiver["max_tokens_in_buffer"] = buffer
    keys: dict = {"cache_transceiver_config": transceiver}
    if role == "prefill":
        keys["disable_overlap_scheduler"] = True
    return ([("--host", "0.0.0.0"), ("--port", '"$PORT"')], keys)


def _pool_export(pool: Pool, index: int, fmt: str, out_dir: Path, inst: Instance | None,
                 seat: ReplicaSeat) -> Export:
    where = f"pools[{index}] ({pool.role})"
    split = split_instances(pool.plan, fmt)
    if split.count > 1:
        raise InputError(f"{where}.degrees.edp={pool.plan.deg.edp}: a replica of a "
                         f"disaggregated pool is one {fmt} server; give its expert-data-parallel "
                         "copies as the pool's replicas instead")
    try:
        settings = launch_settings(pool.plan, inst) if inst is not None else None
    except InputError as err:
        raise InputError(f"{where}: {err}") from None
    pd = pd_args(fmt, pool.role, pool, settings, seat)
    sub = out_dir / pool.role
    if fmt == "sglang":
        return export_sglang(pool.plan, sub, settings, pd)
    if fmt == "vllm":   # the instance's loads: plan vs vLLM's linear map in the README
        loads = (dict(zip(inst.model.moe_layer_ids, expert_loads(inst)))
                 if inst is not None else None)
        return export_vllm(pool.plan, sub, loads, settings, pd, pool.role)
    if fmt == "trtllm":
        return export_trtllm(pool.plan, sub, settings, pd)
    raise InputError(f"--to={fmt!r}: a disaggregated plan exports to sglang, vllm, trtllm or csv")


def _csv(pools: list[Pool], out_dir: Path) -> Export:
    files, notes = {}, []
    for pool in pools:
        ex = export_csv(pool.plan, out_dir / pool.role)
        for name, text in ex.files.items():
            files[f"{pool.role}/{name}"] = text
        notes.append(f"{pool.role}/gpus.csv: one replica of the {pool.role} pool ({pool.replicas} "
                     f"identical replicas of {pool.gpus_per_replica} GPUs), ranks 0..{pool.gpus_per_replica - 1}")
    return Export("csv", files, [], {}, sum(p.replicas for p in pools), None, {}, [], notes,
                  pools=[_pool_row(p, None) for p in pools])


# ----------------------------------------------------------------------------------------------
# The whole deployment


def _pool_row(pool: Pool, ex: Export | None) -> dict:
    d = pool.plan.deg
    row = {"role": pool.role, "replicas": pool.replicas, "gpus_per_replica": pool.gpus_per_replica,
           "degrees": {"tp": d.tp, "pp": d.pp, "dp": d.dp, "ep": d.ep, "etp": d.etp}}
    if ex is not None:
        row["settings"] = ex.settings
    return row


def _compose(doc: dict, fmt: str, pools: list[Pool], parts: dict[str, Export],
             seats: dict[str, list[ReplicaSeat]], with_instance: bool) -> Export:
    files: dict[str, str] = {}
    for role, ex in parts.items():
        for name, text in ex.files.items():
            if name == "README.txt":   # the pool's own details: mapping, rank map, placement
                text = (f"One replica of the {role} pool of a disaggregated plan: start it with "
                        f"../launch.sh (ROLE={role} REPLICA=k), which runs the command below with "
                        "its ports; ../README.txt has the whole deployment.\n\n" + text)
            if name != "launch.sh":
                files[f"{role}/{name}"] = text
    gpn = pools[0].plan.gpus_per_node
    nodes = -(-sum(p.num_gpus for p in pools) // gpn)
    launches = []
    for role, ex in parts.items():
        for lc in ex.launches:
            label = f"{role} replica (REPLICA=0..{len(seats[role]) - 1})" + (
                f", {lc.label}" if lc.label else "")
            launches.append(Launch(_in_pool_folder(lc.command, role), lc.when, label))
    router, config = _router(fmt, seats)
    launches.append(Launch(router, None, "router (ROLE=router)"))
    if config is not None:
        files["disagg_config.yaml"] = config
    warnings = [f"{role}: {w}" for role, ex in parts.items() for w in ex.warnings]
    notes = [f"{role}: {n}" for role, ex in parts.items() for n in ex.notes]
    notes.append(f"{nodes} node(s) of {gpn} GPUs; KV caches travel over NIXL "
                 + ("inside one node" if nodes == 1 else "between nodes"))
    if not with_instance:
        notes.append(f"no --instance: {gpn} GPUs per node, the most any pool's gpus list shows; "
                     "give --instance for the cluster's own node size")
    needs = tuple(sorted({v for ex in parts.values() for v in ex.needs}))
    settings = {"mode": "disagg", "runtime_version": RUNTIME_VERSIONS[fmt],
                "kv_transfer": "nixl", "router_port": ROUTER_PORT}
    if fmt in ROUTER_VERSIONS:
        settings["router"] = "==".join(ROUTER_VERSIONS[fmt])
    ex = Export(fmt, files, launches, {}, sum(len(s) for s in seats.values()), None, settings,
                warnings, notes, needs, pools=[_pool_row(p, parts[p.role]) for p in pools])
    ex.files["launch.sh"] = _launch_sh(fmt, doc, pools, parts, seats, router, nodes)
    ex.files["README.txt"] = _readme(fmt, doc, pools, parts, seats, ex, with_instance)
    return ex


def _in_pool_folder(command: str, role: str) -> str:
    """A pool's launch reads its files from its own folder (``$HERE/<role>/``)."""
    return command.replace("$HERE/", f"$HERE/{role}/")


def _url(seat: ReplicaSeat) -> str:
    return f'"http://${{NODE_ADDR[{seat.node}]}}:{seat.port("http")}"'


def _router(fmt: str, seats: dict[str, list[ReplicaSeat]]) -> tuple[str, str | None]:
    """The router's command (node addresses from the NODE_ADDR array launch.sh builds from
    NODES), and for TensorRT-LLM its disaggregated-serving YAML (hosts ``node<i>``)."""
    if fmt in ("sglang", "vllm"):
        prog = (["python3", "-m", "sglang_router.launch_router", "--pd-disaggregation"]
                if fmt == "sglang" else ["vllm-router", "--vllm-pd-disaggregation"])
        args: list[tuple[str, object | None]] = [("--host", "0.0.0.0"), ("--port", ROUTER_PORT)]
        for s in seats["prefill"]:
            args.append(("--prefill", _url(s) + (f" {s.port('bootstrap')}" if fmt == "sglang" else "")))
        for s in seats["decode"]:
            args.append(("--decode", _url(s)))
        if fmt == "vllm":
            args.append(("--kv-connector", "nixl"))
        return shell_command(prog, args), None
    config = {"hostname": "0.0.0.0", "port": ROUTER_PORT, "backend": "pytorch"}
    for role in ("prefill", "decode"):
        config[TRTLLM_ROLE[role]] = {
            "num_instances": len(seats[role]),
            "urls": [f"node{s.node}:{s.port('http')}" for s in seats[role]]}
    body = yaml.safe_dump(config, sort_keys=False, width=1 << 30)
    text = ("# TensorRT-LLM disaggregated serving (trtllm-serve disaggregated -c): host node<i> "
            "is node i of the plan; launch.sh ROLE=router writes a copy with NODES' addresses\n"
            + body)
    used = sorted({s.node for ss in seats.values() for s in ss})
    sed = " ".join(f'-e "s/^\\(  - \\)node{n}:/\\1${{NODE_ADDR[{n}]}}:/"' for n in used)
    command = (f'sed {sed} "$HERE/disagg_config.yaml" > "$HERE/disagg_config.resolved.yaml"\n'
               'trtllm-serve disaggregated -c "$HERE/disagg_config.resolved.yaml"')
    return command, text


def _launch_sh(fmt: str, doc: dict, pools: list[Pool], parts: dict[str, Export],
               seats: dict[str, list[ReplicaSeat]], router: str, nodes: int) -> str:
    gpn = pools[0].plan.gpus_per_node
    name = doc.get("instance", "plan")
    lines = ["#!/usr/bin/env bash",
             f"# {comment(f'{fmt} disaggregated launch for plan {name}, ' + version_line(fmt))}",
             "# written by moeopt export; see README.txt. Run once per replica of each pool",
             "# (ROLE=prefill|decode, REPLICA=0..n-1, on the replica's node; NODE_RANK and HEAD_ADDR",
             "# for a replica over several nodes) and once ROLE=router with NODES set to the",
             f"# addresses of the plan's {nodes} node(s), in node order, separated by spaces.",
             "set -euo pipefail", 'HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"',
             'ROLE="${ROLE:?set ROLE to prefill, decode or router}"',
             'case "$ROLE" in']
    for p in pools:
        first = seats[p.role][0].first_rank
        lines.append(f"  {p.role}) REPLICAS={p.replicas}; GPUS={p.gpus_per_replica}; FIRST_RANK={first} ;;")
    lines += ["  router) ;;", '  *) echo "ROLE must be prefill, decode or router" >&2; exit 2 ;;',
              "esac",
              'if [ "$ROLE" = router ]; then',
              '  NODES="${NODES:?set NODES to the node addresses, node 0 first}"',
              '  read -r -a NODE_ADDR <<< "$NODES"',
              f'  if [ "${{#NODE_ADDR[@]}}" -lt {nodes} ]; then echo "NODES: {nodes} addresses '
              'needed" >&2; exit 2; fi',
              "  " + router.replace("\n", "\n  "),
              "  exit 0", "fi",
              'MODEL="${MODEL:?set MODEL to the model path or name}"',
              'REPLICA="${REPLICA:?set REPLICA to the replica number in its pool}"',
              'case "$REPLICA" in ""|*[!0-9]*) echo "REPLICA must be a number" >&2; exit 2 ;; esac',
              'if [ "$REPLICA" -ge "$REPLICAS" ]; then echo "REPLICA must be 0..$((REPLICAS - 1))'
              ' for $ROLE" >&2; exit 2; fi',
              "# the replica's GPUs are global ranks FIRST..FIRST+GPUS-1; ports = base + LOCAL",
              "FIRST=$((FIRST_RANK + REPLICA * GPUS))",
              f"LOCAL=$((FIRST % {gpn}))",
              f'if [ "$GPUS" -le {gpn} ]; then export CUDA_VISIBLE_DEVICES="$(seq -s, "$LOCAL" '
              '"$((LOCAL + GPUS - 1))")"; fi']
    for kind in ("http", "bootstrap", "engine_info", "nixl", "dp_rpc"):
        var = {"http": "PORT", "bootstrap": "BOOTSTRAP_PORT", "engine_info": "ENGINE_INFO_PORT",
               "nixl": "VLLM_NIXL_SIDE_CHANNEL_PORT", "dp_rpc": "DP_RPC_PORT"}[kind]
        if fmt == "vllm" and kind == "nixl":
            lines.append(f"export {var}=$(({PORT_BASE[kind]} + LOCAL))")
        elif (fmt, kind) in (("sglang", "bootstrap"), ("sglang", "engine_info"), ("vllm", "dp_rpc")) \
                or kind == "http":
            lines.append(f"{var}=$(({PORT_BASE[kind]} + LOCAL))")
    for i, p in enumerate(pools):
        ex = parts[p.role]
        lines.append(f'{"if" if i == 0 else "elif"} [ "$ROLE" = {p.role} ]; then')
        for key, value in ex.env.items():
            lines.append(f"  export {key}={q(value)}")
        for var in ex.needs:
            lines.append(f'  {var}="${{{var}:?set {var} (the replica spans nodes)}}"')
        cmds = [Launch(_in_pool_folder(lc.command, p.role), lc.when, lc.label) for lc in ex.launches]
        if len(cmds) == 1:
            lines.append("  " + cmds[0].command.replace("\n", "\n  "))
        else:
            for j, lc in enumerate(cmds):
                lines.append(("  if" if j == 0 else "  elif") + f" [ {lc.when} ]; then" if lc.when
                             else "  else")
                lines.append("    " + lc.command.replace("\n", "\n    "))
            lines.append("  fi")
    lines.append("fi")
    return "\n".join(lines) + "\n"


def _readme(fmt: str, doc: dict, pools: list[Pool], parts: dict[str, Export],
            seats: dict[str, list[ReplicaSeat]], ex: Export, with_instance: bool) -> str:
    from optimizer.plan.files import printable
    gpn = pools[0].plan.gpus_per_node
    title = printable(f"{fmt} disaggregated export of {doc.get('instance', 'plan')}")
    lines = [title, "=" * len(title), "", version_line(fmt)
             + (f"; router {ROUTER_VERSIONS[fmt][0]} {ROUTER_VERSIONS[fmt][1]}" if fmt in ROUTER_VERSIONS else ""),
             f"{sum(p.num_gpus for p in pools)} GPUs, {gpn} per node; KV transfer: NIXL", "",
             "pools (one server per replica; GPUs per launch = GPUs per replica):",
             "  role     replicas  GPUs/replica  TP PP DP EP ETP  first global rank of each replica"]
    for p in pools:
        d = p.plan.deg
        firsts = ", ".join(str(s.first_rank) for s in seats[p.role][:16])
        more = ", ..." if p.replicas > 16 else ""
        lines.append(f"  {p.role:<8} {p.replicas:>8}  {p.gpus_per_replica:>12}  {d.tp:>2} {d.pp:>2} "
                     f"{d.dp:>2} {d.ep:>2} {d.etp:>3}  {firsts}{more}")
    lines += ["", "settings per pool (what the plan's figures assume for that pool):"]
    for p in pools:
        lines.append(f"  {p.role}: " + json.dumps(parts[p.role].settings))
    if not with_instance:
        lines.append("  (no --instance: KV dtype, running-request cap, prefill chunk, context length "
                     "and memory fraction are left at the runtime's defaults)")
    lines += ["", "ports (base + LOCAL, the node-local index of the replica's first GPU): HTTP "
              f"{PORT_BASE['http']}"
              + {"sglang": f", bootstrap {PORT_BASE['bootstrap']} (prefill), engine-info "
                           f"{PORT_BASE['engine_info']}",
                 "vllm": f", NIXL side channel {PORT_BASE['nixl']} (+ DP rank), DP RPC "
                         f"{PORT_BASE['dp_rpc']}",
                 "trtllm": ""}[fmt] + f"; router {ROUTER_PORT}", "",
              f"launch (launch.sh; set ROLE, REPLICA, MODEL{', ' + ', '.join(ex.needs) if ex.needs else ''}; "
              "the router needs NODES):"]
    for lc in ex.launches:
        lines.append(f"  # {lc.label}" + (f" when {lc.when}" if lc.when else ""))
        lines.append("  " + lc.command.replace("\n", "\n  "))
    files = sorted(name for name in ex.files if "/" in name or name == "disagg_config.yaml")
    if files:
        lines += ["", "files: " + ", ".join(files)]
    if ex.warnings:
        lines += ["", "WARNINGS:"] + [f"  - {w}" for w in ex.warnings]
    if ex.notes:
        lines += ["", "notes:"] + [f"  - {n}" for n in ex.notes]
    return "\n".join(lines) + "\n"
