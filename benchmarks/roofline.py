"""This machine's practical peak for fp32, bf16 and int8 arithmetic, at a given thread count.

    python benchmarks/roofline.py [--threads 1] [--repeats 5]

The peak of a precision is the fastest of several large, cache-friendly products measured here in
that precision, each timed ``repeats`` times after a warm-up (median of the runs, CPU time): a 2048^3
matrix product (torch), a 1x1 convolution 1024 -> 1024 channels on a 64x64 map and a 3x3
convolution 256 -> 256 on 56x56 (torch / oneDNN, channels-last, the layout the embedder runs in);
for int8 also ``torch._int_mm`` and ONNX Runtime's ``MatMulInteger`` and ``QLinearConv`` (the
kernels the project's int8 graph runs: ``runtime/quantize.py``). An operation is one multiply or
one add (a multiply-add is 2), so GFLOP/s (GOP/s for int8) here and the embedding's
``2 x multiply-adds x faces/s`` in ``speed.py`` are the same unit. ``speed.py`` runs it in a
worker of its own and divides each backend's achieved rate by the peak of its precision.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time


def _rate(fn, ops: float, repeats: int) -> float:
    """Median GOP/s of ``fn`` (``ops`` operations a call) over ``repeats`` runs after a warm-up, by
    the process's CPU time (one thread: its wall time on a quiet machine; on a shared one, far
    less disturbed by the others' work)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return ops / statistics.median(times) / 1e9


def _torch_products(dtype, repeats: int) -> dict[str, float]:
    import torch
    import torch.nn.functional as F

    n = 2048
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    out = {"matmul_2048": _rate(lambda: a @ b, 2 * n**3, repeats)}
    for name, (c, hw, k) in {"conv1x1_1024ch_64px": (1024, 64, 1), "conv3x3_256ch_56px": (256, 56, 3)}.items():
        x = torch.randn(8, c, hw, hw).to(dtype).contiguous(memory_format=torch.channels_last)
        w = torch.randn(c, c, k, k).to(dtype).contiguous(memory_format=torch.channels_last)
        ops = 2 * 8 * c * c * k * k * hw * hw
        with torch.inference_mode():
            out[name] = _rate(lambda: F.conv2d(x, w, padding=k // 2), ops, repeats)
    return out


def _int8_products(threads: int, repeats: int) -> dict[str, float]:
    import numpy as np
    import torch

    n = 2048
    a = torch.randint(-128, 127, (n, n), dtype=torch.int8)
    b = torch.randint(-128, 127, (n, n), dtype=torch.int8)
    out = {"torch_int_mm_2048": _rate(lambda: torch._int_mm(a, b), 2 * n**3, repeats)}
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return out
    rng = np.random.default_rng(0)
    ua = rng.integers(0, 255, (n, n), dtype=np.uint8)
    sb = rng.integers(-128, 127, (n, n), dtype=np.int8)
    session = _ort_session(_matmul_integer_graph(sb), threads)
    out["ort_matmulinteger_2048"] = _rate(lambda: session.run(None, {"a": ua}), 2 * n**3, repeats)
    c, hw = 256, 56
    x = rng.integers(0, 255, (8, c, hw, hw), dtype=np.uint8)
    session = _ort_session(_qlinearconv_graph(rng.integers(-127, 127, (c, c, 3, 3), dtype=np.int8)), threads)
    out["ort_qlinearconv3x3_256ch_56px"] = _rate(lambda: session.run(None, {"x": x}), 2 * 8 * c * c * 9 * hw * hw,
                                                 repeats)
    return out


def _matmul_integer_graph(b):
    from onnx import TensorProto, helper, numpy_helper

    n = b.shape[0]
    node = helper.make_node("MatMulInteger", ["a", "b"], ["y"])
    graph = helper.make_graph([node], "mmi", [helper.make_tensor_value_info("a", TensorProto.UINT8, [n, n])],
                              [helper.make_tensor_value_info("y", TensorProto.INT32, [n, n])],
                              [numpy_helper.from_array(b, "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _qlinearconv_graph(w):
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    c = w.shape[0]
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.float32(0.02), "xs"),
             numpy_helper.from_array(np.uint8(128), "xz"), numpy_helper.from_array(np.full(c, 0.01, np.float32), "ws"),
             numpy_helper.from_array(np.zeros(c, np.int8), "wz"), numpy_helper.from_array(np.float32(0.5), "ys"),
             numpy_helper.from_array(np.uint8(0), "yz")]
    node = helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["y"], pads=[1, 1, 1, 1])
    graph = helper.make_graph([node], "qconv", [helper.make_tensor_value_info("x", TensorProto.UINT8, None)],
                              [helper.make_tensor_value_info("y", TensorProto.UINT8, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _ort_session(model, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def peak_probe(precision: str, threads: int):
    """``(fn, ops)``: the product that sets ``precision``'s peak on this CPU (measured: the 3x3
    convolution for fp32 and bf16, ``QLinearConv`` for int8), to time interleaved with a network
    so that both see the same load."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    c, hw = 256, 56
    ops = 2 * 8 * c * c * 9 * hw * hw
    if precision == "int8":
        rng = np.random.default_rng(0)
        x = rng.integers(0, 255, (8, c, hw, hw), dtype=np.uint8)
        session = _ort_session(_qlinearconv_graph(rng.integers(-127, 127, (c, c, 3, 3), dtype=np.int8)), threads)
        return (lambda: session.run(None, {"x": x})), ops
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]
    x = torch.randn(8, c, hw, hw).to(dtype).contiguous(memory_format=torch.channels_last)
    w = torch.randn(c, c, 3, 3).to(dtype).contiguous(memory_format=torch.channels_last)

    def run():
        with torch.inference_mode():
            F.conv2d(x, w, padding=1)
    return run, ops


def matrix_peaks(threads: int, repeats: int = 5) -> dict:
    """``{"peak_gops": {precision: best}, "products_gops": {precision: {product: GOP/s}}}``."""
    import torch

    torch.set_num_threads(threads)
    products = {"fp32": _torch_products(torch.float32, repeats), "bf16": _torch_products(torch.bfloat16, repeats),
                "int8": _int8_products(threads, repeats)}
    return {"peak_gops": {k: round(max(v.values()), 1) for k, v in products.items()},
            "products_gops": {k: {n: round(r, 1) for n, r in v.items()} for k, v in products.items()},
            "cpu_capability": torch.backends.cpu.get_cpu_capability()}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(json.dumps(matrix_peaks(args.threads, args.repeats), indent=2))
