"""The best-row study: its verdicts follow the paired intervals, and its two-part sampling equals one run."""
import json

import torch

from train_tools.bench_setup import BenchSetup, karras
from train_tools.evaluation.quality import beats
from train_tools.studies.best_row import Samples, builtin_markdown, pas_markdown, summary


def _change(value, low, high):
    return {"value": value, "low": low, "high": high}


def _diff(fd, rmse):
    return {"fd_teacher": _change(*fd), "fd_data": _change(0.0, -0.1, 0.1), "rmse": _change(*rmse)}


def test_beats_needs_the_fd_interval_below_zero_and_the_rmse_margin():
    assert beats(_diff((-0.3, -0.4, -0.2), (-0.2, -0.25, -0.15)))
    assert not beats(_diff((-0.3, -0.5, +0.01), (-0.2, -0.25, -0.15)))  # interval reaches zero
    assert not beats(_diff((-0.3, -0.4, -0.2), (-0.05, -0.08, -0.02)))  # RMSE gain under 10%


def _rows():
    def builtin(name, fd):
        return {"nfe": 5, "method": name, "kind": "builtin", "rho": 5.0, "values": {"fd_teacher": fd, "fd_data": 30.0,
                "rmse": 0.3}, "pilot_fd_teacher": {3.0: fd + 1, 5.0: fd, 7.0: fd + 2, 9.0: fd + 3}}

    def pas(solver, steps, fd, fd_change, vs_builtins):
        return {"nfe": 5, "method": f"{solver}+PAS", "kind": "pas", "solver": solver, "rho": 5.0, "rule": "paper",
                "steps": steps, "values": {"fd_teacher": fd}, "model_calls": 2832,
                "vs_base": _diff(fd_change, (-0.2, -0.3, -0.1)), "vs_builtins": vs_builtins}

    won, lost = _diff((-0.5, -0.6, -0.4), (-0.3, -0.4, -0.2)), _diff((-0.1, -0.3, +0.1), (-0.3, -0.4, -0.2))
    return [builtin("euler", 20.0), builtin("uni_pc", 12.0),
            pas("euler", [1, 2], 10.0, (-0.5, -0.6, -0.4), {"euler": won, "uni_pc": lost}),
            pas("deis", [], 5.0, (0.0, 0.0, 0.0), {"euler": won, "uni_pc": won}),  # lowest, but corrects nothing
            pas("dpmpp_2m", [3], 11.0, (-0.05, -0.2, +0.1), {"euler": won, "uni_pc": won})]


def test_summary_names_the_level_row_and_the_unbeaten_builtin():
    text = summary(_rows())
    assert text == ("* NFE 5: never worse MISSED (dpmpp_2m+PAS); best row euler+PAS MISSED against uni_pc")
    rows = [r for r in _rows() if r["method"] not in ("euler+PAS",)]
    assert summary(rows) == "* NFE 5: never worse MISSED (dpmpp_2m+PAS); best row dpmpp_2m+PAS beats every built-in"


def test_tables_show_the_chosen_grid_and_the_verdicts():
    rows = _rows()
    assert "| 5 | euler | 21 / 20 / 22 / 23 | 5 | 20 | 30 | 0.3000 | euler+PAS | -50.0 [-60.0, -40.0] |" in \
        builtin_markdown(rows)
    assert builtin_markdown(rows).splitlines()[-1].endswith("| no |")
    pas_rows = pas_markdown(rows).splitlines()
    assert pas_rows[-2].split(" | ")[9] == "plain" and pas_rows[-1].split(" | ")[9] == "level"


def test_two_part_sampling_equals_one_run():
    """The pilot seeds' finals plus the rest equal sampling every evaluation seed at once (the real demo model)."""
    setup = BenchSetup.create("uncond", 1.0, n=5)
    samples, sampler, sigmas = Samples(setup, pilot=3), setup.pas("euler"), karras(2)
    pilot = setup.run(sampler, sigmas, setup.seeds("eval")[:3])
    images, finals = samples.complete(sampler, sigmas, pilot)
    whole_images, whole = setup.sample(sampler, sigmas)
    # the same seeds in the same order; only the network's batch-size rounding differs
    torch.testing.assert_close(finals, whole, rtol=0, atol=1e-4)
    assert finals.shape[0] == 5 and (images.astype(int) - whole_images.astype(int)).__abs__().max() <= 1


def test_teacher_finals_reuse_a_longer_cached_run(tmp_path, monkeypatch):
    """Fewer seeds from the same start are read from a longer cached run, and equal computing them."""
    from train_tools import bench_setup

    monkeypatch.setattr(bench_setup, "CACHE", tmp_path / "cache")
    longer = BenchSetup.create("uncond", 1.0, n=4).teacher_finals("eval", nfe=3)
    shorter = BenchSetup.create("uncond", 1.0, n=2).teacher_finals("eval", nfe=3)
    assert len(list((tmp_path / "cache").iterdir())) == 1  # nothing new was computed or written
    torch.testing.assert_close(shorter, longer[:2])
    monkeypatch.setattr(bench_setup, "CACHE", tmp_path / "fresh")  # other seeds would differ by O(1)
    torch.testing.assert_close(BenchSetup.create("uncond", 1.0, n=2).teacher_finals("eval", nfe=3), shorter,
                               rtol=0, atol=0.02)


def test_combine_renders_saved_runs(tmp_path):
    from train_tools.studies.best_row import combine

    args = {"model": "cond", "cfg": 4.0, "n": 1000, "pilot": 150, "nfe": [5], "solvers": ["euler", "deis"],
            "builtins": None}
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "best_row.json").write_text(json.dumps(
        {"args": args, "label": "conditional model, CFG 4", "rows": _rows(), "minutes": 61.2,
         "floor": {"fd_teacher": 1.23, "fd_data": 20.8}}))
    text = combine([tmp_path / "run"])
    assert text.startswith("## Headline: the best PAS row against the best built-in\n\n")
    assert ("\n\n## conditional model, CFG 4, N = 1000 (pilot 150), 61 min\n\n"
                           "`python -m train_tools.studies.best_row --model cond --cfg 4 --n 1000 --pilot 150 --nfe 5 "
                           "--solvers euler deis`") in text
    assert "(the floor of this N): FD teacher 1.23, FD data 20.8." in text
    assert summary(_rows()) in text
    assert ("| conditional model, CFG 4 | 5 | uni_pc (rho 5): 12 | euler+PAS (rho 5): 10 | -10.0 [-30.0, +10.0] | "
            "+0.0 [-10.0, +10.0] | -30.0 [-40.0, -20.0] | 1 / 1 / 1 / 0 |") in text  # the headline, over every run


def test_rule_cfg_is_the_cfg_only_where_a_prompt_is_guided():
    from comfyui_pas.settings import default_rule

    assert BenchSetup.create("cond", 4.0, n=1).rule_cfg == 4.0
    assert BenchSetup.create("cond", 4.0, n=1, empty_prompt=True).rule_cfg is None
    assert BenchSetup.create("uncond", 4.0, n=1).rule_cfg is None
    # what it is for: euler takes the paper's rule under guidance only
    assert default_rule("euler", BenchSetup.create("cond", 4.0, n=1).rule_cfg) == "paper"
    assert default_rule("euler", BenchSetup.create("uncond", 4.0, n=1).rule_cfg) != "paper"
