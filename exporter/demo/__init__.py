"""A small trained model shipped with the package: a Segmenter for handwritten-digit
segmentation (data in `data`, training in `train`)."""
