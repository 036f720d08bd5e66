"""The held-out probe's statistics on hand-made finals."""
import pytest
import torch

from train_tools.data.seeds import seeded_noise
from train_tools.studies.held_out_probe import STATISTICS, markdown, statistics, verdict


def test_statistics_are_gains_toward_the_teacher():
    teacher = seeded_noise(range(6), (1, 8, 8), torch.float64)
    plain = teacher + 0.4  # a uniform offset: all bias
    corrected = teacher + 0.1
    stats = statistics(plain, corrected, teacher)
    assert set(stats) == set(STATISTICS)
    assert stats["rmse"] == pytest.approx(0.75) and stats["bias"] == pytest.approx(0.75)
    assert stats["move"] == pytest.approx(0.75)  # moved by 0.3 of the plain error 0.4
    assert stats["patch_fd"] == pytest.approx(1 - 0.1 ** 2 / 0.4 ** 2)  # the mean term alone
    assert stats["contrast"] == 0.0 and stats["detail"] == 0.0  # an offset has no texture gap to close
    away = statistics(corrected, plain, teacher)
    assert away["rmse"] < 0 and away["patch_fd"] < 0


def test_verdict_reads_the_paired_interval_and_the_table_sorts_by_it():
    def row(low, high):
        return {"vs_base": {"fd_teacher": {"value": (low + high) / 2, "low": low, "high": high}}}

    assert [verdict(row(-2, -1)), verdict(row(-1, 1)), verdict(row(1, 2))] == ["better", "level", "worse"]
    stats = dict.fromkeys(STATISTICS, 0.0)
    entries = [{"run": "r", "nfe": 5, "method": m, "steps": [1], "verdict": v, "fd_teacher_change": 0.0,
                "held_out": stats, "more": stats} for m, v in (("a", "level"), ("b", "better"))]
    lines = markdown(entries).splitlines()
    assert "| b |" in lines[2] and "| a |" in lines[3]
