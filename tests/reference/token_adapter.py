"""Token Adapter written straight from the paper (003, section 3.2, Table 4): dense, slow,
float64, one image and one token at a time. The export form in exporter/ must equal it.

Readings shared with the export form (stated in exporter/methods/token_adapter/vit.py):
counts rounded half up; ties in importance broken by the lower index; the most similar
representative / reduced token is the first one (in raster order) among equals; m-threshold
adds every reduced token whose cosine similarity to the original token is >= threshold.
"""

import math

import torch


def counts(H, W, r_h, r_w, unique):
    """(normal rows, normal cols), (kept rows, kept cols), (unique rows, unique cols)."""
    n_h = min(max(math.floor(r_h * H + 0.5), 0), H - 1)
    n_w = min(max(math.floor(r_w * W + 0.5), 0), W - 1)
    k_h, k_w = H - n_h, W - n_w
    u_h = min(max(math.floor(unique * k_h + 0.5), 0), k_h - 1)
    u_w = min(max(math.floor(unique * k_w + 0.5), 0), k_w - 1)
    return (n_h, n_w), (k_h, k_w), (u_h, u_w)


def cosine(a, b):
    na, nb = a.norm(), b.norm()
    if na == 0 or nb == 0:
        return 0.0
    return float(a @ b / (na * nb))


def first_argmax(values):
    best = 0
    for j in range(1, len(values)):
        if values[j] > values[best]:
            best = j
    return best


def group_tokens(z, grid, r_h, r_w, unique):
    """Section 3.2 steps 1-2 for one image z [H*W, C]: which tokens are which.

    Returns (kept: raster list of kept token indices, kind: {index: 'normal'|'unique'|'rep'}).
    """
    H, W = grid
    zg = z.reshape(H, W, -1)
    token_score = [[float(zg[r, c].max()) for c in range(W)] for r in range(H)]
    row_score = [max(token_score[r]) for r in range(H)]
    col_score = [max(token_score[r][c] for r in range(H)) for c in range(W)]
    (n_h, n_w), (k_h, k_w), (u_h, u_w) = counts(H, W, r_h, r_w, unique)
    rows_by_importance = sorted(range(H), key=lambda r: (row_score[r], r))  # least first
    cols_by_importance = sorted(range(W), key=lambda c: (col_score[c], c))
    normal_rows = set(rows_by_importance[:n_h])
    normal_cols = set(cols_by_importance[:n_w])
    unique_rows = set(rows_by_importance[H - u_h :]) if u_h else set()
    unique_cols = set(cols_by_importance[W - u_w :]) if u_w else set()
    kind, kept = {}, []
    for r in range(H):
        for c in range(W):
            i = r * W + c
            if r in normal_rows or c in normal_cols:
                kind[i] = "normal"
            elif r in unique_rows or c in unique_cols:
                kind[i] = "unique"
                kept.append(i)
            else:
                kind[i] = "rep"
                kept.append(i)
    assert len(kept) == k_h * k_w
    return kept, kind


def inject(z, grid, r_h, r_w, unique):
    """Steps 3-5: match each normal token to its most similar representative (cosine) and
    average each group; return X_r^m [K, C] in the kept tokens' original order, and `kept`."""
    kept, kind = group_tokens(z, grid, r_h, r_w, unique)
    reps = [i for i in kept if kind[i] == "rep"]
    groups = {i: [i] for i in kept}
    for i in range(z.shape[0]):
        if kind[i] == "normal":
            sims = [cosine(z[i], z[j]) for j in reps]
            groups[reps[first_argmax(sims)]].append(i)
    merged = torch.stack([torch.stack([z[m] for m in groups[i]]).mean(0) for i in kept])
    return merged, kept


def eject(z, merged, refined, mode, threshold):
    """Rebuild every original token from the refined reduced tokens, matching the original
    tokens z [N, C] against the merged, unrefined ones (X_r^m)."""
    out = []
    for i in range(z.shape[0]):
        sims = [cosine(z[i], merged[j]) for j in range(merged.shape[0])]
        best = first_argmax(sims)
        matched = [best]
        if mode == "m-threshold":
            matched += [j for j in range(len(sims)) if j != best and sims[j] >= threshold]
        out.append(torch.stack([refined[j] for j in matched]).mean(0))
    return torch.stack(out)


def run_model(model, images, alpha, restore_after, r_h, r_w, unique, mode, threshold):
    """The whole patched model in float64, the adapter applied one image at a time.

    `model` must already be in float64. Blocks alpha+1..restore_after see the reduced tokens.
    """
    lay = model.layout
    P = lay.num_prefix
    x = model.embed(images.double())
    saved = None
    feats = []
    for i, blk in enumerate(model.blocks):
        if i == alpha:
            rows, saved = [], []
            for b in range(x.shape[0]):
                z = x[b, P:]
                merged, _ = inject(z, lay.grid, r_h, r_w, unique)
                saved.append((z, merged))
                rows.append(torch.cat([x[b, :P], merged]))
            x = torch.stack(rows)
        x = blk(x)
        if i == restore_after - 1:
            x = torch.stack(
                [
                    torch.cat([x[b, :P], eject(z, merged, x[b, P:], mode, threshold)])
                    for b, (z, merged) in enumerate(saved)
                ]
            )
        if i in model.taps:
            feats.append(x)
    return model.head_map(model.head_tokens(feats), images.shape[-2:])
