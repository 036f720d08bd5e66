"""Scoring samples: RMSE statistics, FID, the Fashion-MNIST classifier and the quality bench."""
