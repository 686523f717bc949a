"""Hostile inputs: files and command lines written by a stranger who wants moeopt to crash,
eat the machine's memory, scribble outside the folder it was given or drive the terminal.

A generator for ``fuzzkit`` (``GENERATORS["hostile"]``, shared by ``tests/cli/test_fuzz.py`` and
``benchmarks/bench_fuzz.py``). Each case starts from a valid file (an instance, a plan
``moeopt solve`` wrote, a HuggingFace config, a sweep point) and applies one attack:

- ``nesting``: a value (or the whole file) nested 63 to 5,000 arrays deep;
- ``digits``: an integer of 31 to 5,000 digits where a number belongs;
- ``surrogate``: a lone UTF-16 surrogate escape (``"\\ud800"``) in a string or a key;
- ``duplicate``: a key given twice in one object;
- ``names``: an instance, model or GPU name with path separators, ``..``, control and
  terminal escape characters, bidirectional overrides, or far too long;
- ``sizes``: layers, experts, heads or GPUs at, just above and far above the schema's caps
  (``10**9``, ``10**12``), in an instance or in a HuggingFace config;
- ``output``: an ``--output`` that is empty, 300 bytes long, holds control characters, or is
  a symbolic link (dangling, into a folder that does not exist, or out of the folder);
- ``escape``: terminal escape sequences in keys (they reach error messages).

Besides fuzzkit's rule (exit 0/2/3/4, one line for exit 2, no traceback) every case lists the
paths that must not exist afterwards (``Case.forbidden``: what a symbolic link would have
created elsewhere) and output must carry no raw control character (``fuzzkit.violations``).
"""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path

from optimizer.inputs.schema import MAX_EXPERTS, MAX_HEADS, MAX_LAYERS

ATTACKS = ("nesting", "digits", "surrogate", "duplicate", "names", "sizes", "output", "escape")
HOSTILE_NAMES = ["../evil", "a/b", "..", ".", "", "x" * 300, "\x1b[31mred\x1b[0m", "line\nbreak",
                 "bell\x07", "\u202egnp.exe", "tab\there", "nul\x00", "ok-name", "a" * 128, "a" * 129,
                 "\u00e9t\u00e9", "C:\\\\windows", "~root", "-rf"]
SIZE_FIELDS = {"num_layers": MAX_LAYERS, "num_experts": MAX_EXPERTS, "num_attention_heads": MAX_HEADS,
               "num_kv_heads": MAX_HEADS, "top_k": MAX_EXPERTS}
HF_SIZE_FIELDS = ("num_hidden_layers", "num_local_experts", "num_experts", "n_routed_experts",
                  "num_attention_heads", "num_key_value_heads", "n_layers")


def hostile_case(rng: random.Random, folder: Path):
    """One attack on one command (see the module docstring)."""
    attack = rng.choice(ATTACKS)
    return {"nesting": _text_attack, "digits": _text_attack, "surrogate": _text_attack,
            "duplicate": _text_attack, "escape": _text_attack, "names": _names_case,
            "sizes": _sizes_case, "output": _output_case}[attack](rng, folder, attack)


# ------------------------------------------------------------------ the files attacked

def _source(rng: random.Random) -> tuple[str, dict]:
    """(kind, a valid document): an instance, a plan, a HF config or a sweep point."""
    from tests.oracles import fuzzkit
    kind = rng.choice(["instance", "instance", "plan", "hf", "point"])
    if kind == "instance":
        return kind, copy.deepcopy(fuzzkit.bases()["10b_moe.json"])
    if kind == "plan":
        return kind, copy.deepcopy(fuzzkit.solved_plan())
    if kind == "hf":
        hf = fuzzkit.hf_bases()
        return kind, hf[rng.choice(sorted(hf))]
    return kind, {"num_gpus": 8, "status": "optimal", "key": "0" * 16}


def _command(rng: random.Random, kind: str, path: Path, folder: Path) -> tuple[str, list[str]]:
    """(command, arguments) reading the attacked file ``path`` of ``kind``."""
    from tests.oracles import fuzzkit
    inst = str(fuzzkit.FAST_INSTANCE)
    if kind == "instance":
        command = rng.choice(["solve", "check", "inspect", "init", "report", "export"])
        return command, {
            "solve": ["solve", str(path), "--time-limit", "1", "--output", str(folder / "plan.json")],
            "check": ["check", str(path), str(fuzzkit.SEED_PLAN)],
            "inspect": ["inspect", str(path)],
            "init": ["init", "--model", str(path), "--gpu", "h100-sxm", "--gpus", "8",
                     "--output", str(folder / "new.json")],
            "report": ["report", str(fuzzkit.SEED_PLAN), "--instance", str(path),
                       "--output", str(folder / "r.html")],
            "export": ["export", str(fuzzkit.SEED_PLAN), "--to", "csv", "--instance", str(path),
                       "--output", str(folder / "export")],
        }[command]
    if kind == "plan":
        command = rng.choice(["check", "report", "export"])
        return command, {
            "check": ["check", inst, str(path)],
            "report": ["report", str(path), "--output", str(folder / "r.html")],
            "export": ["export", str(path), "--to", rng.choice(["sglang", "vllm", "csv"]),
                       "--output", str(folder / "export")],
        }[command]
    if kind == "hf":
        command = rng.choice(["import-hf", "inspect", "init"])
        return command, {
            "import-hf": ["import-hf", str(path)],
            "inspect": ["inspect", str(path)],
            "init": ["init", "--model", str(path), "--gpu", "b200", "--gpus", "8",
                     "--output", str(folder / "new.json")],
        }[command]
    # a sweep point: written where ``sweep --resume`` looks for it
    return "sweep", ["sweep", inst, "--gpus", "8", "--resume", "--time-limit", "1",
                     "--output", str(folder / "sweep"), "--format", "json"]


def _write(kind: str, folder: Path, text: str) -> Path:
    if kind == "point":
        path = folder / "sweep" / "sweep-points" / "8.json"
        path.parent.mkdir(parents=True)
    else:
        path = folder / f"{kind}.json"
    path.write_text(text, encoding="utf-8")
    return path


# ------------------------------------------------------------------ attacks on the text

def _text_attack(rng: random.Random, folder: Path, attack: str):
    from tests.oracles import fuzzkit
    kind, doc = _source(rng)
    text, note = _attacked_text(rng, doc, attack)
    path = _write(kind, folder, text)
    command, args = _command(rng, kind, path, folder)
    return fuzzkit.Case(command, args, [f"{attack} on {kind}: {note}"], [str(path), "sweep point"])


def _attacked_text(rng: random.Random, doc: dict, attack: str) -> tuple[str, str]:
    """The JSON text of ``doc`` with one attack; (text, what was done)."""
    marker = "__HOSTILE__"
    key = rng.choice(sorted(_leaf_keys(doc)))
    if attack == "duplicate":
        text = json.dumps(doc)
        value = json.dumps(_first(doc, key))
        return text.replace(f'"{key}": ', f'"{key}": {value}, "{key}": ', 1), f"key {key} twice"
    _replace_first(doc, key, marker)
    text = json.dumps(doc)
    if attack == "nesting":
        depth = rng.choice([63, 65, 200, 1000, 5000])
        if rng.random() < 0.2:
            return "[" * depth + "]" * depth, f"the whole file {depth} deep"
        return text.replace(f'"{marker}"', "[" * depth + "1" + "]" * depth), f"{key} {depth} deep"
    if attack == "digits":
        digits = rng.choice([31, 401, 4301, 5000])
        number = rng.choice(["", "-"]) + "9" * digits
        return text.replace(f'"{marker}"', number), f"{key} has {digits} digits"
    if attack == "surrogate":
        if rng.random() < 0.5:
            return text.replace(f'"{marker}"', '"\\ud800"'), f"{key} a lone surrogate"
        return text.replace(f'"{marker}"', '{"\\udfff": 1}'), f"a key of {key} a lone surrogate"
    # escape: an unknown key that would colour the terminal
    return text.replace(f'"{marker}"', '{"\\u001b[31mred\\u001b]0;title\\u0007": 1}'), f"{key} escape key"


def _leaf_keys(doc, out=None) -> set[str]:
    out = set() if out is None else out
    if isinstance(doc, dict):
        for k, v in doc.items():
            if not isinstance(v, (dict, list)):
                out.add(k)
            _leaf_keys(v, out)
    elif isinstance(doc, list):
        for v in doc:
            _leaf_keys(v, out)
    return out


def _first(doc, key):
    if isinstance(doc, dict):
        if key in doc and not isinstance(doc[key], (dict, list)):
            return doc[key]
        items = doc.values()
    elif isinstance(doc, list):
        items = doc
    else:
        return None
    for v in items:
        found = _first(v, key)
        if found is not None:
            return found
    return None


def _replace_first(doc, key, value) -> bool:
    if isinstance(doc, dict):
        if key in doc and not isinstance(doc[key], (dict, list)):
            doc[key] = value
            return True
        items = list(doc.values())
    elif isinstance(doc, list):
        items = doc
    else:
        return False
    return any(_replace_first(v, key, value) for v in items)


# ------------------------------------------------------------------ names, sizes, outputs

def _names_case(rng: random.Random, folder: Path, attack: str):
    from tests.oracles import fuzzkit
    name = rng.choice(HOSTILE_NAMES)
    where = rng.choice(["name", "model.name", "hardware.gpu.name", "--name"])
    doc = copy.deepcopy(fuzzkit.bases()["10b_moe.json"])
    if where == "--name":
        path = _write("instance", folder, json.dumps(doc))
        command = rng.choice(["init", "import-hf"])
        if command == "init":
            args = ["init", "--model", str(path), "--gpu", "h100-sxm", "--gpus", "8", "--name", name,
                    "--output", str(folder / "new.json")]
        else:
            args = ["import-hf", str(rng.choice(sorted(fuzzkit.HF_DIR.glob("*.json")))), "--name", name,
                    "--output", str(folder / "model.json")]
        return fuzzkit.Case(command, args, [f"--name {name!r}"], [str(path)])
    section = doc
    *parents, last = where.split(".")
    for part in parents:
        section = section[part]
    section[last] = name
    path = _write("instance", folder, json.dumps(doc))
    command, args = _command(rng, "instance", path, folder)
    return fuzzkit.Case(command, args, [f"{where}={name!r}"], [str(path)])


def _sizes_case(rng: random.Random, folder: Path, attack: str):
    from tests.oracles import fuzzkit
    if rng.random() < 0.4:
        hf = fuzzkit.hf_bases()
        name = rng.choice(sorted(hf))
        doc = hf[name]
        target = doc["text_config"] if "text_config" in doc else doc
        present = [k for k in HF_SIZE_FIELDS if k in target] or ["num_hidden_layers"]
        key = rng.choice(present)
        target[key] = rng.choice([10**6, 10**9, 10**12, 2**63])
        path = _write("hf", folder, json.dumps(doc))
        command, args = _command(rng, "hf", path, folder)
        return fuzzkit.Case(command, args, [f"hf {name}: {key}={target[key]}"], [str(path)])
    doc = copy.deepcopy(fuzzkit.bases()["10b_moe.json"])
    model = doc["model"]
    for key in ("moe_layers", "layer_types"):
        model.pop(key, None)
    field = rng.choice(sorted(SIZE_FIELDS) + ["num_gpus"])
    cap = 65536 if field == "num_gpus" else SIZE_FIELDS[field]
    value = rng.choice([cap + 1, 10**9, 10**12, 10**15])
    if field == "num_gpus":
        doc["hardware"]["num_gpus"] = value
    else:
        model[field] = value
        if rng.random() < 0.5:  # two sizes at once: the product is what would blow up
            model["num_experts" if field == "num_layers" else "num_layers"] = 10**9
    path = _write("instance", folder, json.dumps(doc))
    command, args = _command(rng, "instance", path, folder)
    return fuzzkit.Case(command, args, [f"{field}={value}"], [str(path)])


OUTPUT_COMMANDS = ("solve", "init", "import-hf", "report", "pareto", "sweep", "place", "export")


def _output_case(rng: random.Random, folder: Path, attack: str):
    """A hostile --output for a command that writes; ``forbidden`` lists what a write that
    followed a symbolic link out of ``folder`` would create."""
    from tests.oracles import fuzzkit
    outside = folder.parent / f"outside-{folder.name}"
    how = rng.choice(["empty", "long", "long-folder", "control", "dangling", "dangling-out",
                      "link-out"])
    forbidden: list[str] = []
    if how == "empty":
        output = ""
    elif how == "long":
        output = str(folder / ("n" * rng.choice([242, 255, 300, 5000])))
    elif how == "long-folder":
        output = str(folder / ("d" * 300) / "plan.json")
    elif how == "control":
        output = str(folder / rng.choice(["a\x1b[2Jb.json", "new\nline.json", "nul\x7f.json"]))
    else:
        link = folder / "link.json"
        if how == "dangling":
            target = folder / "missing" / "deeper" / "x.json"
            forbidden.append(str(folder / "missing"))
        elif how == "dangling-out":
            target = outside / "a" / "b" / "x.json"
            forbidden.append(str(outside))
        else:
            outside.mkdir(exist_ok=True)
            target = outside / "victim.json"
            target.write_text("precious")
            forbidden.append(str(target) + "!precious")
        link.symlink_to(target)
        output = str(link)
    command = rng.choice(OUTPUT_COMMANDS)
    inst, plan = str(fuzzkit.FAST_INSTANCE), str(fuzzkit.SEED_PLAN)
    hf = str(rng.choice(sorted(fuzzkit.HF_DIR.glob("*.json"))))
    args = {
        "solve": ["solve", inst, "--time-limit", "1"],
        "init": ["init", "--model", hf, "--gpu", "h100-sxm", "--gpus", "8"],
        "import-hf": ["import-hf", hf],
        "report": ["report", plan],
        "pareto": ["pareto", inst, "--gpus", "8", "--time-limit", "1"],
        "sweep": ["sweep", inst, "--gpus", "8", "--time-limit", "1"],
        "place": ["place", inst, "--time-limit", "1"],
        "export": ["export", plan, "--to", "csv"],
    }[command] + ["--output", output]
    case = fuzzkit.Case(command, args, [f"--output {how}: {output[:80]!r}"], [str(folder)])
    case.forbidden = forbidden
    return case


def broken_promises(case) -> list[str]:
    """What a case's run did outside its folder: a forbidden path that exists, or a file
    outside whose content (after ``!``) changed."""
    problems = []
    for entry in getattr(case, "forbidden", []):
        path, _, content = entry.partition("!")
        p = Path(path)
        if content:
            if not p.is_file() or p.read_text() != content:
                problems.append(f"{path} outside the folder was changed")
        elif p.exists():
            problems.append(f"{path} was created outside the folder")
    return problems
