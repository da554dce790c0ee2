"""Runtimes: how networks are fed and run -- pixel normalisation (:mod:`.preprocess`),
batch-norm folding (:mod:`.fuse`), ONNX export and ONNX Runtime (:mod:`.onnx_backend`),
int8 quantisation (:mod:`.quantize`) and the CPU thread default (:mod:`.threads`)."""
