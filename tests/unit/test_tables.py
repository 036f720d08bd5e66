import pytest

from train_tools.tables import markdown_table


def test_markdown_table_by_hand():
    assert markdown_table(["a", "b"], [[1, "x"], [2.5, None]]) == "| a | b |\n|---|---|\n| 1 | x |\n| 2.5 | None |"
    assert markdown_table(["a", "b"], [[1, 2]], align="lr") == "| a | b |\n|---|---:|\n| 1 | 2 |"


def test_markdown_table_refuses_ragged_rows():
    with pytest.raises(ValueError, match="one entry per header"):
        markdown_table(["a", "b"], [[1]])
