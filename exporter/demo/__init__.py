"""Training of the small model shipped with the package, the digits Segmenter (`train`); the
model itself is `exporter.models.digits`, its data `exporter.datasets.digits`."""
