"""PAS: PCA-based Adaptive Search sampling correction (Wang et al., ICML 2025), framework-free core.

Never imports ComfyUI: torch, numpy and safetensors only (matplotlib for plot.py). The method as
implemented: docs/method.md; the layout and the data flow: docs/architecture.md.
"""
from .coords import PASCoordinates
from .denoiser import Denoiser
from .grids import edm_sigmas, refine_sigmas
from .pipeline import LEARNED_OBJECTIVE, learn_and_train
from .sampler import sample_pas
from .schedule import CandidateTeacher, LearnedSchedule, learn_schedule
from .search import train_pas
from .settings import ScheduleSettings, SearchSettings, TeacherSettings

__all__ = ["LEARNED_OBJECTIVE", "CandidateTeacher", "Denoiser", "LearnedSchedule", "PASCoordinates",
           "ScheduleSettings", "SearchSettings", "TeacherSettings", "edm_sigmas", "learn_and_train",
           "learn_schedule", "refine_sigmas", "sample_pas", "train_pas"]
