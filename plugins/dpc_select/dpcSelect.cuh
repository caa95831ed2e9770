/*
 * Per-element math of DPCSelect (AiluRus's spatial-aware density peaks selection with the
 * released DPC-kNN's distance convention, as in exporter/ops/density_peaks.py).
 *
 * Every function is __host__ __device__ so that the CUDA kernel and the host-side test
 * (tests/native/dpc_select_host.cpp) run the very same code; with a plain C++ compiler the
 * qualifiers expand to nothing. Each function mirrors one step of DensityPeaksSelection,
 * including its tie-breaking, so the plugin's indices equal the portable graph's.
 */
#ifndef TRT_DPC_SELECT_CUH
#define TRT_DPC_SELECT_CUH

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define DPC_HOST_DEVICE __host__ __device__
#else
#define DPC_HOST_DEVICE
#endif

namespace vitexport
{
namespace dpc_select
{

//! Finite "not a candidate" of the min-reductions, as NOT_A_CANDIDATE in the ONNX lowering.
constexpr float kNotACandidate = 3.0e38F;

//! d(a, b): Euclidean feature distance times the neighbour's weight (spatial weight s / sqrt(C)).
DPC_HOST_DEVICE inline float weightedDistance(float const* a, float const* b, int32_t channels, float weight)
{
    float acc = 0.F;
    for (int32_t c = 0; c < channels; ++c)
    {
        float const diff = b[c] - a[c];
        acc += diff * diff;
    }
    return sqrtf(acc) * weight;
}

//! -log rho: mean of the squares of the k smallest of `count` values. Repeated selection of
//! the next (value, position) pair needs no scratch memory; k is small (1 by default).
DPC_HOST_DEVICE inline float meanOfSmallest(float const* values, int32_t count, int32_t k)
{
    float sum = 0.F;
    float lastValue = 0.F;
    int32_t lastPos = -1;
    for (int32_t t = 0; t < k; ++t)
    {
        int32_t best = -1;
        for (int32_t r = 0; r < count; ++r)
        {
            bool const after = lastPos < 0 || values[r] > lastValue || (values[r] == lastValue && r > lastPos);
            if (after && (best < 0 || values[r] < values[best]))
            {
                best = r;
            }
        }
        if (best < 0)
        {
            break; // only NaN left: the mean is not meaningful anyway
        }
        lastValue = values[best];
        lastPos = best;
        sum += lastValue * lastValue; // ascending order, as the sorted TopK values are summed
    }
    return sum / static_cast<float>(k);
}

//! delta before the peak rule: the smallest weighted distance to a neighbour with a
//! higher density (smaller -log rho; equal -log rho: a lower token index than `token`).
//! `found` says whether there is one.
DPC_HOST_DEVICE inline float nearestDenserDistance(float const* weighted, int32_t const* neighbours,
    float const* negLogRho, int32_t count, float ownNegLogRho, int32_t token, bool* found)
{
    float best = kNotACandidate;
    bool any = false;
    for (int32_t r = 0; r < count; ++r)
    {
        float const theirs = negLogRho[neighbours[r]];
        if (theirs < ownNegLogRho || (theirs == ownNegLogRho && neighbours[r] < token))
        {
            any = true;
            best = weighted[r] < best ? weighted[r] : best;
        }
    }
    *found = any;
    return best;
}

//! log(rho * delta): the center score, ranked in the log domain so that it never underflows. A
//! token with no denser neighbour has delta = the image's largest weighted distance.
DPC_HOST_DEVICE inline float logCenterScore(bool hasDenser, float nearestDenser, float negLogRho, float maxWeighted)
{
    return logf(hasDenser ? nearestDenser : maxWeighted) - negLogRho;
}

//! Token a outranks token b: a higher score, or an equal score and a lower token index.
DPC_HOST_DEVICE inline bool outranks(float scoreA, int32_t a, float scoreB, int32_t b)
{
    return scoreA > scoreB || (scoreA == scoreB && a < b);
}

//! Place of `token` in the ranking of all scores; it is a center when the place is below M.
DPC_HOST_DEVICE inline int32_t centerRank(float const* score, int32_t tokens, int32_t token)
{
    int32_t rank = 0;
    for (int32_t j = 0; j < tokens; ++j)
    {
        rank += (j != token && outranks(score[j], j, score[token], token)) ? 1 : 0;
    }
    return rank;
}

//! Cluster slot of a center: the number of centers with a lower token index (centers ascend).
DPC_HOST_DEVICE inline int32_t centerSlot(int32_t const* rank, int32_t token, int32_t clusters)
{
    int32_t slot = 0;
    for (int32_t j = 0; j < token; ++j)
    {
        slot += rank[j] < clusters ? 1 : 0;
    }
    return slot;
}

//! Position (0..count-1) of the neighbour with the smallest weighted distance among those that
//! are centers (slot >= 0), the spatially nearer one on equal values; -1 when none is a center.
DPC_HOST_DEVICE inline int32_t nearestCenterNeighbour(
    float const* weighted, int32_t const* neighbours, int32_t const* slot, int32_t count)
{
    int32_t best = -1;
    for (int32_t r = 0; r < count; ++r)
    {
        if (slot[neighbours[r]] >= 0 && (best < 0 || weighted[r] < weighted[best]))
        {
            best = r;
        }
    }
    return best;
}

//! ||a - b||^2 as the fallback's GEMM form computes it: |a|^2 + |b|^2 - 2 a.b, clamped at 0.
DPC_HOST_DEVICE inline float expandedSquaredDistance(float const* a, float const* b, int32_t channels)
{
    float aa = 0.F, bb = 0.F, ab = 0.F;
    for (int32_t c = 0; c < channels; ++c)
    {
        aa += a[c] * a[c];
        bb += b[c] * b[c];
        ab += a[c] * b[c];
    }
    float const d = aa + bb - 2.F * ab;
    return d > 0.F ? d : 0.F;
}

//! Fallback assignment: the slot of the center nearest by plain feature distance, the lower
//! slot on equal values. `image` is [N, C], `centers` the M center token indices (ascending).
DPC_HOST_DEVICE inline int32_t nearestCenterByFeature(
    float const* token, float const* image, int32_t const* centers, int32_t clusters, int32_t channels)
{
    int32_t best = 0;
    float bestDistance = 0.F;
    for (int32_t m = 0; m < clusters; ++m)
    {
        float const d = expandedSquaredDistance(token, image + static_cast<int64_t>(centers[m]) * channels, channels);
        if (m == 0 || d < bestDistance)
        {
            best = m;
            bestDistance = d;
        }
    }
    return best;
}

} // namespace dpc_select
} // namespace vitexport

#endif // TRT_DPC_SELECT_CUH
