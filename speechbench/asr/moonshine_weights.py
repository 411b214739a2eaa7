"""Moonshine tiny's decoder weights read from its bundled ``decoder_model_merged.ort`` (ONNX Runtime's
flatbuffer format, read with the schema onnxruntime ships), for ``moonshine_torch.py``.

The graph is HF ``MoonshineDecoder`` exported through optimum and quantized dynamically: each projection is
a ``MatMulIntegerToFloat`` or ``DynamicQuantizeMatMul`` node named after its module
(``/model/decoder/layers.3/encoder_attn/k_proj/MatMul_quant``) whose weight input is an initializer
``<name>_quantized`` with ``_scale`` and ``_zero_point`` beside it; layer norms are ``LayerNormalization``
nodes; the token embedding is quantized the same way; the rotary inverse frequencies are the one (1, n, 1)
float constant feeding the rotary embedding. Reading by node names, not by position, makes a different
export fail loudly (ValueError) instead of loading the wrong matrix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

_NP = {"FLOAT": np.float32, "UINT8": np.uint8, "INT8": np.int8, "INT64": np.int64, "INT32": np.int32,
       "FLOAT16": np.float16, "DOUBLE": np.float64}


@dataclass
class OrtNode:
    op: str
    name: str
    inputs: list[str]
    attrs: dict[str, Any]


def read_ort(path: str | Path) -> tuple[dict[str, np.ndarray], list[OrtNode]]:
    """Every initializer (by name, as numpy arrays) and every node (op, name, inputs, numeric attributes) of
    an ``.ort`` file, subgraphs included."""
    from speechbench.asr.moonshine import _ort_schema

    session_cls, dtypes = _ort_schema()
    names = {getattr(dtypes, k): k for k in dir(dtypes) if not k.startswith("_")}
    buf = Path(path).read_bytes()
    graphs = [session_cls.GetRootAsInferenceSession(buf, 0).Model().Graph()]
    tensors: dict[str, np.ndarray] = {}
    nodes: list[OrtNode] = []
    while graphs:
        g = graphs.pop()
        for i in range(g.InitializersLength()):
            t = g.Initializers(i)
            dtype = _NP.get(names.get(t.DataType(), ""))
            raw = t.RawDataAsNumpy()
            if dtype is None or raw is None:
                continue
            dims = tuple(t.Dims(d) for d in range(t.DimsLength()))
            tensors.setdefault(t.Name().decode(), np.frombuffer(raw.tobytes(), dtype=dtype).reshape(dims))
        for i in range(g.NodesLength()):
            n = g.Nodes(i)
            attrs: dict[str, Any] = {}
            for a in range(n.AttributesLength()):
                at = n.Attributes(a)
                if at.G() is not None:
                    graphs.append(at.G())
                else:
                    attrs[at.Name().decode()] = (at.F(), at.I())
            nodes.append(OrtNode(n.OpType().decode(), n.Name().decode(),
                                 [n.Inputs(k).decode() for k in range(n.InputsLength())], attrs))
    return tensors, nodes


def _dequantize(tensors: dict[str, np.ndarray], base: str) -> np.ndarray:
    q = tensors[f"{base}_quantized"].astype(np.float32)
    scale = tensors[f"{base}_scale"].astype(np.float32)
    zero = tensors[f"{base}_zero_point"].astype(np.float32)
    return (q - zero) * scale


_MATMUL = re.compile(r"^/model/decoder/layers\.(\d+)/(self_attn|encoder_attn|mlp)/(q_proj|k_proj|v_proj|o_proj|fc1|fc2)"
                     r"/MatMul_quant$")
_NORM = re.compile(r"^/model/decoder/layers\.(\d+)/(input|post_attention|final)_layernorm/LayerNormalization$")


def decoder_state(path: str | Path, heads: int) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The decoder's weights (float32, HF names) and hyper-parameters read from ``decoder_model_merged.ort``
    (``heads``: attention heads, from the session's cache inputs). Raises ValueError when the graph is not the
    layout this module knows (Moonshine tiny's export)."""
    tensors, nodes = read_ort(path)
    sd: dict[str, np.ndarray] = {}
    eps = None
    for n in nodes:
        m = _MATMUL.match(n.name)
        if m and n.op in ("MatMulIntegerToFloat", "DynamicQuantizeMatMul"):
            w_name = n.inputs[1]
            if not w_name.endswith("_quantized"):
                raise ValueError(f"{n.name}: unexpected weight input {w_name}")
            key = f"layers.{m.group(1)}.{m.group(2)}.{m.group(3)}"
            sd[f"{key}.weight"] = _dequantize(tensors, w_name[: -len("_quantized")]).T  # stored [in, out]
            bias = n.inputs[4] if n.op == "DynamicQuantizeMatMul" and len(n.inputs) > 4 else ""
            if bias:
                sd[f"{key}.bias"] = tensors[bias]
        elif n.name == "/proj_out/MatMul_quant":
            sd["proj_out.weight"] = _dequantize(tensors, n.inputs[1][: -len("_quantized")]).T
        elif n.op == "LayerNormalization":
            m = _NORM.match(n.name)
            key = f"layers.{m.group(1)}.{m.group(2)}_layernorm" if m else (
                "norm" if n.name.startswith("/model/decoder/norm/") else None)
            if key is None:
                continue
            sd[f"{key}.weight"] = tensors[n.inputs[1]]
            bias = tensors.get(n.inputs[2]) if len(n.inputs) > 2 else None
            if bias is not None and np.any(bias):
                raise ValueError(f"{n.name}: non-zero layer-norm bias (the layout this module knows has none)")
            eps = n.attrs.get("epsilon", (1e-5, 0))[0] or 1e-5
    sd["embed_tokens.weight"] = _dequantize(tensors, "model.decoder.embed_tokens.weight_merged_0")
    inv = next((v for k, v in tensors.items() if v.dtype == np.float32 and v.ndim == 3 and v.shape[0] == 1
                and v.shape[2] == 1 and k.startswith("onnx::Expand")), None)
    if inv is None:
        raise ValueError("rotary inverse frequencies not found in the decoder graph")
    sd["inv_freq"] = inv.reshape(-1)
    layers = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("layers."))
    dim = sd["layers.0.self_attn.q_proj.weight"].shape[0]
    cfg = {"layers": layers, "dim": dim, "heads": heads, "head_dim": dim // heads, "eps": float(eps or 1e-5),
           "rotary_dim": 2 * len(sd["inv_freq"]), "vocab": sd["proj_out.weight"].shape[0],
           "ffn": sd["layers.0.mlp.fc2.weight"].shape[1]}
    missing = [k for k in ("layers.0.self_attn.q_proj.weight", "layers.0.encoder_attn.k_proj.weight",
                           "layers.0.mlp.fc1.bias", "norm.weight", "proj_out.weight") if k not in sd]
    if missing:
        raise ValueError(f"decoder graph lacks {missing}")
    return {k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in sd.items()}, cfg
