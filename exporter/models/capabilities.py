"""What a model offers the methods, named once: a method's forms each ask for one of these
(`MethodSpec.forms`), a model declares the ones it has (`DenseModel.capabilities`). Plain
strings, readable in error messages; no torch here (the CLI's --help reads them)."""

# [B, prefix + H*W, C] between blocks: `layout`, `blocks`, `embed`, `head_tokens`, `head_map`
TOKEN_GRID = "a plain token grid"
# [B, H, W, C] per stage, attention in windows: `stages` (WindowStage) and `window_block`
WINDOWS = "windowed stages"
# class / distillation / register tokens before the patch tokens (`layout.num_prefix` > 0)
CLASS_TOKEN = "prefix tokens"
# `head_tokens` maps any number of tokens to as many outputs (Segmenter's mask transformer)
DECODER = "a per-token decoder"
