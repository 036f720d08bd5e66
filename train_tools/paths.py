"""Folders the tools read and write: the repository root, its .cache/ and train_tools/models/."""
from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
CACHE_ROOT = REPO_ROOT / ".cache"
MODELS_DIR = REPO_ROOT / "train_tools" / "models"  # the quality bench's classifier
