"""Training of the small model shipped with the package, the digits Segmenter (`train`); the
model itself is `exporter.models.digits`, its data `exporter.datasets.digits`."""

from pathlib import Path


# Where `vitexport train-demo` writes without --out
DEFAULT_OUT = Path("vitexport-out") / "train-demo"
