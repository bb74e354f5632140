"""Modality baselines: hand-crafted features + XGBoost, CLIP zero-shot, linear probe."""
