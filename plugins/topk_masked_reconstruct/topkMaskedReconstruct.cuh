/*
 * Per-element math of TopKMaskedReconstruct (Expedite's reconstruction, paper 001 Eq. 4).
 *
 * Every function here is __host__ __device__ so that the CUDA kernel and the host-side test
 * (tests/native/topk_reconstruct_host.cpp) run the very same code; the header also compiles
 * with a plain C++ compiler, where the qualifiers expand to nothing.
 */
#ifndef TRT_TOPK_MASKED_RECONSTRUCT_CUH
#define TRT_TOPK_MASKED_RECONSTRUCT_CUH

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define TMR_HOST_DEVICE __host__ __device__
#else
#define TMR_HOST_DEVICE
#endif

namespace vitexport
{
namespace topk_reconstruct
{

//! Distance of a cluster outside the pixel's window: finite (3e38; the ONNX lowering scores it -3e38),
//! so that (dMin - d) / tau stays finite and its exp is exactly 0.
constexpr float kMaskedDistance = 3.0e38F;
//! Floor of the normaliser, as in exporter.ops.clustering.WEIGHT_FLOOR.
constexpr float kWeightFloor = 1.0e-16F;

enum WeightNorm : int32_t
{
    kNormSum = 0, //!< w / sum(w) (the paper)
    kNormL2 = 1   //!< w / ||w||_2 (the authors' released code)
};

//! ||a - b||^2 over `channels` values; written as a sum of squared differences, which is never
//! negative (the ONNX lowering expands it and clamps at 0 instead).
TMR_HOST_DEVICE inline float squaredDistance(float const* a, float const* b, int32_t channels)
{
    float acc = 0.F;
    for (int32_t c = 0; c < channels; ++c)
    {
        float const diff = a[c] - b[c];
        acc += diff * diff;
    }
    return acc;
}

TMR_HOST_DEVICE inline float maskedDistance(float distance, bool allowed)
{
    return allowed ? distance : kMaskedDistance;
}

//! Insert candidate (distance, index) into the ascending list of the `count` nearest found so far
//! (capacity k); returns the new count. A strict comparison keeps the lower index first on ties.
TMR_HOST_DEVICE inline int32_t insertNearest(
    float* nearDist, int32_t* nearIndex, int32_t count, int32_t k, float distance, int32_t index)
{
    if (count == k && !(distance < nearDist[k - 1]))
    {
        return count;
    }
    int32_t pos = count < k ? count : k - 1;
    while (pos > 0 && distance < nearDist[pos - 1])
    {
        nearDist[pos] = nearDist[pos - 1];
        nearIndex[pos] = nearIndex[pos - 1];
        --pos;
    }
    nearDist[pos] = distance;
    nearIndex[pos] = index;
    return count < k ? count + 1 : k;
}

//! Weights exp((d_min - d) / tau) of the k nearest clusters (ascending distances), normalised.
//! The shift by d_min cancels in both normalisations and keeps the weights from underflowing.
TMR_HOST_DEVICE inline void reconstructionWeights(
    float const* nearDist, int32_t k, float tau, int32_t norm, float* weights)
{
    float const dMin = nearDist[0];
    float total = 0.F;
    for (int32_t j = 0; j < k; ++j)
    {
        float const w = expf((dMin - nearDist[j]) / tau);
        weights[j] = w;
        total += norm == kNormL2 ? w * w : w;
    }
    if (norm == kNormL2)
    {
        total = sqrtf(total);
    }
    total = total > kWeightFloor ? total : kWeightFloor;
    for (int32_t j = 0; j < k; ++j)
    {
        weights[j] /= total;
    }
}

//! One output channel: sum_j weights[j] * values[nearIndex[j], channel] for values [M, D].
TMR_HOST_DEVICE inline float weightedSum(float const* weights, int32_t const* nearIndex, int32_t k,
    float const* values, int32_t valueChannels, int32_t channel)
{
    float acc = 0.F;
    for (int32_t j = 0; j < k; ++j)
    {
        acc += weights[j] * values[static_cast<int64_t>(nearIndex[j]) * valueChannels + channel];
    }
    return acc;
}

} // namespace topk_reconstruct
} // namespace vitexport

#endif // TRT_TOPK_MASKED_RECONSTRUCT_CUH
