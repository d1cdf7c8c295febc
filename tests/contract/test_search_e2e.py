"""search() / restore() / export on real search spaces: the digits demo, toys and resnet18 (small inputs)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
import torchvision

from nasprune_cli.checkpoint import load_pruned, restore, save_pruned, write_deployable
from nasprune_cli.conversion import convert
from nasprune_cli.demo import DigitsResNet, build, score
from nasprune_cli.dynamic import is_dynamic
from nasprune_cli.errors import CheckpointError, LoadError, SearchError
from nasprune_cli.metrics.flops import count_params, fvcore_flops
from nasprune_cli.recipe.load import load_recipe, recipe_from_dict
from nasprune_cli.searching import config_keys, search
from tests.toys import TOYS, Residual

ROOT = Path(__file__).resolve().parents[2]
DEMO = load_recipe(ROOT / "recipes" / "demo.yaml")
DIGIT = torch.zeros(1, 1, 8, 8)


def demo_search(constraints: dict, **config: object) -> tuple[torch.nn.Module, dict]:
    config = {"recipe": DEMO, "model_spec": {"entry_point": "nasprune_cli.demo:build", "kwargs": {}}, **config}
    return search(build(), constraints, None, config)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def flops_half() -> tuple[torch.nn.Module, dict]:
    return demo_search({"flops": "50%"})


@pytest.mark.parametrize("name", ["flops", "params"])
def test_demo_at_half_budget_lands_between_45_and_50_percent(name: str, flops_half: tuple) -> None:
    result = flops_half if name == "flops" else demo_search({"params": "50%"})
    pruned = result.model
    original = build()
    measured = {"flops": fvcore_flops(pruned, DIGIT), "params": count_params(pruned)}[name]
    reference = {"flops": fvcore_flops(original, DIGIT), "params": count_params(original)}[name]
    assert 0.45 <= measured / reference <= 0.50
    metrics = result.summary()["metrics"]
    assert metrics["pruned"][name] == measured and metrics["original"][name] == reference
    assert metrics["original"]["score"] == pytest.approx(score(original), abs=0.01)
    assert metrics["pruned"]["score"] == pytest.approx(score(pruned))  # accuracy after, as reported
    assert metrics["pruned"]["score"] > 0.9
    assert metrics["score_name"] == "nasprune_cli.demo:score"
    assert result.summary()["layers"] and all(r["kept"] <= r["original"] for r in result.summary()["layers"])


def test_same_seed_same_pruned_model(flops_half: tuple) -> None:
    result = flops_half
    pruned = result.model
    result2 = demo_search({"flops": "50%"})
    again = result2.model
    assert result2.summary()["config"] == result.summary()["config"]
    for (k, a), (_, b) in zip(pruned.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(a, b), k


def test_restore_rebuilds_the_exported_model(tmp_path: Path, flops_half: tuple) -> None:
    result = flops_half
    pruned = result.model
    path = tmp_path / "pruned.pt"
    save_pruned(path, result)
    data = load_pruned(path)
    assert data["model"] == {"entry_point": "nasprune_cli.demo:build", "kwargs": {}}
    assert data["input"] == {"shape": [1, 1, 8, 8], "dtype": "float32"}
    assert data["format_version"] == 1 and data["recipe"]["mode"] == "fastnas"
    assert data["config"] == result.summary()["config"] and data["metrics"] == result.summary()["metrics"]
    assert data["state_dict"].keys() == pruned.state_dict().keys()
    fresh = DigitsResNet()  # untrained: every weight comes from the file
    rebuilt = restore(fresh, path)
    assert not any(is_dynamic(m) for m in rebuilt.modules())
    x = torch.randn(16, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(rebuilt.eval()(x), pruned.eval()(x))
    from_spec = restore(None, path, trust_entry_point=True)  # built from the stored entry point
    with torch.no_grad():
        assert torch.equal(from_spec.eval()(x), pruned(x))
    with pytest.raises(CheckpointError, match=r"pruned\.pt: cannot rebuild .*\(nasprune_cli\.demo:build\)$"):
        restore(Residual(), path)  # another model (3 input channels): one line naming the right entry point


def test_exported_onnx_matches_torch(tmp_path: Path, flops_half: tuple) -> None:
    pytest.importorskip("onnxruntime")
    import onnxruntime as ort

    __result = flops_half
    pruned = __result.model
    path = tmp_path / "model.onnx"
    result = write_deployable(pruned, path, "onnx", torch.randn(1, 1, 8, 8))
    assert result["max_abs_diff"] < 1e-4
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(5, 1, 8, 8)  # another batch size: the batch axis is dynamic
    (got,) = session.run(None, {"input": x.numpy()})
    with torch.no_grad():
        assert torch.allclose(torch.from_numpy(got), pruned.eval()(x), atol=1e-4)


@pytest.mark.parametrize("searcher", ["evolve", "random"])
def test_population_searchers_meet_constraints_on_resnet18(searcher: str) -> None:
    model = torchvision.models.resnet18()
    config = {
        "searcher": searcher,
        "iterations": 6,
        "population_size": 3,
        "candidate_size": 2,
        "mutation_size": 1,
        "crossover_size": 1,
        "max_batches": 1,
    }
    with pytest.warns(UserWarning, match="no --data given"):
        result = search(model, {"flops": "60%", "params": "70%"}, torch.randn(1, 3, 32, 32), config)
        pruned, state = result.model, result.state
    bounds = result.summary()["constraints"]
    assert fvcore_flops(pruned, torch.randn(1, 3, 32, 32)) <= bounds["flops"]
    assert count_params(pruned) <= bounds["params"]
    assert len(state["history"]) == 6
    assert result.summary()["metrics"]["original"]["score"] == pytest.approx(1.0)  # default score of the original
    assert state["evaluations"] <= 7


def test_binary_on_a_converted_space_with_default_score() -> None:
    torch.manual_seed(0)
    dummy = torch.randn(1, 3, 16, 16)
    space = convert(Residual(), None, dummy)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = search(space, {"flops": "40%"}, None, {"max_batches": 2})
        pruned, state = result.model, result.state
    assert fvcore_flops(pruned, dummy) <= 0.4 * space.original_cost.flops
    assert result.summary()["metrics"]["pruned"]["score"] <= 1.0
    assert space.config() == result.summary()["config"]
    # the default score of the original is 1.0 by definition: not evaluated, only the map and the candidates are
    assert state["original_score"] == 1.0
    scored = sum(len(v) for v in state["sensitivity_map"].values())
    assert state["evaluations"] == scored + max(1, sum(c["score"] is not None for c in state["candidates"]))


AUTONAS = load_recipe(
    ROOT / "recipes" / "autonas.yaml",
    {"rules": {"nn.Conv2d": {"*": {"kernel_size": [1, 3]}}}, "input": {"shape": [1, 3, 16, 16]}},
)


@pytest.mark.parametrize(
    ("toy", "mode"), [*((name, "fastnas") for name in TOYS), ("chain", "autonas"), ("residual", "autonas")]
)
def test_search_then_restore_on_every_toy(tmp_path: Path, toy: str, mode: str) -> None:
    make, shape = TOYS[toy]
    torch.manual_seed(0)
    dummy = torch.randn(*shape)
    config = {"max_batches": 2, "recipe": AUTONAS if mode == "autonas" else None}
    if mode == "autonas":
        config.update(searcher="evolve", iterations=4, population_size=4, candidate_size=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = search(make(), {"flops": "70%"}, dummy, config)
        pruned = result.model
    assert fvcore_flops(pruned, dummy) <= result.summary()["constraints"]["flops"]
    path = tmp_path / "pruned.pt"
    save_pruned(path, result)
    torch.manual_seed(1)  # another initialisation: every weight must come from the file
    rebuilt = restore(make(), path, dummy_input=dummy)
    x = torch.randn(*shape)
    with torch.no_grad():
        assert torch.allclose(rebuilt.eval()(x), pruned.eval()(x))


def test_unsatisfiable_constraints_fail_before_any_score_evaluation() -> None:
    calls = []
    with pytest.raises(
        SearchError, match=r"constraints cannot be met: flops <= .*smallest subnet has .*nasprune profile"
    ):
        demo_search({"flops": "1%"}, score=lambda m: calls.append(1) or 1.0)
    assert calls == []


def test_nan_score_and_bad_entry_points() -> None:
    with pytest.raises(SearchError, match=r"score function '.*<lambda>' returned nan"):
        demo_search({"flops": "50%"}, score=lambda m: float("nan"))
    with pytest.raises(LoadError, match="score 'nasprune_cli.demo:nope': module 'nasprune_cli.demo' has no attribute"):
        demo_search({"flops": "50%"}, score="nasprune_cli.demo:nope")


def test_config_keys_are_checked() -> None:
    assert {"score_func", "data_loader", "checkpoint", "fill", "seed"} <= set(config_keys())
    with pytest.raises(SearchError, match="search config: unknown key 'scor'"):
        demo_search({"flops": "50%"}, scor=None)
    with pytest.raises(SearchError, match="no constraints"):
        search(build(), {}, DIGIT, {})


def test_cost_checks_never_retrace_and_fvcore_confirms_the_result(monkeypatch: pytest.MonkeyPatch) -> None:
    """The model is traced once and fvcore runs twice (original, final subnet), however many subnets are costed."""
    import nasprune_cli.conversion as conversion
    import nasprune_cli.searching.finish as finish

    calls = {"trace": 0, "fvcore": 0}

    def counted(name: str, fn: object) -> object:
        def wrapper(*args: object, **kwargs: object) -> object:
            calls[name] += 1
            return fn(*args, **kwargs)  # type: ignore[operator]

        return wrapper

    monkeypatch.setattr(conversion, "trace_model", counted("trace", conversion.trace_model))
    monkeypatch.setattr(conversion, "fvcore_flops", counted("fvcore", conversion.fvcore_flops))
    monkeypatch.setattr(finish, "fvcore_flops", counted("fvcore", finish.fvcore_flops))
    torch.manual_seed(0)
    dummy = torch.randn(1, 3, 16, 16)
    model = Residual()
    forwards = []
    model.register_forward_pre_hook(lambda *_: forwards.append(1))
    space = convert(model, None, dummy)
    assert calls == {"trace": 1, "fvcore": 1}
    forwards.clear()
    for seed in range(50):  # the fast cost model: no forward pass, no trace, no fvcore
        space.cost(space.sample(seed))
    assert forwards == [] and calls == {"trace": 1, "fvcore": 1}

    config = {"searcher": "random", "iterations": 12, "max_batches": 1}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = search(space, {"flops": "60%"}, None, config)
        pruned, state = result.model, result.state
    assert len(state["history"]) == 12
    assert calls == {"trace": 1, "fvcore": 2}  # + the final subnet, confirmed on the exported model
    assert result.summary()["metrics"]["pruned"]["flops"] == fvcore_flops(pruned, dummy)

    monkeypatch.setattr(finish, "fvcore_flops", lambda *args, **kwargs: {"": 1e18})  # a cost model that would be wrong
    with warnings.catch_warnings(), pytest.raises(SearchError, match="breaks the budget when fvcore counts it"):
        warnings.simplefilter("ignore")
        search(space, {"flops": "60%"}, None, config)


class TwoInputs(torch.nn.Module):
    """An image and a vector, as two positional inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Sequential(torch.nn.Conv2d(3, 64, 3, padding=1), torch.nn.BatchNorm2d(64))
        self.vec = torch.nn.Linear(10, 64)
        self.fc = torch.nn.Linear(64, 5)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)) + self.vec(y))


def test_a_model_with_several_inputs_is_searched_on_random_batches_of_all_of_them(tmp_path: Path) -> None:
    torch.manual_seed(0)
    dummy = (torch.randn(2, 3, 8, 8), torch.randn(2, 10))
    with pytest.warns(UserWarning, match="no --data given"):
        result = search(TwoInputs(), {"flops": "70%"}, dummy, {"max_batches": 2})
        pruned = result.model
    assert fvcore_flops(pruned, dummy) <= result.summary()["constraints"]["flops"]
    assert result.summary()["input"] == {"shape": [[2, 3, 8, 8], [2, 10]], "dtype": "float32"}
    path = tmp_path / "pruned.pt"
    save_pruned(path, result)
    rebuilt = restore(TwoInputs(), path)  # the stored input shapes rebuild the space
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(*dummy), pruned.eval()(*dummy))


class ListImages(torch.nn.Module):
    """Detector-like: a list of images in, a list of dicts out; records how many images each call got."""

    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(3, 64, 3, padding=1), torch.nn.BatchNorm2d(64), torch.nn.ReLU(), torch.nn.Conv2d(64, 4, 1)
        )
        self.seen: list[int] = []

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        self.seen.append(len(images))
        return [{"scores": out.mean((1, 2))} for out in self.body(torch.stack(images))]


def test_a_model_taking_a_list_of_images_is_searched_on_lists_of_random_images() -> None:
    torch.manual_seed(0)
    model, dummy = ListImages().eval(), ([torch.rand(3, 8, 8)],)
    with pytest.warns(UserWarning, match="no --data given"):
        result = search(model, {"flops": "70%"}, dummy, {"max_batches": 2})
    assert 8 in model.seen and set(model.seen) <= {1, 8}  # the dummy's one image (trace, FLOPs), 8 random ones
    assert fvcore_flops(result.model, dummy) <= result.summary()["constraints"]["flops"]


def test_a_checkpoint_of_the_same_builder_with_other_weights_is_refused(tmp_path: Path) -> None:
    dummy = torch.randn(1, 3, 16, 16)
    ckpt = tmp_path / "state.pt"
    config = {"max_batches": 1, "checkpoint": ckpt, "model_spec": {"entry_point": "tests.toys:Residual", "kwargs": {}}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        search(Residual(), {"flops": "60%"}, dummy, config)
        torch.manual_seed(0)
        search(Residual(), {"flops": "60%"}, dummy, config)  # the same weights: resumes (here: already done)
        torch.manual_seed(1)
        with pytest.raises(
            CheckpointError, match=r"state\.pt: this checkpoint belongs to a different search \(model\.weights "
        ):
            search(Residual(), {"flops": "60%"}, dummy, config)  # retrained / re-initialised: another model


def test_latency_budget_is_met_by_the_prediction_and_a_rerun_reads_the_same_table(tmp_path: Path) -> None:
    from nasprune_cli.metrics.latency import measure_latency, save_latency_table

    table = tmp_path / "demo.latency.json"
    space = convert(build(), DEMO, DIGIT)
    measured = measure_latency(space, batch=4, repeats=2)
    save_latency_table(measured, table)
    space.attach_latency(measured)
    smallest = space.cost(space.min()).latency
    bound = (smallest + measured.original_ms) / 2
    config = {"latency_table": str(table), "latency_batch": 4}
    result = demo_search({"latency": f"{bound}ms"}, **config)
    summary = result.summary()
    assert summary["latency"]["measured"] is False and summary["latency"]["batch"] == 4
    assert summary["metrics"]["latency_ms"]["pruned"] <= bound
    assert summary["metrics"]["latency_ms"]["original"] == pytest.approx(measured.original_ms)
    assert summary["metrics"]["latency_ratio"] < 1.0
    space.select(summary["config"])
    assert space.cost().latency == pytest.approx(summary["metrics"]["latency_ms"]["pruned"])
    again_result = demo_search({"latency": f"{bound}ms"}, **config)
    assert again_result.summary()["config"] == summary["config"]


def test_a_checkpoint_made_with_another_latency_table_is_refused(tmp_path: Path) -> None:
    import json

    from nasprune_cli.metrics.latency import measure_latency, save_latency_table

    table, checkpoint = tmp_path / "t.json", tmp_path / "state.pt"
    measured = measure_latency(convert(build(), DEMO, DIGIT), batch=1, repeats=1)
    save_latency_table(measured, table)
    config = {"latency_table": str(table), "checkpoint": str(checkpoint)}
    budget = {"latency": f"{0.95 * measured.original_ms}ms", "flops": "60%"}  # absolute: the bound stays the same
    demo_search(budget, **config)
    data = json.loads(table.read_text())
    data["leaves"][0]["samples"] = [[w, t * 2] for w, t in data["leaves"][0]["samples"]]
    table.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="latency_table"):
        demo_search(budget, **config)


def test_a_latency_table_attached_to_the_space_is_used_as_it_is() -> None:
    from nasprune_cli.metrics.latency import measure_latency

    space = convert(build(), DEMO, DIGIT)
    table = measure_latency(space, batch=2, repeats=1)
    space.attach_latency(table)
    result = search(space, {"latency": "100%"}, None, {"recipe": DEMO})
    assert result.summary()["latency"]["measured"] is False and result.summary()["latency"]["batch"] == 2
    same_batch_result = search(space, {"latency": "100%"}, None, {"recipe": DEMO, "latency_batch": 2})
    assert same_batch_result.summary()["latency"]["measured"] is False
    assert result.summary()["metrics"]["latency_ms"]["original"] == table.original_ms


class _ResBlock(torch.nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(c, c, 3, padding=1, bias=False), torch.nn.BatchNorm2d(c), torch.nn.ReLU()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _stage_model() -> torch.nn.Module:
    torch.manual_seed(0)
    stem = torch.nn.Sequential(torch.nn.Conv2d(3, 64, 3, padding=1), torch.nn.BatchNorm2d(64), torch.nn.ReLU())
    stage = torch.nn.Sequential(*(_ResBlock(64) for _ in range(4)))
    head = [torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(64, 10)]
    return torch.nn.Sequential(stem, stage, *head).eval()


def test_autonas_latency_search_skips_blocks_within_the_predicted_budget(tmp_path: Path) -> None:
    from nasprune_cli.metrics.latency import measure_latency, save_latency_table

    recipe = {
        "mode": "autonas",
        "rules": {
            "nn.Conv2d": {},
            "nn.BatchNorm2d": {},
            "nn.Sequential": {"1": {"min_depth": 1, "skippable": "blocks"}},
        },
        "input": {"shape": [1, 3, 16, 16]},
    }
    dummy = torch.zeros(1, 3, 16, 16)
    space = convert(_stage_model(), recipe_from_dict(recipe), dummy)
    assert space.hparams["1.depth"].choices == (1, 2, 3, 4)
    table = measure_latency(space, batch=8, repeats=2)
    path = save_latency_table(table, tmp_path / "stage.latency.json")
    space.attach_latency(table)
    config = {"recipe": recipe, "latency_table": str(path), "latency_batch": 8, "max_batches": 1}
    config.update(searcher="evolve", iterations=12, population_size=6, candidate_size=3)
    bound = 0.6 * table.original_ms
    with pytest.warns(UserWarning, match="no --data given"):
        result = search(_stage_model(), {"latency": f"{bound}ms"}, dummy, config)
        pruned = result.model
    summary = result.summary()
    assert summary["metrics"]["latency_ms"]["pruned"] <= bound
    space.select(summary["config"])
    assert space.cost().latency == pytest.approx(summary["metrics"]["latency_ms"]["pruned"])
    # the stream is frozen (nn.Linear is not converted): only skipping blocks can meet the budget
    assert [n for n, hp in space.hparams.items() if hp.kind == "width"] == [] and summary["config"]["1.depth"] < 4
    # the exported model runs exactly the blocks the config keeps, at the cost the search planned with
    assert len(pruned[1]) == summary["config"]["1.depth"]
    assert fvcore_flops(pruned, dummy) == pytest.approx(space.cost().flops, abs=0.5)
    assert count_params(pruned) == space.cost().params
    with pytest.warns(UserWarning, match="no --data given"):
        again_result = search(_stage_model(), {"latency": f"{bound}ms"}, dummy, config)
    assert again_result.summary()["config"] == summary["config"]
