"""Devices: where artifacts are measured — files, never models.

``targets`` and ``profiles`` (TOML found by discovery) say where and against what budgets;
``measure`` runs :mod:`~edgeprune.devices.runner` (a self-contained script shipped to the device)
on the ``local`` machine or a ``remote`` one over ``transport`` (the only paramiko importer), and
``protocol`` turns what the runner printed into results and errors. Never imports ``models``,
``pruning``, ``artifacts``, torch or onnx: :mod:`edgeprune.pipeline.measuring` turns a model into
the files measured here.
"""
