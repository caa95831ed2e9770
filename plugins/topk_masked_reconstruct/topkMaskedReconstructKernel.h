/*
 * Launcher of the TopKMaskedReconstruct kernel: plain CUDA, no TensorRT types, so that it can be
 * built and tested without TensorRT.
 */
#ifndef TRT_TOPK_MASKED_RECONSTRUCT_KERNEL_H
#define TRT_TOPK_MASKED_RECONSTRUCT_KERNEL_H

#include <cstddef>
#include <cstdint>
#include <cuda_runtime.h>

namespace vitexport
{
namespace topk_reconstruct
{

//! Shapes and attributes of one call; all tensors are dense, row-major float32 (mask: bool).
struct ReconstructParams
{
    int32_t batch;          //!< B
    int32_t pixels;         //!< N, tokens to reconstruct
    int32_t clusters;       //!< M
    int32_t channels;       //!< C, feature size of z and centers
    int32_t valueChannels;  //!< D, feature size of values and of the output
    int32_t k;              //!< clusters each pixel is reconstructed from, 1 <= k <= M
    float tau;              //!< temperature, > 0
    int32_t norm;           //!< WeightNorm: 0 sum, 1 l2
};

//! Dynamic shared memory one block needs (distances to all clusters + the k nearest + weights).
size_t reconstructSharedBytes(int32_t clusters, int32_t k);

//! Largest dynamic shared memory the launcher asks for (the default per-block limit, 48 KiB).
constexpr size_t kMaxSharedBytes = 48 * 1024;

//! out[b, n, :] = sum_j w[b, n, j] * values[b, idx[b, n, j], :] where idx are the k clusters nearest to
//! z[b, n] (restricted to mask[n, :] when mask is not null) and w their normalised weights.
//! z [B, N, C], centers [B, M, C], values [B, M, D], mask [N, M] or nullptr, out [B, N, D].
cudaError_t launchTopKMaskedReconstruct(ReconstructParams const& params, float const* z, float const* centers,
    float const* values, bool const* mask, float* out, cudaStream_t stream);

} // namespace topk_reconstruct
} // namespace vitexport

#endif // TRT_TOPK_MASKED_RECONSTRUCT_KERNEL_H
