"""Cells trained together (bench.packing) against the same cells trained alone."""

import copy

import pytest
import torch

from bench.config import LOSSES, TrialConfig, flatten, resolve_trial
from bench.data import create_dataset
from bench.inputs import FeatureBatches, split_metrics
from bench.losses import build_loss
from bench.models import create_model
from bench.packing import PER_CELL, SHARED, Pack, pack_key, run_packed
from bench.packing.losses import StackedProxyLoss
from bench.packing.optim import StackedAdamW
from bench.train import TrialFailed, TrialResult, make_optimizer, run_trial, seed_everything


def cell(tiny, **dotted) -> TrialConfig:
    return resolve_trial(copy.deepcopy(tiny), dotted=dotted)


@pytest.fixture
def ds(tiny_trial):
    return create_dataset(resolve_trial(tiny_trial).data)


# ---------------------------------------------------------------------------- the key


def test_every_config_field_is_classified_per_cell_or_shared():
    """A new TrialConfig field must be put in PER_CELL or SHARED (bench/packing/key.py)."""
    sections = {s[:-2] for s in SHARED if s.endswith(".*")}
    for entry in LOSSES.entries():
        name = entry.name
        fields = flatten(TrialConfig(loss=entry.config_cls()).model_dump(mode="json"))
        for f in fields:
            classified = f in PER_CELL or f in SHARED or f.split(".")[0] in sections
            if entry.packed is not None:  # the packable losses: every field known
                assert classified, f"{f}: classify it in bench/packing/key.py (PER_CELL or SHARED)"
    train_fields = {f"train.{k}" for k in TrialConfig.model_fields["train"].annotation.model_fields}
    assert train_fields == {f for f in PER_CELL + SHARED if f.startswith("train.")}


def test_pack_key_groups_per_cell_fields_and_splits_on_shapes(tiny_trial, ds):
    base = pack_key(cell(tiny_trial), ds)
    assert base is not None
    same = cell(tiny_trial, **{"loss.alpha": 4, "loss.delta": 0.3, "train.lr": 3e-3, "train.seed": 7,
                               "train.weight_decay": 0.0, "train.proxy_lr_mult": 10})
    assert pack_key(same, ds) == base
    for dotted in ({"train.batch_size": 12}, {"model.embedding_dim": 8}, {"model.head": "linear"},
                   {"train.epochs": 2}, {"eval.every": 2}, {"eval.select_on": "test"}, {"data.seed": 1},
                   {"loss.name": "proxy_nca"}, {"train.sampler": "m_per_class"}, {"train.lr_step": 1}):
        assert pack_key(cell(tiny_trial, **dotted), ds) not in (None, base), dotted
    nca = cell(tiny_trial, **{"loss.name": "proxy_nca"})
    assert pack_key(cell(tiny_trial, **{"loss.name": "proxy_nca", "loss.scale": 8}), ds) == pack_key(nca, ds)
    for dotted in ({"loss.name": "smooth_proxy_anchor"}, {"loss.name": "hierarchical"}, {"loss.name": "triplet"},
                   {"train.compile": True}, {"train.amp": "bf16"}, {"train.grad_clip": 10}):
        assert pack_key(cell(tiny_trial, **dotted), ds) is None, dotted
    images = create_dataset(resolve_trial({"data": {"name": "digits"}}).data)
    assert pack_key(cell(tiny_trial, **{"data.name": "digits", "model.backbone": "small_cnn"}), images) is None


# ---------------------------------------------------------------------------- the stacked pieces


@pytest.mark.parametrize("name,hyper", [("proxy_anchor", [{"alpha": 4, "delta": 0.0}, {"alpha": 64, "delta": 0.4}]),
                                        ("proxy_nca", [{"scale": 8}, {"scale": 32}])])
def test_batched_loss_equals_the_single_cell_modules_in_float64(name, hyper):
    torch.manual_seed(0)
    singles = [build_loss({"name": name, **h}, 10, 6).double() for h in hyper]
    stacked = StackedProxyLoss(singles).double()
    emb = torch.nn.functional.normalize(torch.randn(2, 8, 6, dtype=torch.float64), dim=2).requires_grad_()
    labels = torch.tensor([0, 0, 3, 3, 3, 7, 9, 9])  # classes without positives too
    values = stacked(emb, labels)
    values.sum().backward()
    for c, single in enumerate(singles):
        e = emb.detach()[c].clone().requires_grad_()
        ref = single(e, labels)
        ref.backward()
        assert torch.equal(values[c], ref)  # the same objective, the same operations: to the bit
        assert torch.equal(emb.grad[c], e.grad) and torch.equal(stacked.proxies.grad[c], single.proxies.grad)


def test_stacked_adamw_equals_torch_adamw_per_cell():
    torch.manual_seed(0)
    lrs, wds = [1e-3, 3e-2, 0.1], [0.0, 1e-4, 0.5]
    stacked = torch.randn(3, 4, 5, dtype=torch.float64, requires_grad=True)
    singles = [stacked.detach()[c].clone().requires_grad_() for c in range(3)]
    opt = StackedAdamW([([stacked], torch.tensor(lrs, dtype=torch.float64), torch.tensor(wds, dtype=torch.float64))])
    refs = [torch.optim.AdamW([p], lr=lr, weight_decay=wd) for p, lr, wd in zip(singles, lrs, wds)]
    for step in range(6):
        grads = torch.randn(3, 4, 5, dtype=torch.float64)
        stacked.grad = grads.clone()
        opt.step()
        for c, (p, ref) in enumerate(zip(singles, refs)):
            p.grad = grads[c].clone()
            ref.step()
            torch.testing.assert_close(stacked.detach()[c], p.detach(), rtol=1e-12, atol=1e-14)
        if step == 2:
            opt.scale_lr(0.5)
            for ref in refs:
                ref.param_groups[0]["lr"] *= 0.5


@pytest.mark.parametrize("loss,head", [("proxy_anchor", "mlp"), ("proxy_nca", "linear")])
def test_packed_first_steps_equal_each_cell_alone_in_float64(tiny_trial, ds, loss, head):
    """Ten steps (over two epochs, StepLR halving after the first), cells of two seeds with
    their own hyperparameters: losses and every parameter within 1e-5 relative of the real
    single-cell pieces (create_model, build_loss, make_optimizer, FeatureBatches)."""
    hyper = {"proxy_anchor": [{"loss.alpha": 4, "loss.delta": 0.0}, {"loss.alpha": 32, "loss.delta": 0.2},
                              {"loss.alpha": 64, "loss.delta": 0.4}],
             "proxy_nca": [{"loss.scale": 4}, {"loss.scale": 16}, {"loss.scale": 64}]}[loss]
    common = {"loss.name": loss, "model.head": head, "train.batch_size": 12, "train.lr_step": 1, "train.lr_gamma": 0.5}
    cfgs = [cell(tiny_trial, **common, **h, **{"train.seed": s, "train.lr": lr, "train.weight_decay": wd,
                                                "train.proxy_lr_mult": m})
            for h, s, lr, wd, m in zip(hyper, (0, 5, 0), (1e-3, 3e-3, 2e-3), (1e-4, 0.0, 1e-2), (100, 10, 50))]
    x = torch.as_tensor(ds.train.x, dtype=torch.float64)
    y = torch.as_tensor(ds.train.y)
    steps = 10
    assert 2 * (len(y) // cfgs[0].train.batch_size) >= steps

    pack = Pack(cfgs, ds, x, y, dtype=torch.float64)
    packed_losses = []
    for epoch in (1, 2):
        for bx, by in pack.batches(epoch):
            if len(packed_losses) < steps:
                packed_losses.append(pack.step(bx, by))
        pack.opt.scale_lr(0.5)

    for c, cfg in enumerate(cfgs):
        seed_everything(cfg.train.seed)
        stream = FeatureBatches(x, y, cfg.train)
        model = create_model(cfg.model, x.shape[1]).double()
        loss_fn = build_loss(cfg.loss, ds.num_train_classes, cfg.model.embedding_dim).double()
        opt = make_optimizer(model, loss_fn, cfg.train)
        sched = torch.optim.lr_scheduler.StepLR(opt, 1, 0.5)
        losses = []
        for epoch in (1, 2):
            model.begin_epoch(epoch)
            for b in stream.epoch(epoch):
                if len(losses) == steps:
                    break
                value = loss_fn(model(b.x), b.y)
                opt.zero_grad()
                value.backward()
                opt.step()
                losses.append(value.item())
            sched.step()
        torch.testing.assert_close(torch.stack(packed_losses)[:, c], torch.tensor(losses, dtype=torch.float64),
                                   rtol=1e-5, atol=0)
        for k, v in model.state_dict().items():
            if k.endswith("num_batches_tracked"):
                continue
            torch.testing.assert_close(pack.heads.head_state(c)[k], v, rtol=1e-5, atol=1e-9, msg=f"cell {c} {k}")
        torch.testing.assert_close(pack.loss.proxies.detach()[c], loss_fn.proxies.detach(), rtol=1e-5, atol=1e-9)


# ---------------------------------------------------------------------------- run_packed


def grid(tiny_trial, **common):
    cells = [{"loss.alpha": 4, "loss.delta": 0.0}, {"loss.alpha": 32, "loss.delta": 0.1, "train.seed": 3},
             {"loss.alpha": 64, "loss.delta": 0.4, "train.lr": 3e-3}]
    return [cell(tiny_trial, **common, **c) for c in cells]


def test_run_packed_gives_each_cell_what_run_trial_gives(tiny_trial, ds):
    """float32, three epochs, cells of two seeds: every number of every cell (losses, metrics
    at every epoch, the selected epoch, the final metrics) is what run_trial gives, to the bit."""
    from bench.perf.pack import numbers

    cfgs = grid(tiny_trial)
    seen_seq, seen_pack = [[] for _ in cfgs], [[] for _ in cfgs]
    setup_seq, setup_pack = [], []
    seq = [run_trial(c, ds, callbacks=[lambda e, m, s=s: s.append((e, m))], on_setup=setup_seq.append)
           for c, s in zip(cfgs, seen_seq)]
    packed = run_packed(cfgs, ds, [[lambda e, m, s=s: s.append((e, m))] for s in seen_pack],
                        [setup_pack.append] * len(cfgs))
    assert all(isinstance(r, TrialResult) for r in packed)
    for a, b, sa, sb in zip(seq, packed, seen_seq, seen_pack):
        assert len(a.history) == len(b.history) == 3 and [set(r) for r in a.history] == [set(r) for r in b.history]
        assert [e for e, _ in sa] == [e for e, _ in sb] == [1, 2, 3] and [m for _, m in sb] == b.history
        assert numbers(b) == numbers(a) and b.best_epoch == a.best_epoch
        assert (b.device, b.dataset_fingerprint) == (a.device, a.dataset_fingerprint)
    assert setup_pack == [{**setup_seq[0], "packed": 3}] * 3


def test_packed_metrics_are_split_metrics_of_each_cells_embeddings(tiny_trial, ds):
    """The per-cell evaluation is the library's, on the stacked heads' cell slice."""
    from bench.inputs import create_inputs
    from bench.precision import Precision

    cfgs = grid(tiny_trial)
    with create_inputs(ds, cfgs[0], torch.device("cpu"), Precision(torch.device("cpu"))) as inputs:
        pack = Pack(cfgs, ds, *inputs.train_features(), inputs=inputs)
        for x, y in pack.batches(1):
            pack.step(x, y)
        got = pack.evaluate("val", [1, 2])
        for c, cfg in enumerate(cfgs):
            model = create_model(cfg.model, inputs.input_dim)
            model.load_state_dict(pack.heads.head_state(c), strict=False)
            assert got[c] == inputs.evaluate(model, "val", [1, 2])
            assert got[c] != got[(c + 1) % 3]


def test_a_cell_that_fails_or_is_pruned_leaves_alone(tiny_trial, ds, monkeypatch):
    import optuna


    cfgs = grid(tiny_trial)
    alone = run_packed([cfgs[0], cfgs[2]], ds, [[], []], [None, None])
    forward, calls = StackedProxyLoss.forward, []

    def nan_in_cell_1_at_step_2(self, emb, labels):
        out = forward(self, emb, labels)
        calls.append([cell.alpha for cell in self.cells])
        if len(calls) == 2:
            return out * torch.tensor([1.0, float("nan"), 1.0])
        return out

    monkeypatch.setattr(StackedProxyLoss, "forward", nan_in_cell_1_at_step_2)
    epochs = [[], [], []]
    out = run_packed(cfgs, ds, [[lambda e, m, s=s: s.append(e)] for s in epochs], [None] * 3)
    assert isinstance(out[1], TrialFailed) and str(out[1]) == "loss became nan at epoch 1, step 2"
    assert epochs[1] == [] and calls[2] == [4.0, 64.0]  # the pack went on without it
    for got, ref in zip([out[0], out[2]], alone):
        assert [r["train_loss"] for r in got.history] == pytest.approx([r["train_loss"] for r in ref.history], rel=1e-5)
    monkeypatch.undo()

    def prune_at_2(epoch, row):
        if epoch == 2:
            raise optuna.TrialPruned()

    boom = RuntimeError("tracking store went away")

    def setup_fails(info):
        raise boom

    seen = [[], [], []]
    out = run_packed(cfgs, ds, [[prune_at_2, lambda e, m: seen[0].append(e)],
                                [lambda e, m: seen[1].append(e)], [lambda e, m: seen[2].append(e)]],
                     [None, None, setup_fails])
    assert isinstance(out[0], optuna.TrialPruned) and seen[0] == [1]  # its other callbacks stop too
    assert out[2] is boom and seen[2] == []
    assert isinstance(out[1], TrialResult) and seen[1] == [1, 2, 3]


def test_keyboard_interrupt_in_a_callback_propagates(tiny_trial, ds):
    def interrupt(epoch, row):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_packed(grid(tiny_trial), ds, [[], [interrupt], []], [None] * 3)


def test_select_on_test_and_cells_without_a_shared_key(tiny_trial, ds):
    cfgs = grid(tiny_trial, **{"eval.select_on": "test", "eval.every": 2})
    out = run_packed(cfgs, ds, [[]] * 3, [None] * 3)
    ref = run_trial(cfgs[1], ds)
    assert [r["epoch"] for r in out[1].history] == [r["epoch"] for r in ref.history] == [2, 3]
    assert [set(r) for r in out[1].history] == [set(r) for r in ref.history]
    assert any(k.startswith("test_") for k in out[1].history[0])
    with pytest.raises(ValueError, match="pack_key"):
        run_packed([cfgs[0], cell(tiny_trial)], ds, [[], []], [None, None])


def test_packed_evaluation_leaves_the_thread_count_as_it_found_it(monkeypatch):
    import torch

    from bench.packing import trainer

    seen = []
    monkeypatch.setattr(trainer, "split_metrics", lambda *a, **k: seen.append(1) or {"recall_at_1": 0.0})

    class FakeInputs:
        def split(self, name):
            return type("S", (), {"gallery": None})()

        def tensor(self, split):
            return torch.zeros(5, 2)

    class FakePack(trainer.Pack):
        def __init__(self):  # only what evaluate reads
            self.inputs = FakeInputs()

        cells = 3

        def embed(self, x):
            return torch.zeros(3, len(x), 4)

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert FakePack().evaluate("val", [1]) == [{"recall_at_1": 0.0}] * 3
        assert len(seen) == 3 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------------------- pack invariance


def _demo_cells(epochs: int, n: int | None = None):
    from bench.perf.pack import grid_configs

    cfgs, _ = grid_configs("studies/demo.yaml", None, epochs)
    return cfgs[:n] if n else cfgs


def _check_invariance(cfgs, sizes, capsys):
    from bench.perf.pack import invariance, print_invariance

    rows = invariance(cfgs, create_dataset(cfgs[0].data), sizes)
    with capsys.disabled():
        print(f"\n{len(cfgs)} demo cells, {cfgs[0].train.epochs} epochs:")
        print_invariance(rows)
    _threads, *packed = rows  # 1 against 2 threads may differ: BatchNorm's batch statistics (docs/studies.md)
    for a, b, diff, where in packed:  # the same thread count: to the bit, whatever the pack
        assert diff == 0, f"{a} vs {b}: {diff} at {where}"


def test_a_cells_numbers_do_not_depend_on_its_pack(capsys):
    """Three demo cells, one epoch: sequential at 1 and 2 threads, packed as one pack of
    three and as three packs of one. At 2 threads every number is the same to the bit,
    packed or not; 1 against 2 threads is printed."""
    _check_invariance(_demo_cells(1, 3), (3, 1), capsys)


@pytest.mark.slow
def test_the_demo_grid_does_not_depend_on_its_packs(capsys):
    """The whole demo grid (25 cells, its 20 epochs), packed at 25 and at 5."""
    _check_invariance(_demo_cells(None), (25, 5), capsys)
