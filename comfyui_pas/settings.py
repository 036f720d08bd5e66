"""The settings of a training: the per-step search, the teacher, and the learned schedule (docs/method.md 5-7).

Each is a frozen dataclass, checked once when it is made; `dataclasses.replace` derives a variant. These
classes are the one source of the defaults: train_pas, the PAS Trainer node and the studies read them here.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

from .basis import basis_is_feasible
from .coords import MAX_BASIS, PARAMETERIZATIONS

LOSSES = ("l1", "l2")
# Held-out checks of a candidate step (each on the final samples of held-out trajectories):
# mean: their RMSE drops; validation: mean, and the median sample's error drops too; spectral: validation, and
# the RMSE of the high-pass part does not grow (a correction that trades fine-detail error for coarse error
# adds grain that FID sees); texture: the RMSE does not grow, nor do the gaps to the teacher's finals in
# per-sample contrast and fine detail (blur and grain); sharpness: the RMSE does not grow and image finals lose
# neither contrast nor fine detail (no blur); patches: sharpness, and the Frechet distance between the 4x4-patch
# distributions of the finals and of the teacher's finals does not grow; none: no held-out check (the paper's rule).
GUARDS = ("validation", "spectral", "mean", "texture", "sharpness", "patches", "none")
DEFAULT_TOLERANCE = {"relative": 0.01, "absolute": 1e-4}
OBJECTIVES = ("local", "end_to_end")
# How the schedule's programme weighs a step's error (docs/method.md 7): "final", by the share of it that
# reaches the final sample (the default; docs/objective-study.md, the schedule choice); "none", as made.
COST_WEIGHTINGS = ("final", "none")
# Named acceptance rules (docs/objective-study.md): the SearchSettings fields that decide which steps are kept.
# paper: the training loss alone, every step a candidate; fid-safe: held-out RMSE gain of 5%, last step left
# to the solver; texture: held-out RMSE and texture not worse, every step a candidate.
ACCEPTANCE_RULES = {
    "fid-safe": {"guard": "validation", "min_held_out_gain": 0.05, "correct_last_step": False},
    "texture": {"guard": "texture", "min_held_out_gain": 0.0, "correct_last_step": True},
    "sharpness": {"guard": "sharpness", "min_held_out_gain": 0.0, "correct_last_step": True},
    "patches": {"guard": "patches", "min_held_out_gain": 0.0, "correct_last_step": True},
    "paper": {"guard": "none", "min_held_out_gain": 0.0, "correct_last_step": True},
}
DEFAULT_RULE = "sharpness"
_DEFAULT = ACCEPTANCE_RULES[DEFAULT_RULE]
# "auto": the rule measured best for the solver on the quality bench (docs/objective-study.md). The paper's
# rule never made deis or ipndm worse there, with or without guidance, and helped ipndm on every row. Under
# CFG 4 it never made dpmpp_2m, euler or ipndm_v worse, and it helped them (dpmpp_2m hurt at CFG 1 and
# unguided), so for them it applies from GUIDED_CFG on (measured at 1 and 4). SOLVER_STEP_RULES: (steps, rule),
# the rule a solver takes on grids of at least that many steps, at any CFG: res_multistep, worse at 4-5 steps
# under the paper's rule, never worse from 8 on. GUIDED_SOLVER_STEP_RULES: the same from GUIDED_CFG on:
# dpmpp_2m under the paper's rule at 10 steps was worse than dpmpp_2m on 2,000 fresh seeds, against the
# teacher's samples and the data (at 8 steps: closer to the teacher's, further from the data; kept). Every
# other case gets DEFAULT_RULE.
AUTO_RULE = "auto"
SOLVER_RULES = {"deis": "paper", "ipndm": "paper"}
GUIDED_SOLVER_RULES = {"euler": "paper", "ipndm_v": "paper", "dpmpp_2m": "paper"}
GUIDED_CFG = 3.0
SOLVER_STEP_RULES = {"res_multistep": (8, "paper")}
GUIDED_SOLVER_STEP_RULES = {"dpmpp_2m": (10, "sharpness")}
RULE_CHOICES = (AUTO_RULE, *ACCEPTANCE_RULES)
ACCEPTANCE_FIELDS = ("guard", "min_held_out_gain", "correct_last_step")


def describe_rule(rule: str) -> str:
    """A rule's name as reports print it; `auto` with what it means per solver."""
    if rule != AUTO_RULE:
        return rule
    guided = "; ".join(f"{s}: {r} at CFG >= {GUIDED_CFG:g}" + (
        f" ({GUIDED_SOLVER_STEP_RULES[s][1]} from {GUIDED_SOLVER_STEP_RULES[s][0]} steps)"
        if s in GUIDED_SOLVER_STEP_RULES else "") for s, r in GUIDED_SOLVER_RULES.items())
    by_steps = "; ".join(f"{s}: {r} from {n} steps" for s, (n, r) in SOLVER_STEP_RULES.items())
    return (f"auto ({'; '.join(f'{s}: {r}' for s, r in SOLVER_RULES.items())}; {guided}; {by_steps}; "
            f"otherwise {DEFAULT_RULE})")


def default_rule(solver: str, cfg: float | None = None, otherwise: str | None = None,
                 steps: int | None = None) -> str:
    """The acceptance rule `auto` means for this (canonical) solver name at this CFG (None: unguided) on a
    grid of `steps` steps (None: below every step_rule threshold); `otherwise` replaces DEFAULT_RULE
    for the solvers without a measured rule of their own (rule studies)."""
    by_steps = step_rule(solver, cfg)
    if steps is not None and by_steps is not None and steps >= by_steps[0]:
        return by_steps[1]
    if cfg is not None and cfg >= GUIDED_CFG and solver in GUIDED_SOLVER_RULES:
        return GUIDED_SOLVER_RULES[solver]
    return SOLVER_RULES.get(solver, otherwise or DEFAULT_RULE)


def step_rule(solver: str, cfg: float | None = None) -> tuple[int, str] | None:
    """(steps, rule): the rule `auto` gives this solver on grids of at least that many steps at this CFG."""
    if cfg is not None and cfg >= GUIDED_CFG and solver in GUIDED_SOLVER_STEP_RULES:
        return GUIDED_SOLVER_STEP_RULES[solver]
    return SOLVER_STEP_RULES.get(solver)
# The PAS Trainer's budget (docs/ab-study.md): at most 1,000 model calls per grid at 3-10 steps.
TRAINER_TRAJECTORIES, TRAINER_TEACHER_NFE = 48, 48


def _set(settings, name, value):
    object.__setattr__(settings, name, value)  # normalising a frozen dataclass in __post_init__


def _choice(name, value, options):
    if value not in options:
        raise ValueError(f"{name} must be one of {options}, got {value!r}")


@dataclass(frozen=True)
class SearchSettings:
    """The knobs of the greedy per-step search (docs/method.md 5-6).

    Defaults: relative coordinates with 3 basis vectors (docs/ab-study.md); a step is kept when its training
    loss drops by more than `tolerance` (1% relative), its held-out trajectories pass `guard`, and their RMSE
    drops by more than `min_held_out_gain`; the last step (onto the grid's end) is a candidate only with
    `correct_last_step`. The last three come from the acceptance rule DEFAULT_RULE (docs/objective-study.md);
    `SearchSettings.for_rule(name)` sets another rule's. `rule_from_steps` (steps, rule): on grids of at least
    that many steps that rule's fields replace these three (`auto` sets it from SOLVER_STEP_RULES; the search
    reads `for_steps(n)`). `time_offsets` first fits one time offset per step (comfyui_pas.offsets, by
    `offset_loss`) and searches the corrections on the shifted model (off by default).
    """

    n_basis: int = 3
    loss: str = "l1"
    tolerance: float | None = None  # None: DEFAULT_TOLERANCE of the mode
    tolerance_mode: str = "relative"
    parameterization: str = "relative"
    guard: str = _DEFAULT["guard"]
    validation_fraction: float = 0.25
    min_held_out_gain: float = _DEFAULT["min_held_out_gain"]
    correct_last_step: bool = _DEFAULT["correct_last_step"]
    rule_from_steps: tuple[int, str] | None = None
    time_offsets: bool = False
    offset_loss: str = "l1"

    @classmethod
    def for_rule(cls, rule: str, solver: str | None = None, cfg: float | None = None, *,
                 otherwise: str | None = None, **fields) -> SearchSettings:
        """The settings of a named acceptance rule (ACCEPTANCE_RULES, or `auto` with the solver's name and
        the CFG, None when unguided; `otherwise`: see default_rule); other fields as keywords."""
        _choice("rule", rule, RULE_CHOICES)
        if otherwise is not None:
            _choice("otherwise", otherwise, tuple(ACCEPTANCE_RULES))
        by_steps = None
        if rule == AUTO_RULE:
            if solver is None:
                raise ValueError("the acceptance rule 'auto' needs the solver's name")
            if not any(name in fields for name in ACCEPTANCE_FIELDS):  # explicit fields hold at every step count
                by_steps = step_rule(solver, cfg)
            rule = default_rule(solver, cfg, otherwise)
        return cls(**{**ACCEPTANCE_RULES[rule], "rule_from_steps": by_steps, **fields})

    def for_steps(self, steps: int) -> SearchSettings:
        """The settings the search uses on a grid of `steps` steps: rule_from_steps applied, then dropped."""
        if self.rule_from_steps is None:
            return self
        start, rule = self.rule_from_steps
        return replace(self, rule_from_steps=None, **(ACCEPTANCE_RULES[rule] if steps >= start else {}))

    @property
    def rule(self) -> str:
        """The name of the acceptance rule these settings follow ('custom' if none), and the rule_from_steps."""
        mine = {name: getattr(self, name) for name in ACCEPTANCE_FIELDS}
        name = next((name for name, fields in ACCEPTANCE_RULES.items() if fields == mine), "custom")
        if self.rule_from_steps is None:
            return name
        return f"{name}, {self.rule_from_steps[1]} from {self.rule_from_steps[0]} steps"

    def __post_init__(self):
        _choice("loss", self.loss, LOSSES)
        _choice("tolerance_mode", self.tolerance_mode, tuple(DEFAULT_TOLERANCE))
        _choice("parameterization", self.parameterization, PARAMETERIZATIONS)
        _choice("guard", self.guard, GUARDS)
        _choice("offset_loss", self.offset_loss, LOSSES)
        _set(self, "time_offsets", bool(self.time_offsets))
        if not 1 <= int(self.n_basis) <= MAX_BASIS:
            raise ValueError(f"n_basis must be 1-{MAX_BASIS}, got {self.n_basis}")
        _set(self, "n_basis", int(self.n_basis))
        tolerance = DEFAULT_TOLERANCE[self.tolerance_mode] if self.tolerance is None else float(self.tolerance)
        _set(self, "tolerance", tolerance)
        _set(self, "min_held_out_gain", float(self.min_held_out_gain))
        _set(self, "correct_last_step", bool(self.correct_last_step))
        if self.rule_from_steps is not None:
            start, rule = self.rule_from_steps
            _choice("rule_from_steps' rule", rule, tuple(ACCEPTANCE_RULES))
            if int(start) < 1:
                raise ValueError(f"rule_from_steps needs a step count >= 1, got {start}")
            _set(self, "rule_from_steps", (int(start), rule))

    def held_out(self, count: int) -> int:
        """How many of `count` trajectories are held out for the guard (the last ones)."""
        if self.guard == "none":
            return 0
        n_val = int(count * self.validation_fraction)
        if n_val < 1 or count - n_val < 1:
            raise ValueError(f"the validation guard needs at least one training and one held-out trajectory "
                             f"({count} trajectories, validation_fraction {self.validation_fraction}); "
                             "use more trajectories or guard='none'")
        return n_val

    def may_correct(self, step: int, steps: int) -> bool:
        """Whether step `step` of `steps` is a candidate: its basis exists and it is not a last step left alone."""
        return basis_is_feasible(step + 2, self.n_basis) and (self.correct_last_step or step < steps - 1)

    def recorded(self) -> dict:
        """The settings as the report and the file's metadata record them."""
        return {"loss": self.loss, "tolerance": self.tolerance, "tolerance_mode": self.tolerance_mode,
                "rule": self.rule, "guard": self.guard, "min_held_out_gain": self.min_held_out_gain,
                "correct_last_step": self.correct_last_step, "time_offsets": self.time_offsets,
                "offset_loss": self.offset_loss,
                **({"rule_from_steps": list(self.rule_from_steps)} if self.rule_from_steps else {})}


@dataclass(frozen=True)
class TeacherSettings:
    """The Heun teacher of train_pas: at least `nfe` model calls per trajectory, or exactly `substeps` points
    inserted in every interval of the student grid(s) when given (docs/method.md 2)."""

    nfe: int = 100
    substeps: int | None = None

    def __post_init__(self):
        if self.substeps is not None and int(self.substeps) < 0:
            raise ValueError(f"teacher substeps must be >= 0, got {self.substeps}")
        _set(self, "nfe", int(self.nfe))


@dataclass(frozen=True)
class ScheduleSettings:
    """The learned schedule (docs/method.md 7): `candidates` points on the EDM rho 7 curve from sigma_max to
    sigma_min (then 0 with append_zero), a Heun teacher with `teacher_substeps` points inserted per interval,
    and the objective that picks the grid. sigma_min / sigma_max None: the model's attributes.
    objective None: 'local' in learn_schedule, LEARNED_OBJECTIVE in learn_and_train. cost_weighting (one of
    COST_WEIGHTINGS): how the programme weighs each step's error."""

    objective: str | None = None
    cost_weighting: str = "final"
    candidates: int = 48
    teacher_substeps: int = 1
    sigma_min: float | None = None
    sigma_max: float | None = None
    append_zero: bool = False

    def __post_init__(self):
        if self.objective is not None:
            _choice("objective", self.objective, OBJECTIVES)
        _choice("cost_weighting", self.cost_weighting, COST_WEIGHTINGS)
        _set(self, "candidates", int(self.candidates))
        _set(self, "teacher_substeps", int(self.teacher_substeps))


def split_overrides(overrides: dict, *classes) -> list[dict]:
    """The keyword overrides sorted by the settings class whose field they name, then the rest."""
    rest, parts = dict(overrides), []
    for cls in classes:
        names = {f.name for f in fields(cls)}
        parts.append({key: rest.pop(key) for key in list(rest) if key in names})
    return parts + [rest]


TEACHER_OPTION_NAMES = {"teacher_nfe": "nfe", "teacher_substeps": "substeps"}


def training_settings(settings=None, teacher=None, **options):
    """(SearchSettings, teacher) from settings objects and flat options: SearchSettings fields (n_basis=4)
    replace the settings' fields, teacher_nfe / teacher_substeps the TeacherSettings' (the PAS Trainer's
    widgets are flat options). Other names are an error."""
    search, rest = split_overrides(options, SearchSettings)
    teaching = {TEACHER_OPTION_NAMES[key]: rest.pop(key) for key in list(rest) if key in TEACHER_OPTION_NAMES}
    if rest:
        raise TypeError(f"unknown training options: {', '.join(sorted(rest))}")
    settings = replace(settings or SearchSettings(), **search)
    if teaching:
        teacher = replace(teacher if isinstance(teacher, TeacherSettings) else TeacherSettings(), **teaching)
    return settings, teacher
