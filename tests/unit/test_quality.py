"""The quality bench's metrics against independent computations, and its paired intervals on planted cases."""
import json

import numpy as np
import pytest
import torch
from pytorch_fid.fid_score import calculate_frechet_distance

from train_tools.data.guided import GuidedModel, labels_for
from train_tools.evaluation.quality import FrechetReference, Judge, KIDReference, Scored


def _gaussian(n, d, shift=0.0, scale=1.0, seed=0):
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    return (rng.normal(size=(n, d)) * scale) @ (np.eye(d) + 0.3 * mix) + shift


@pytest.mark.parametrize("n", [300, 40])  # d <= n (d x d path) and d > n (Gram path)
def test_frechet_matches_pytorch_fid(n):
    ref, feats = _gaussian(500, 64, seed=1), _gaussian(n, 64, shift=0.2, scale=1.1, seed=2)
    expected = calculate_frechet_distance(feats.mean(0), np.cov(feats, rowvar=False),
                                          ref.mean(0), np.cov(ref, rowvar=False))
    assert FrechetReference(ref).distance(feats) == pytest.approx(expected, rel=1e-6, abs=1e-8)


def test_kid_matches_the_unbiased_estimator_by_hand():
    x, y = _gaussian(30, 8, shift=0.5, seed=3), _gaussian(40, 8, seed=4)

    def k(a, b):
        return (a @ b / len(a) + 1) ** 3

    xx = sum(k(x[i], x[j]) for i in range(30) for j in range(30) if i != j) / (30 * 29)
    yy = sum(k(y[i], y[j]) for i in range(40) for j in range(40) if i != j) / (40 * 39)
    xy = sum(k(x[i], y[j]) for i in range(30) for j in range(40)) / (30 * 40)
    ref = KIDReference(y)
    assert ref.distance(ref.prepare(x)) == pytest.approx(1000 * (xx + yy - 2 * xy), rel=1e-9)


def test_kid_is_near_zero_for_the_same_distribution_and_positive_for_a_shift():
    ref = KIDReference(_gaussian(800, 16, seed=5))
    same = ref.distance(ref.prepare(_gaussian(400, 16, seed=6)))
    shifted = ref.distance(ref.prepare(_gaussian(400, 16, shift=0.3, seed=6)))
    assert abs(same) < 0.2 * shifted and shifted > 0


def _scored(judge, feats, refs):
    out = Scored()
    for name, ref in refs.items():
        rotated = feats @ ref.root
        out.values[name] = ref.distance(feats)
        out.boots[name] = np.array([ref.distance(feats[i], rotated[i]) for i in judge.idx])
    return out


def test_paired_interval_detects_a_small_planted_shift_and_not_a_null():
    ref = {"fd": FrechetReference(_gaussian(2000, 16, seed=7))}
    judge = Judge(500, {"x": _gaussian(50, 16, seed=8)}, n_boot=300, seed=1)
    base = _gaussian(500, 16, shift=0.3, seed=9)
    a, b = _scored(judge, base, ref), _scored(judge, base + 0.01, ref)  # same seeds, b slightly further away
    diff = Judge.difference(b, a, "fd")
    assert diff.low > 0 and diff.excludes_zero()
    null = Judge.difference(a, _scored(judge, base.copy(), ref), "fd")
    assert null.low == null.high == 0 and not null.excludes_zero()
    # Unpaired noise of a different seed set is far larger than the planted gap.
    other = _scored(judge, _gaussian(500, 16, shift=0.3, seed=10), ref)
    assert abs(other.values["fd"] - a.values["fd"]) > diff.value


def test_judge_scores_rmse_and_class_accuracy_per_seed():
    from train_tools.data import fashion_mnist
    from train_tools.evaluation import classifier

    images, labels = fashion_mnist.load_images("test")[:200], fashion_mnist.load_labels("test")[:200]
    feats = classifier.features(fashion_mnist.load_images("test")[200:1200])
    teacher = fashion_mnist.to_model_space(images)
    finals = teacher + 0.5
    judge = Judge(200, {"data": feats}, teacher_finals=teacher, labels=labels, n_boot=50)
    scored = judge.score(images, finals)
    assert scored.values["rmse"] == pytest.approx(0.5)
    same = judge.score(images, teacher)  # the teacher's own images: zero distance on the same seeds
    assert abs(same.values["fd_paired"]) < 1e-5 and np.allclose(same.boots["fd_paired"], 0, atol=1e-5)
    assert same.values["agree"] == 1.0 and np.all(same.boots["agree"] == 1.0)
    shifted = judge.score(np.roll(images, 1, axis=0), finals)  # each seed shows its neighbour's image
    predicted = classifier.predict(images)
    assert shifted.values["agree"] == pytest.approx(float((np.roll(predicted, 1) == predicted).mean()))
    assert shifted.values["agree"] < 0.5
    assert scored.values["acc"] == pytest.approx(classifier.accuracy(classifier.load_classifier(), images, labels))
    assert scored.values["acc"] > 0.85  # the test split is classified well (the committed model's ~92%)
    with pytest.raises(ValueError, match="200 seeds"):
        judge.score(images[:10])


def test_judge_scores_in_another_classifiers_features_when_given_one():
    from train_tools.data import fashion_mnist
    from train_tools.evaluation import classifier

    torch.manual_seed(3)
    other = classifier.Classifier().eval().requires_grad_(False)  # untrained: features unlike the committed net's
    other.metadata = {}
    images, reference = fashion_mnist.load_images("test")[:150], fashion_mnist.load_images("test")[150:650]
    judge = Judge(150, {"data": classifier.features(reference, other)}, n_boot=20, network=other)
    expected = calculate_frechet_distance(*_moments(classifier.features(images, other)),
                                          *_moments(classifier.features(reference, other)))
    scored = judge.score(images, labels=None)
    assert scored.values["fd_data"] == pytest.approx(expected, rel=1e-6)
    committed = Judge(150, {"data": classifier.features(reference)}, n_boot=20).score(images, labels=None)
    assert abs(committed.values["fd_data"] - scored.values["fd_data"]) > 1e-3 * expected


def _moments(feats):
    return feats.mean(0), np.cov(feats, rowvar=False)


def test_features_and_classes_in_one_pass_match_the_separate_calls():
    from train_tools.data import fashion_mnist
    from train_tools.evaluation import classifier

    images = fashion_mnist.load_images("test")[:300]
    feats, classes = classifier.features_and_classes(images)
    np.testing.assert_allclose(feats, classifier.features(images), rtol=1e-6, atol=1e-8)
    np.testing.assert_array_equal(classes, classifier.predict(images))


def test_judge_scores_inception_fd_with_paired_resamples():
    from train_tools.data import fashion_mnist

    images = fashion_mnist.load_images("test")[:60]
    reference, near, far = _gaussian(300, 96, seed=11), _gaussian(60, 96, seed=12), _gaussian(60, 96, shift=0.5, seed=12)
    judge = Judge(60, {}, inception_reference=reference, n_boot=40)
    a, b = judge.score(images, inception_feats=near), judge.score(images, inception_feats=far)
    expected = calculate_frechet_distance(near.mean(0), np.cov(near, rowvar=False),
                                          reference.mean(0), np.cov(reference, rowvar=False))
    assert a.values["fid"] == pytest.approx(expected, rel=1e-6) and a.boots["fid"].shape == (40,)
    assert a.boots["fid"][0] == pytest.approx(FrechetReference(reference).distance(near[judge.idx[0]]), rel=1e-9)
    assert Judge.difference(b, a, "fid").low > 0  # the shifted set, on the same resampled seeds


class _TwoBranch(torch.nn.Module):
    """A conditional 'model' whose output depends on the label in a known way."""

    num_classes = 10
    sigma_min, sigma_max = 0.002, 80.0

    def forward(self, x, sigma, class_labels=None):
        sigma = torch.as_tensor(sigma).reshape(-1, 1, 1, 1)
        shift = torch.zeros(x.shape[0]) if class_labels is None else (class_labels.float() + 1)
        return x / (1 + sigma) + shift.reshape(-1, 1, 1, 1)


def test_guided_model_combines_branches_as_comfyui_cfg():
    model, x, sigma = _TwoBranch(), torch.randn(4, 1, 2, 2), torch.tensor([1.5] * 4)
    labels = labels_for([3, 14, 25, 6])
    assert labels.tolist() == [3, 4, 5, 6]
    cond, uncond = model(x, sigma, labels), model(x, sigma, torch.full_like(labels, -1))
    torch.testing.assert_close(GuidedModel(model, 4.0)(x, sigma, class_labels=labels), uncond + 4.0 * (cond - uncond))
    torch.testing.assert_close(GuidedModel(model, 1.0)(x, sigma, class_labels=labels), cond)
    assert GuidedModel(model, 4.0).calls_per_eval() == 2
    bound = GuidedModel(model, 4.0).bind([3, 14, 25, 6])
    torch.testing.assert_close(bound(x, sigma), uncond + 4.0 * (cond - uncond))
    with pytest.raises(ValueError, match="bound to 4 seeds"):
        bound(x[:2], sigma[:2])


def test_study_precision_and_agreement_on_hand_made_scores():
    from train_tools.studies.quality_study import agreement, precision

    def scored(value, spread):
        out = Scored()
        out.values["fd_teacher"] = value
        out.boots["fd_teacher"] = value + spread * np.linspace(-1, 1, 101)
        return out

    results = {"a 4": scored(10.0, 0.0), "b 4": scored(20.0, 0.0), "c 6": scored(5.0, 0.0)}
    configs = [("a 4", "builtin", "a", 4), ("b 4", "builtin", "b", 4), ("c 6", "builtin", "c", 6)]
    prec = precision(results, configs)["fd_teacher"]
    assert prec["pairs"] == 1 and prec["max"] == 0.0 and prec["within_1pct"] == 1  # same-NFE pairs only
    rho = agreement(results, {"a 4": 100.0, "b 4": 200.0, "c 6": 50.0})["fd_teacher"]
    assert rho["rho"] == pytest.approx(1.0) and rho["configs"] == 3


def test_rule_table_shows_each_rule_against_its_base():
    from comfyui_pas import SearchSettings
    from train_tools.studies.rule_study import RULES, parse_rule, rules_markdown

    assert RULES["paper"]["guard"] == "none" and RULES["paper"]["correct_last_step"]  # the paper's rule
    assert all(SearchSettings(**fields) for fields in RULES.values())
    assert parse_rule("paper@48", 12) == ("paper", 48) and parse_rule("fid-safe", 12) == ("fid-safe", 12)
    with pytest.raises(ValueError, match="unknown rule"):
        parse_rule("papers@48", 12)
    change = {"value": -0.25, "low": -0.3, "high": -0.2}
    rows = [{"nfe": 5, "solver": "deis", "rule": "(ComfyUI, uncorrected)", "steps": [], "values": {"fd_teacher": 40.0}},
            {"nfe": 5, "solver": "deis", "rule": "paper@48", "steps": [1, 2], "values": {"fd_teacher": 30.0},
             "vs_base": {"fd_teacher": change, "fd_data": change, "rmse": change}, "spread": 0.7, "model_calls": 2832}]
    text = rules_markdown(rows, "conditional model, CFG 4", 1000)
    assert "| 5 | deis | paper@48 | [1, 2] | 30 | -25.0 [-30.0, -20.0] |" in text and "N = 1000" in text
    assert text.rstrip().endswith("| 0.700 | 2,832 |")
    worse = {"value": 0.1, "low": 0.05, "high": 0.15}
    rows.append({**rows[1], "rule": "sharpness@48", "steps": [2],
                 "vs_first_rule": {"rule": "paper@48", "fd_teacher": worse, "fd_data": change, "rmse": worse}})
    text = rules_markdown(rows, "conditional model, CFG 4", 1000)
    assert "FD teacher vs the first rule %" in text
    assert text.rstrip().endswith("| paper@48: +10.0 [+5.0, +15.0] | -25.0 [-30.0, -20.0] | +10.0 [+5.0, +15.0] |")
    assert "| 0.700 | 2,832 |  |  |  |" in text  # the first rule's own row leaves the columns empty


def test_rule_verdicts_follow_the_interval(tmp_path):
    from train_tools.studies.rule_study import combine, verdict

    def row(nfe, steps, low, high):
        change = {"value": (low + high) / 2, "low": low, "high": high}
        return {"nfe": nfe, "solver": "deis", "rule": "texture@48", "steps": steps, "values": {"fd_teacher": 1.0},
                "vs_base": {"fd_teacher": change, "fd_data": change, "rmse": change}}

    rows = [row(4, [1], -0.3, -0.1), row(5, [1], -0.1, 0.1), row(6, [], -0.01, 0.01), row(8, [2], 0.05, 0.2)]
    assert [verdict(r) for r in rows] == ["better", "level", "plain", "worse"]
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "rules.json").write_text(json.dumps({"args": {"model": "uncond", "cfg": 4.0, "n": 1000},
                                                             "rows": rows}))
    text = combine([tmp_path / "run"])
    assert "| texture@48 | unconditional model | 1 | 1 | 1 | 1 | deis 8 |" in text
