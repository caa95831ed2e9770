/*
 * TopKMaskedReconstruct kernel: one thread block per pixel (b, n).
 *   1. the block's threads compute the distances to all M centers into shared memory;
 *   2. thread 0 keeps the k nearest (serial insertion: M is a few hundred to a few thousand and
 *      k is small, so this costs about M comparisons) and turns them into weights;
 *   3. the block's threads write the D output channels, each a k-term weighted sum.
 */
#include "topkMaskedReconstruct.cuh"
#include "topkMaskedReconstructKernel.h"

namespace vitexport
{
namespace topk_reconstruct
{
namespace
{
constexpr int32_t kThreadsPerBlock = 128;

__global__ void topkMaskedReconstructKernel(ReconstructParams p, float const* __restrict__ z,
    float const* __restrict__ centers, float const* __restrict__ values, bool const* __restrict__ mask,
    float* __restrict__ out)
{
    extern __shared__ float shared[];
    float* dist = shared;
    float* nearDist = dist + p.clusters;
    float* weights = nearDist + p.k;
    int32_t* nearIndex = reinterpret_cast<int32_t*>(weights + p.k);

    int64_t const pixel = blockIdx.x; // b * N + n
    int64_t const b = pixel / p.pixels;
    int64_t const n = pixel % p.pixels;
    float const* zRow = z + pixel * p.channels;
    float const* batchCenters = centers + b * p.clusters * p.channels;

    for (int32_t j = threadIdx.x; j < p.clusters; j += blockDim.x)
    {
        float const d = squaredDistance(zRow, batchCenters + static_cast<int64_t>(j) * p.channels, p.channels);
        dist[j] = mask == nullptr ? d : maskedDistance(d, mask[n * p.clusters + j]);
    }
    __syncthreads();

    if (threadIdx.x == 0)
    {
        int32_t count = 0;
        for (int32_t j = 0; j < p.clusters; ++j)
        {
            count = insertNearest(nearDist, nearIndex, count, p.k, dist[j], j);
        }
        reconstructionWeights(nearDist, p.k, p.tau, p.norm, weights);
    }
    __syncthreads();

    float const* batchValues = values + b * p.clusters * p.valueChannels;
    float* outRow = out + pixel * p.valueChannels;
    for (int32_t ch = threadIdx.x; ch < p.valueChannels; ch += blockDim.x)
    {
        outRow[ch] = weightedSum(weights, nearIndex, p.k, batchValues, p.valueChannels, ch);
    }
}
} // namespace

size_t reconstructSharedBytes(int32_t clusters, int32_t k)
{
    return static_cast<size_t>(clusters) * sizeof(float) + static_cast<size_t>(k) * (2 * sizeof(float) + sizeof(int32_t));
}

cudaError_t launchTopKMaskedReconstruct(ReconstructParams const& params, float const* z, float const* centers,
    float const* values, bool const* mask, float* out, cudaStream_t stream)
{
    if (params.batch <= 0 || params.pixels <= 0)
    {
        return cudaSuccess; // an empty batch has nothing to write
    }
    if (params.k < 1 || params.k > params.clusters || params.channels < 1 || params.valueChannels < 1
        || !(params.tau > 0.F))
    {
        return cudaErrorInvalidValue;
    }
    size_t const sharedBytes = reconstructSharedBytes(params.clusters, params.k);
    if (sharedBytes > kMaxSharedBytes)
    {
        return cudaErrorInvalidValue;
    }
    int64_t const blocks = static_cast<int64_t>(params.batch) * params.pixels;
    if (blocks > 0x7FFFFFFF)
    {
        return cudaErrorInvalidConfiguration;
    }
    topkMaskedReconstructKernel<<<static_cast<unsigned>(blocks), kThreadsPerBlock, sharedBytes, stream>>>(
        params, z, centers, values, mask, out);
    return cudaGetLastError();
}

} // namespace topk_reconstruct
} // namespace vitexport
