"""SViT with a fixed capacity, written out literally: float64, one image and one token at a time.

For each gated block: score every patch token with its gate, sort the tokens by
(score descending, index ascending), run the block on [prefix; the first `capacity` of them],
copy each processed token back to its own position; every other token is left as it was.
"""

import copy
import math

import torch


def gelu(v):
    """GELU with the exact Gaussian CDF, element by element."""
    return torch.tensor(
        [0.5 * a * (1.0 + math.erf(a / math.sqrt(2.0))) for a in v.tolist()], dtype=torch.float64
    )


def score(token, gate):
    """Linear(C, hidden) - GELU - Linear(hidden, 1) for one token."""
    hidden = gelu(gate["fc1.weight"] @ token + gate["fc1.bias"])
    return float(gate["fc2.weight"][0] @ hidden + gate["fc2.bias"][0])


def chosen_tokens(scores, capacity):
    """Indices of the `capacity` best scores, ties broken by the lower index."""
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:capacity]


def run(model, gates, images, alpha, capacity):
    """Returns (output, chosen) with chosen[b][block] the list of processed patch tokens.

    gates: the gates file's dict, "gates.<block>.fc1.weight" etc.
    """
    model = copy.deepcopy(model).double().eval()
    P = model.layout.num_prefix
    per_block = {}
    for key, value in gates.items():
        _, block, name = key.split(".", 2)
        per_block.setdefault(int(block), {})[name] = value.double()
    chosen = [dict() for _ in range(len(images))]
    with torch.no_grad():
        x = model.embed(images.double())
        feats = []
        for i, blk in enumerate(model.blocks):
            if i < alpha:
                x = blk(x)
            else:
                rows = []
                for b in range(len(x)):
                    tokens = x[b].clone()
                    scores = [score(tokens[P + n], per_block[i]) for n in range(len(tokens) - P)]
                    keep = chosen_tokens(scores, capacity)
                    chosen[b][i] = keep
                    seq = torch.cat([tokens[:P], tokens[[P + n for n in keep]]])
                    out = blk(seq.unsqueeze(0))[0]
                    tokens[:P] = out[:P]
                    for r, n in enumerate(keep):
                        tokens[P + n] = out[P + r]
                    rows.append(tokens)
                x = torch.stack(rows)
            if i in model.taps:
                feats.append(x)
        return model.head_map(model.head_tokens(feats), images.shape[-2:]), chosen
