"""`--method none`: the unmodified model, the baseline everything is compared with."""

from ..spec import MethodSpec, NoConfig

SPEC = MethodSpec("none", "the unmodified model (baseline)", NoConfig, {"": ".any:build"})
