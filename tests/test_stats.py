"""Parameter and MAC counts against hand-computed values and published torchvision figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from edgeprune.errors import NotFoundError
from edgeprune.models.cost import (
    count_macs,
    count_params,
    layer_widths,
    model_info,
    size_on_disk,
    state_dict_bytes,
)


def small_net() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),  # 8·16·16 outputs × 3·3·3 = 55,296
        nn.BatchNorm2d(8),  # 2,048 elements (only with include_norm)
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False),  # depthwise: 2,048 × 9 = 18,432
        nn.Conv2d(8, 16, 1, stride=2),  # 16·8·8 = 1,024 outputs × 8 = 8,192
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),  # 10 × 16 = 160
    )


HAND_MACS = 55_296 + 18_432 + 8_192 + 160
HAND_PARAMS = (8 * 27 + 8) + 2 * 8 + 8 * 9 + (16 * 8 + 16) + (10 * 16 + 10)


def test_small_net_macs_match_hand_count() -> None:
    assert count_macs(small_net(), torch.rand(1, 3, 16, 16)) == HAND_MACS


def test_norm_layers_counted_only_when_asked() -> None:
    net = small_net()
    assert count_macs(net, torch.rand(1, 3, 16, 16), include_norm=True) == HAND_MACS + 2_048


def test_macs_scale_with_batch_and_accept_input_tuples() -> None:
    assert count_macs(small_net(), (torch.rand(3, 3, 16, 16),)) == 3 * HAND_MACS


def test_params_match_hand_count_and_shared_weights_count_once() -> None:
    net = small_net()
    assert count_params(net) == HAND_PARAMS
    shared = nn.Linear(4, 4)
    assert count_params(nn.Sequential(shared, shared)) == 20
    net[0].weight.requires_grad_(False)
    assert count_params(net, trainable_only=True) == HAND_PARAMS - 8 * 27


def test_linear_on_sequences_and_transposed_conv() -> None:
    assert count_macs(nn.Linear(16, 32), torch.rand(2, 5, 16)) == 2 * 5 * 32 * 16
    deconv = nn.ConvTranspose2d(4, 2, 2, stride=2)  # every input element feeds 2·2·2 outputs
    assert count_macs(deconv, torch.rand(1, 4, 8, 8)) == 4 * 8 * 8 * 2 * 4


def test_attention_counts_projections_and_both_matmuls() -> None:
    mha = nn.MultiheadAttention(16, 2, batch_first=True)
    q = torch.rand(2, 5, 16)
    proj = 3 * 5 * 16 * 16 + 5 * 16 * 16  # q, k, v and out projections
    attn = 2 * 5 * 5 * 16  # Q·Kᵀ and A·V over all heads
    assert count_macs(mha, (q, q, q)) == 2 * (proj + attn)


def test_counting_leaves_the_model_untouched() -> None:
    net = small_net().train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    count_macs(net, torch.rand(2, 3, 16, 16) * 10)
    assert net.training
    assert not net[0]._forward_hooks
    for key, value in net.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_layer_widths_report_groups_and_kernels() -> None:
    widths = {w.name: w for w in layer_widths(small_net())}
    assert widths["0"].out_width == 8 and widths["0"].kernel_size == (3, 3)
    assert widths["1"].kind == "BatchNorm2d" and widths["1"].in_width == 8
    assert widths["3"].groups == 8
    assert (widths["7"].in_width, widths["7"].out_width) == (16, 10)


def test_model_info_is_json_data() -> None:
    info = model_info(small_net(), torch.rand(1, 3, 16, 16))
    data = json.loads(json.dumps(info.to_dict()))
    assert data["params"] == HAND_PARAMS and data["macs"] == HAND_MACS
    # float32 weights and BN buffers + one int64 num_batches_tracked
    assert data["size_bytes"] == (HAND_PARAMS + 16) * 4 + 8
    assert data["input_shapes"] == [[1, 3, 16, 16]]
    assert len(data["widths"]) == 5


def test_torchvision_resnet18_matches_published_macs() -> None:
    from edgeprune.models.torchvision_compat import import_torchvision

    tv = import_torchvision()
    model = tv.models.resnet18()
    # 1,813,561,344 in convs + 512,000 in the classifier = the widely quoted 1.82 GMACs
    assert count_macs(model, torch.zeros(1, 3, 224, 224)) == 1_814_073_344
    assert count_params(model) == 11_689_512
    mobilenet = tv.models.mobilenet_v2()
    assert count_macs(mobilenet, torch.zeros(1, 3, 224, 224)) == 300_774_272  # "300M" in the paper
    assert count_params(mobilenet) == 3_504_872
    assert state_dict_bytes(model) > count_params(model) * 4  # BN running stats too


def test_size_on_disk_counts_onnx_external_data(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(torch.rand(64, 64).numpy(), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])],
        [weight],
    )
    path = tmp_path / "m.onnx"
    onnx.save_model(
        helper.make_model(graph),
        str(path),
        save_as_external_data=True,
        location="weights.bin",
        size_threshold=0,
    )
    data = tmp_path / "weights.bin"
    assert data.stat().st_size >= 64 * 64 * 4
    assert size_on_disk(path) == path.stat().st_size + data.stat().st_size
    (tmp_path / "other.txt").write_text("x")
    assert size_on_disk(tmp_path) == size_on_disk(path) + 1
    plain = tmp_path / "plain.bin"
    plain.write_bytes(b"12345")
    assert size_on_disk(plain) == 5


def test_size_on_disk_missing_path(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="does not exist"):
        size_on_disk(tmp_path / "nope.onnx")
