"""The export check of tools/coverage_dense.py (the detection / segmentation coverage and zoo tests): with data
batches the search refits the kept weights, so the result is compared by shape with the dynamic model, and the plain
export of the searched weights by value (ssdlite320_mobilenet_v3_large "failed" the old check at 320 px: its refit
was kept)."""

from __future__ import annotations

import warnings

import pytest
import torch

from nasprune_cli import convert, search
from nasprune_cli.searching.result import SearchResult
from nasprune_cli.space import SearchSpace
from tests.toys import Chain
from tools.coverage_dense import check_search_result

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def refitted() -> tuple[SearchSpace, SearchResult, torch.Tensor]:
    torch.manual_seed(0)
    x = torch.randn(1, 3, 8, 8)
    space = convert(Chain().eval(), None, x)
    gen = torch.Generator().manual_seed(1)
    data = [(torch.randn(8, 3, 8, 8, generator=gen),) for _ in range(2)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = search(space, {"flops": "50%"}, x, {"data": data, "max_batches": 2})
    return space, result, x


def test_a_refitted_result_passes_and_is_not_the_dynamic_models_values(
    refitted: tuple[SearchSpace, SearchResult, torch.Tensor],
) -> None:
    space, result, x = refitted
    assert result.reconstruction.applied
    with torch.no_grad():  # what the check compared before: the refitted weights against the searched ones
        assert not torch.allclose(result.model.eval()(x), space.model(x), rtol=1e-4, atol=1e-4)
    check_search_result(space, result, x)


def test_an_export_that_differs_from_the_dynamic_model_fails(
    refitted: tuple[SearchSpace, SearchResult, torch.Tensor], monkeypatch: pytest.MonkeyPatch
) -> None:
    space, result, x = refitted
    wrong = space.export()
    with torch.no_grad():
        wrong.head.bias.add_(1.0)
    monkeypatch.setattr(space, "export", lambda: wrong)
    with pytest.raises(AssertionError, match="not close"):
        check_search_result(space, result, x)
