"""Exported artifacts: the only host-side package that imports ``onnx``.

- ``onnx_export``: PyTorch -> ONNX (dynamo, TorchScript fallback), checked; ``ExportResult``;
  ``verify_onnx``, ``load_onnx_session``.
- ``tflite``: PyTorch -> TFLite through the optional litert-torch extra, checked.
- ``parity``: the one comparison of an artifact's outputs with PyTorch (ONNX and TFLite).
- ``onnx_info`` / ``tflite_info``: static facts read from a file (params, MACs, inputs); neither
  imports torch.
- ``files``: the files an artifact is made of (external data) and their size on disk.
- ``_quiet``: all stdio / fd / logger / environment capture while exporting, thread-safe.

Nothing is imported here, so ``edgeprune info model.onnx`` loads only what it reads.
"""
