"""Studies on the demo model: quality-bench validation, acceptance rules, objectives, trajectory PCA."""
