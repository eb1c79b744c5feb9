"""The build stage: the source model, a build step with its check against eager FP32, and the scheduler."""
