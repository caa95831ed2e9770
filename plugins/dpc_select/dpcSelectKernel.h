/*
 * Launcher of the DPCSelect kernels: plain CUDA, no TensorRT types, so that it can be built and
 * tested without TensorRT.
 */
#ifndef TRT_DPC_SELECT_KERNEL_H
#define TRT_DPC_SELECT_KERNEL_H

#include <cstddef>
#include <cstdint>
#include <cuda_runtime.h>

namespace vitexport
{
namespace dpc_select
{

//! Shapes and attributes of one call; tensors are dense and row-major.
struct SelectParams
{
    int32_t batch;      //!< B
    int32_t tokens;     //!< N, patch tokens
    int32_t channels;   //!< C
    int32_t neighbours; //!< lambda, spatial neighbours per token, 1 <= lambda <= N - 1
    int32_t clusters;   //!< M, centers to select, 1 <= M <= N - 1
    int32_t knn;        //!< k, neighbours averaged in the density, 1 <= k <= lambda
};

//! Scratch the launcher needs: weighted distances [B, N, lambda], -log rho, scores, ranks and
//! slots [B, N] each, and the peak value per image, each region 256-byte aligned.
size_t selectWorkspaceBytes(int32_t batch, int32_t tokens, int32_t neighbours);

//! Density peaks selection of M centers among the N tokens of each image and assignment of every
//! token to a center.
//! z [B, N, C] float32, neighbours [N, lambda] int32 (token indices, nearest first), weights
//! [lambda] float32 (rank weights s), centers [B, M] int32 (token indices, ascending),
//! assignment [B, N] int32 (cluster slots 0..M-1), workspace of selectWorkspaceBytes().
cudaError_t launchDPCSelect(SelectParams const& params, float const* z, int32_t const* neighbours,
    float const* weights, int32_t* centers, int32_t* assignment, void* workspace, cudaStream_t stream);

} // namespace dpc_select
} // namespace vitexport

#endif // TRT_DPC_SELECT_KERNEL_H
