"""``facespace export onnx MODEL OUT``: the networks as ONNX graphs for other runtimes.

``MODEL`` is a registered embedder (OUT is the ``.onnx`` file: input
``input`` N x 3 x S x S normalised float32, output ``embedding`` N x D,
L2-normalised, dynamic batch) or the detector ``mtcnn`` (OUT is a directory
that receives ``pnet.onnx``, ``rnet.onnx`` and ``onet.onnx``). ``--int8``
writes an embedder's int8-quantised graph instead (from the stored
activation ranges, see :mod:`facespace.runtime.quantize`).
"""

from __future__ import annotations

import argparse
import json

from .common import add_group, check_output


def register(sub: argparse._SubParsersAction) -> None:
    esub = add_group(sub, "export", help="export networks to other formats (ONNX)", dest="export_command",
                     metavar="FORMAT")
    onnx = esub.add_parser("onnx", help="write a network as an ONNX graph (needs the 'onnx' extra)")
    onnx.add_argument("model", metavar="MODEL", help="a registered embedder, or 'mtcnn' for the detector")
    onnx.add_argument("out", metavar="OUT", help="output .onnx file (a directory for mtcnn)")
    onnx.add_argument("--opset", type=int, default=None, help="ONNX opset (default: 17)")
    onnx.add_argument("--int8", action="store_true",
                      help="write the int8-quantised embedder (about 3x faster on CPU; cosine ~0.998 to float)")
    onnx.add_argument("--no-verify", action="store_true",
                      help="skip comparing ONNX Runtime's output with torch's on a random batch")
    onnx.set_defaults(handler=run_onnx)


def run_onnx(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from ..errors import FacespaceError
    from ..runtime import onnx_backend
    from ..pretrained.registry import get_config

    opset = args.opset or onnx_backend.DEFAULT_OPSET
    config = get_config(args.model, "embedder")  # raises UnknownModelError for unknown names
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise FacespaceError("ONNX export needs the onnx package: pip install 'facespace[onnx]'") from None
    check_output(args.out, "OUT", folder=config.kind == "detector")
    if config.kind == "detector":
        if args.int8:
            raise FacespaceError("--int8 is available for embedders only")
        paths = onnx_backend.export_mtcnn(args.out, config.name, opset)
        print(json.dumps({k: str(v) for k, v in paths.items()}))
        return 0
    if config.kind != "embedder":
        raise FacespaceError(f"{config.name} is neither an embedder nor the MTCNN detector")
    if args.int8:
        import tempfile
        from pathlib import Path

        from ..runtime.quantize import calibration_file, quantize_graph

        ranges = calibration_file(config.name)
        with tempfile.TemporaryDirectory() as tmp:
            float_path = onnx_backend.export_embedder(config.name, Path(tmp) / "float.onnx", opset)
            path = quantize_graph(float_path, args.out, ranges)
    else:
        path = onnx_backend.export_embedder(config.name, args.out, opset)
    report = {"model": config.name, "path": str(path), "opset": opset, "precision": "int8" if args.int8 else "float32",
              "input": ["batch", 3, config.input_size, config.input_size],
              "output": ["batch", config.embedding_size], "normalisation": config.normalisation}
    if not args.no_verify:
        from ..pretrained.loader import load_embedder

        try:
            runtime = onnx_backend.OnnxNetwork(path)
        except FacespaceError as exc:
            report["verified"] = f"skipped: {exc}"
        else:
            x = torch.randn(3, 3, config.input_size, config.input_size, generator=torch.Generator().manual_seed(0))
            with torch.inference_mode():
                expected = load_embedder(config.name).eval()(x).numpy()
            got = runtime(x).numpy()
            report["max_abs_diff_vs_torch"] = float(np.abs(got - expected).max())
            if args.int8:
                report["min_cosine_vs_torch"] = float(np.sum(got * expected, axis=1).min())
    print(json.dumps(report))
    return 0
