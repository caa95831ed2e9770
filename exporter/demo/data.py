"""The digits data lives in `exporter.datasets.digits` (models evaluate on it, and models may
not import demo/); this name stays for the training script and existing callers."""

from ..datasets.digits import *  # noqa: F401,F403
