"""The inception check's case syntax."""
import argparse

import pytest

from train_tools.studies.inception_check import parse_case


def test_parse_case_reads_model_cfg_solver_nfe_and_rho():
    assert parse_case("cond:4:deis:4:9") == ("cond", 4.0, "deis", 4, 9.0, None)
    assert parse_case("uncond:1:ipndm:5:3.5:lms@5") == ("uncond", 1.0, "ipndm", 5, 3.5, ("lms", 5.0))


@pytest.mark.parametrize("text", ["cond:4:deis:4", "cond:4:deis:4:9:lms", "cond:4:deis:4:9:lms@5:x"])
def test_parse_case_rejects_a_wrong_number_of_fields(text):
    with pytest.raises(argparse.ArgumentTypeError, match="MODEL:CFG:SOLVER:NFE:RHO"):
        parse_case(text)
