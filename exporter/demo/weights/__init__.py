"""The shipped digits Segmenter: weights and the metadata of the run that produced them
(read by the model's entry, `exporter.models.digits`)."""

from ...models.digits import METADATA, WEIGHTS, WEIGHTS_DIR as HERE, config, metadata  # noqa: F401
