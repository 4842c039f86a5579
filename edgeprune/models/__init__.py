"""Models: spec grammar (``spec``), builders (``build``: torchvision through
``torchvision_compat``, trained nets shipped in packages via ``builtin``, a user's factories),
safe weights (``weights``), pickle-free pruned-model directories (``pruned_dir``), the one loader
for any of them (``load``) and parameter/MAC counting (``cost``)."""
