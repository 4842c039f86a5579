"""Parameter and MAC counts (``models.cost``) against hand-computed values and published
torchvision figures; per-layer MACs add up to the model's count."""

from __future__ import annotations

import json

import torch
from torch import nn

from edgeprune.models.cost import (
    count_macs,
    count_params,
    layer_macs,
    layer_widths,
    model_info,
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


def test_layer_macs_per_layer_of_the_hand_counted_net() -> None:
    per_layer = layer_macs(small_net(), torch.rand(1, 3, 16, 16))
    assert per_layer == {"0": 55_296, "3": 18_432, "4": 8_192, "7": 160}
    with_norm = layer_macs(small_net(), torch.rand(1, 3, 16, 16), include_norm=True)
    assert with_norm["1"] == 2_048 and sum(with_norm.values()) == HAND_MACS + 2_048


def test_layer_macs_add_up_to_count_macs_on_resnet18_and_mnist_cnn() -> None:
    from edgeprune.models.load import load_model
    from edgeprune.models.torchvision_compat import import_torchvision

    resnet = import_torchvision().models.resnet18()
    x = torch.zeros(2, 3, 64, 64)
    per_layer = layer_macs(resnet, x)
    assert sum(per_layer.values()) == count_macs(resnet, x)
    convs = [n for n, m in resnet.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert list(per_layer) == convs  # every conv and the classifier, in the order they ran
    assert per_layer["fc"] == 2 * 512 * 1000
    mnist = load_model("builtin:mnist-cnn")
    digits = torch.zeros(3, 1, 28, 28)
    per_layer = layer_macs(mnist, digits)
    assert sum(per_layer.values()) == count_macs(mnist, digits)
    assert len(per_layer) == 4  # two convs, two linears


def test_a_layer_called_twice_counts_twice() -> None:
    shared = nn.Linear(8, 8)
    net = nn.Sequential(shared, nn.ReLU(), shared)
    x = torch.rand(2, 8)
    assert layer_macs(net, x) == {"0": 2 * 2 * 8 * 8} == {"0": count_macs(net, x)}
