"""MobileNet-V2 edge-deployment benchmark: plain functions that tasks.py calls."""
