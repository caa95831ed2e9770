"""TensorRT stage: engine building through polygraphy's loaders; imported lazily."""
