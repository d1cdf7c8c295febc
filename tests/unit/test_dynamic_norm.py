"""Dynamic norms: running statistics of kept features, SyncBatchNorm on CPU, LayerNorm/GroupNorm limits."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from nasprune_cli.dynamic import make_dynamic
from nasprune_cli.errors import NasPruneError


def _bn(momentum: float | None = 0.1) -> nn.Module:
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(6, momentum=momentum)
    with torch.no_grad():
        bn.weight.normal_()
        bn.bias.normal_()
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 1.5)
    return make_dynamic(bn)


def test_batchnorm_train_step_updates_only_kept_running_stats_in_place() -> None:
    bn = _bn()
    mean_buffer = bn.running_mean
    before_mean, before_var = bn.running_mean.clone(), bn.running_var.clone()
    idx = torch.tensor([0, 2, 3])
    bn.set_index("features", idx)
    x = torch.randn(4, 3, 5, 5)
    y = bn(x)
    assert bn.running_mean is mean_buffer and int(bn.num_batches_tracked) == 1
    batch_mean, batch_var = x.mean((0, 2, 3)), x.var((0, 2, 3), unbiased=True)
    assert_close(bn.running_mean[idx], 0.9 * before_mean[idx] + 0.1 * batch_mean)
    assert_close(bn.running_var[idx], 0.9 * before_var[idx] + 0.1 * batch_var)
    dropped = torch.tensor([1, 4, 5])
    assert torch.equal(bn.running_mean[dropped], before_mean[dropped])
    assert torch.equal(bn.running_var[dropped], before_var[dropped])
    shape = (1, 3, 1, 1)
    xhat = (x - batch_mean.view(shape)) / torch.sqrt(x.var((0, 2, 3), unbiased=False).view(shape) + bn.eps)
    assert_close(y, xhat * bn.weight[idx].view(shape) + bn.bias[idx].view(shape))


def test_batchnorm_eval_uses_the_kept_running_stats() -> None:
    bn = _bn().eval()
    idx = torch.tensor([1, 5])
    bn.set_index("features", idx)
    x = torch.randn(2, 2, 3, 3)
    shape = (1, 2, 1, 1)
    ref = (x - bn.running_mean[idx].view(shape)) / torch.sqrt(bn.running_var[idx].view(shape) + bn.eps)
    assert_close(bn(x), ref * bn.weight[idx].view(shape) + bn.bias[idx].view(shape))
    assert int(bn.num_batches_tracked) == 0


def test_batchnorm_cumulative_average_counts_every_batch() -> None:
    bn = _bn(momentum=None)
    before = bn.running_mean.clone()
    x1, x2 = torch.randn(4, 6, 3, 3), torch.randn(4, 2, 3, 3)
    bn(x1)  # all features, factor 1/1: the running mean becomes the batch mean
    assert_close(bn.running_mean, x1.mean((0, 2, 3)))
    bn.set_index("features", torch.tensor([0, 4]))
    bn(x2)  # factor 1/2 on the kept features
    expected = x1.mean((0, 2, 3))
    expected[[0, 4]] = 0.5 * expected[[0, 4]] + 0.5 * x2.mean((0, 2, 3))
    assert_close(bn.running_mean, expected)
    assert int(bn.num_batches_tracked) == 2
    assert not torch.equal(bn.running_mean, before)


def test_sync_batchnorm_runs_on_cpu_and_exports_to_sync_batchnorm() -> None:
    torch.manual_seed(0)
    sbn = make_dynamic(nn.SyncBatchNorm(6))
    sbn.set_index("features", torch.tensor([0, 1, 5]))
    x = torch.randn(4, 3, 2, 2)
    y = sbn(x)
    plain = sbn.export()
    assert type(plain) is nn.SyncBatchNorm and plain.num_features == 3 and plain.process_group is None
    plain.eval()
    sbn.eval()
    assert_close(plain(x), sbn(x))
    assert y.shape == x.shape


def test_instance_norm_with_affine_rejects_a_wrong_channel_count() -> None:
    norm = make_dynamic(nn.InstanceNorm1d(6, affine=True))
    norm.set_index("features", torch.tensor([0, 2]))
    with pytest.raises(ValueError, match=r"match num_features \(2\)"):
        norm(torch.randn(2, 6, 4))


def test_layer_norm_over_two_dims_converts_but_cannot_be_sliced() -> None:
    torch.manual_seed(0)
    original = nn.LayerNorm((4, 5))
    x = torch.randn(2, 4, 5)
    ref = original(x)
    norm = make_dynamic(original, name="blocks.0.norm")
    assert_close(norm(x), ref, rtol=0, atol=0)
    with pytest.raises(NasPruneError, match=r"nn.LayerNorm 'blocks.0.norm'.*LayerNorm over 2 dims cannot be sliced"):
        norm.set_index("features", torch.tensor([0, 1]))
    plain = norm.export()
    assert type(plain) is nn.LayerNorm and plain.normalized_shape == (4, 5)
    assert_close(plain(x), ref, rtol=0, atol=0)


def test_group_norm_kept_count_must_be_divisible_by_num_groups() -> None:
    norm = make_dynamic(nn.GroupNorm(4, 16))
    with pytest.raises(
        NasPruneError,
        match=r"nn.GroupNorm.*'channels'.*kept channel count 6 is not divisible by "
        r"num_groups=4",
    ):
        norm.set_index("channels", torch.arange(6))
    norm.set_index("channels", torch.arange(8))
    assert norm.export().num_channels == 8
