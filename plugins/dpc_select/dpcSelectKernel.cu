/*
 * DPCSelect kernels, six passes on one stream (each needs the previous one finished for the
 * whole image, which is why they are separate launches):
 *   1. one thread per token: weighted distances to its lambda neighbours, -log rho;
 *   2. one block per image: the largest weighted distance (delta of a token with no denser one);
 *   3. one thread per token: log(rho * delta);
 *   4. one thread per token: its place in the score ranking (O(N) comparisons);
 *   5. one thread per token: slot among the centers, scattered into the centers output;
 *   6. one thread per token: assignment (own slot, nearest center neighbour, or the fallback).
 * Passes 4-5 cost O(N^2) per image, a few million comparisons for N ~ 1600-4096; they avoid a
 * sort and reproduce the export form's tie rule (lower token index first) exactly.
 */
#include "dpcSelect.cuh"
#include "dpcSelectKernel.h"

namespace vitexport
{
namespace dpc_select
{
namespace
{
constexpr int32_t kThreadsPerBlock = 128;
constexpr int32_t kReduceThreads = 256;
constexpr size_t kAlign = 256;

size_t aligned(size_t bytes)
{
    return (bytes + kAlign - 1) / kAlign * kAlign;
}

//! Workspace regions, carved in the order of selectWorkspaceBytes().
struct Scratch
{
    float* weighted;
    float* negLogRho;
    float* score;
    int32_t* rank;
    int32_t* slot;
    float* maxWeighted;
};

Scratch carve(void* workspace, int32_t batch, int32_t tokens, int32_t neighbours)
{
    size_t const tokensTotal = static_cast<size_t>(batch) * tokens;
    char* p = static_cast<char*>(workspace);
    Scratch s{};
    s.weighted = reinterpret_cast<float*>(p);
    p += aligned(tokensTotal * neighbours * sizeof(float));
    s.negLogRho = reinterpret_cast<float*>(p);
    p += aligned(tokensTotal * sizeof(float));
    s.score = reinterpret_cast<float*>(p);
    p += aligned(tokensTotal * sizeof(float));
    s.rank = reinterpret_cast<int32_t*>(p);
    p += aligned(tokensTotal * sizeof(int32_t));
    s.slot = reinterpret_cast<int32_t*>(p);
    p += aligned(tokensTotal * sizeof(int32_t));
    s.maxWeighted = reinterpret_cast<float*>(p);
    return s;
}

__global__ void densityKernel(SelectParams p, float const* __restrict__ z, int32_t const* __restrict__ nb,
    float const* __restrict__ weights, Scratch s)
{
    int64_t const t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; // b * N + i
    if (t >= static_cast<int64_t>(p.batch) * p.tokens)
        return;
    int64_t const b = t / p.tokens;
    int64_t const i = t % p.tokens;
    float const* image = z + b * p.tokens * p.channels;
    float* w = s.weighted + t * p.neighbours;
    for (int32_t r = 0; r < p.neighbours; ++r)
    {
        int32_t const j = nb[i * p.neighbours + r];
        w[r] = weightedDistance(image + i * p.channels, image + static_cast<int64_t>(j) * p.channels, p.channels,
            weights[r]);
    }
    s.negLogRho[t] = meanOfSmallest(w, p.neighbours, p.knn);
}

__global__ void peakKernel(SelectParams p, Scratch s)
{
    __shared__ float maxW[kReduceThreads];
    int64_t const b = blockIdx.x;
    int64_t const pairs = static_cast<int64_t>(p.tokens) * p.neighbours;
    float const* w = s.weighted + b * pairs;
    float mw = w[0]; // max is order-independent, so any start value from the image is exact
    for (int64_t k = threadIdx.x; k < pairs; k += blockDim.x)
        mw = fmaxf(mw, w[k]);
    maxW[threadIdx.x] = mw;
    __syncthreads();
    for (int32_t half = blockDim.x / 2; half > 0; half /= 2)
    {
        if (threadIdx.x < half)
        {
            maxW[threadIdx.x] = fmaxf(maxW[threadIdx.x], maxW[threadIdx.x + half]);
        }
        __syncthreads();
    }
    if (threadIdx.x == 0)
        s.maxWeighted[b] = maxW[0];
}

__global__ void scoreKernel(SelectParams p, int32_t const* __restrict__ nb, Scratch s)
{
    int64_t const t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (t >= static_cast<int64_t>(p.batch) * p.tokens)
        return;
    int64_t const b = t / p.tokens;
    int64_t const i = t % p.tokens;
    bool denser = false;
    float const d = nearestDenserDistance(s.weighted + t * p.neighbours, nb + i * p.neighbours,
        s.negLogRho + b * p.tokens, p.neighbours, s.negLogRho[t], static_cast<int32_t>(i), &denser);
    s.score[t] = logCenterScore(denser, d, s.negLogRho[t], s.maxWeighted[b]);
}

__global__ void rankKernel(SelectParams p, Scratch s)
{
    int64_t const t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (t >= static_cast<int64_t>(p.batch) * p.tokens)
        return;
    int64_t const b = t / p.tokens;
    s.rank[t] = centerRank(s.score + b * p.tokens, p.tokens, static_cast<int32_t>(t % p.tokens));
}

__global__ void slotKernel(SelectParams p, Scratch s, int32_t* __restrict__ centers)
{
    int64_t const t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (t >= static_cast<int64_t>(p.batch) * p.tokens)
        return;
    int64_t const b = t / p.tokens;
    int32_t const i = static_cast<int32_t>(t % p.tokens);
    int32_t slot = -1;
    if (s.rank[t] < p.clusters)
    {
        slot = centerSlot(s.rank + b * p.tokens, i, p.clusters);
        centers[b * p.clusters + slot] = i;
    }
    s.slot[t] = slot;
}

__global__ void assignKernel(SelectParams p, float const* __restrict__ z, int32_t const* __restrict__ nb,
    Scratch s, int32_t const* __restrict__ centers, int32_t* __restrict__ assignment)
{
    int64_t const t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (t >= static_cast<int64_t>(p.batch) * p.tokens)
        return;
    int64_t const b = t / p.tokens;
    int64_t const i = t % p.tokens;
    int32_t const* slot = s.slot + b * p.tokens;
    int32_t a = slot[i];
    if (a < 0)
    {
        int32_t const* row = nb + i * p.neighbours;
        int32_t const r = nearestCenterNeighbour(s.weighted + t * p.neighbours, row, slot, p.neighbours);
        float const* image = z + b * p.tokens * p.channels;
        a = r >= 0 ? slot[row[r]]
                   : nearestCenterByFeature(image + i * p.channels, image, centers + b * p.clusters, p.clusters,
                       p.channels);
    }
    assignment[t] = a;
}
} // namespace

size_t selectWorkspaceBytes(int32_t batch, int32_t tokens, int32_t neighbours)
{
    size_t const tokensTotal = static_cast<size_t>(batch) * tokens;
    return aligned(tokensTotal * neighbours * sizeof(float)) + 2 * aligned(tokensTotal * sizeof(float))
        + 2 * aligned(tokensTotal * sizeof(int32_t)) + aligned(static_cast<size_t>(batch) * sizeof(float));
}

cudaError_t launchDPCSelect(SelectParams const& params, float const* z, int32_t const* neighbours,
    float const* weights, int32_t* centers, int32_t* assignment, void* workspace, cudaStream_t stream)
{
    if (params.batch <= 0)
    {
        return cudaSuccess; // an empty batch has nothing to write
    }
    SelectParams const& p = params;
    if (p.tokens < 2 || p.channels < 1 || p.neighbours < 1 || p.neighbours > p.tokens - 1 || p.clusters < 1
        || p.clusters > p.tokens - 1 || p.knn < 1 || p.knn > p.neighbours || workspace == nullptr)
    {
        return cudaErrorInvalidValue;
    }
    int64_t const threads = static_cast<int64_t>(p.batch) * p.tokens;
    int64_t const blocks = (threads + kThreadsPerBlock - 1) / kThreadsPerBlock;
    if (blocks > 0x7FFFFFFF)
    {
        return cudaErrorInvalidConfiguration;
    }
    unsigned const grid = static_cast<unsigned>(blocks);
    Scratch const s = carve(workspace, p.batch, p.tokens, p.neighbours);
    densityKernel<<<grid, kThreadsPerBlock, 0, stream>>>(p, z, neighbours, weights, s);
    peakKernel<<<static_cast<unsigned>(p.batch), kReduceThreads, 0, stream>>>(p, s);
    scoreKernel<<<grid, kThreadsPerBlock, 0, stream>>>(p, neighbours, s);
    rankKernel<<<grid, kThreadsPerBlock, 0, stream>>>(p, s);
    slotKernel<<<grid, kThreadsPerBlock, 0, stream>>>(p, s, centers);
    assignKernel<<<grid, kThreadsPerBlock, 0, stream>>>(p, z, neighbours, s, centers, assignment);
    return cudaGetLastError();
}

} // namespace dpc_select
} // namespace vitexport
