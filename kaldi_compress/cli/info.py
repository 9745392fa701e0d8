"""``kaldi-compress info [--json] MODEL``: like nnet3-am-info / nnet3-info."""
from __future__ import annotations

import json

from ..nnet3 import Model, read_model


def add_parser(sub, kaldi_bool) -> None:
    p = sub.add_parser("info", help="print dimensions, context, parameters and components",
                       description="Print what nnet3-am-info (or nnet3-info for a raw nnet) "
                       "prints about the network, then a table of its components.")
    p.add_argument("--json", type=kaldi_bool, default=False, metavar="BOOL",
                   help="print one JSON object instead")
    p.add_argument("model", help="model file (.mdl or .raw, binary or text; - for stdin)")


def model_info(model: Model) -> dict:
    """Everything ``info`` reports, as plain data."""
    nnet = model.nnet
    dims = nnet.node_dims()
    ctx = nnet.compute_context()
    inputs = nnet.input_names()
    return {
        "is_am": model.is_am,
        "input_dim": dims.get("input") if "input" in inputs else -1,
        "ivector_dim": dims.get("ivector") if "ivector" in inputs else -1,
        "output_dim": dims.get("output", -1) if "output" in nnet.output_names() else -1,
        "num_pdfs": model.transition_model.num_pdfs if model.is_am else None,
        "prior_dim": int(model.priors.size) if model.is_am else None,
        "left_context": ctx.left if ctx else None,
        "right_context": ctx.right if ctx else None,
        "modulus": nnet.modulus(),
        "num_parameters": nnet.num_parameters,
        "num_components": len(nnet.components),
        "nodes": [n.config_line(dims) for n in nnet.nodes],
        "components": [{"name": name, "type": c.type, "input_dim": c.input_dim,
                        "output_dim": c.output_dim,
                        "num_parameters": c.num_parameters if c.is_updatable else 0}
                       for name, c in nnet.components.items()],
    }


def format_info(info: dict) -> str:
    """nnet3-am-info's header and node lines, then a component table."""
    lines = []
    if info["is_am"]:
        lines += [f"input-dim: {info['input_dim']}", f"ivector-dim: {info['ivector_dim']}",
                  f"num-pdfs: {info['output_dim']}", f"prior-dimension: {info['prior_dim']}",
                  "# Nnet info follows."]
    if info["left_context"] is not None:
        lines += [f"left-context: {info['left_context']}",
                  f"right-context: {info['right_context']}"]
    lines += [f"num-parameters: {info['num_parameters']}", f"modulus: {info['modulus']}"]
    lines += info["nodes"]
    rows = [("# name", "type", "input-dim", "output-dim", "num-parameters")]
    rows += [(c["name"], c["type"], _s(c["input_dim"]), _s(c["output_dim"]),
              str(c["num_parameters"])) for c in info["components"]]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines.append(f"# {info['num_components']} components")
    for r in rows:
        lines.append("  ".join(v.ljust(w) if i < 2 else v.rjust(w)
                               for i, (v, w) in enumerate(zip(r, widths))).rstrip())
    return "\n".join(lines) + "\n"


def _s(v) -> str:
    return "?" if v is None else str(v)


def run(args) -> int:
    info = model_info(read_model(args.model))
    if args.json:
        print(json.dumps(info, indent=1))
    else:
        print(format_info(info), end="")
    return 0
