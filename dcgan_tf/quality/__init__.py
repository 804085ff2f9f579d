"""Sample quality and what D learned: metrics (pure numpy), feature networks and the project's classifier,
evaluation (periodic during training, `--mode=evaluate`, the best checkpoint) and the linear probe."""
