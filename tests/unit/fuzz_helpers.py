"""What the fuzz tests share: checking a case that loaded, and reporting the bad outcomes."""


def count_loaded(outcomes: dict, bad: list, label: str, check, *args) -> None:
    """Count a case that loaded; if check(*args) raises anything, record it as a bad outcome."""
    outcomes["loaded"] += 1
    try:
        check(*args)
    except BaseException as error:  # noqa: B036 (any exception type is what the fuzz tests look for)
        bad.append((label, f"loaded but inconsistent: {type(error).__name__}: {error}"))


def assert_no_bad_outcomes(bad: list[tuple[str, str]], total: int) -> None:
    assert not bad, f"{len(bad)} bad outcomes of {total}, e.g. " + "; ".join(f"[{a}] {b}" for a, b in bad[:8])
