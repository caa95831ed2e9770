/*
 * GPU runs of the plugins' launchers for the kernel harness. Inputs and outputs live in their
 * own allocations; outputs and workspace start as 0xFF bytes, so an entry the kernels fail to
 * write shows up as a mismatch rather than a lucky zero.
 */
#include "device.h"

#include <cuda_runtime.h>

namespace vitexport
{
namespace harness
{
namespace
{
//! Device buffers released when the run ends, whichever way it ends.
class Buffers
{
public:
    ~Buffers()
    {
        for (void* p : mPointers)
            cudaFree(p);
    }

    template <typename T>
    T* upload(std::vector<T> const& host, cudaError_t* status)
    {
        T* p = reserve<T>(host.size(), status);
        if (*status == cudaSuccess && !host.empty())
            *status = cudaMemcpy(p, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice);
        return p;
    }

    template <typename T>
    T* reserve(size_t count, cudaError_t* status)
    {
        void* p = nullptr;
        if (*status == cudaSuccess)
            *status = cudaMalloc(&p, count * sizeof(T) + 1);
        if (*status == cudaSuccess)
        {
            mPointers.push_back(p);
            *status = cudaMemset(p, 0xFF, count * sizeof(T) + 1);
        }
        return static_cast<T*>(p);
    }

private:
    std::vector<void*> mPointers;
};

//! Times `launch` on a fresh non-blocking stream and waits for it; the first error wins.
template <typename Launch>
DeviceRun onStream(cudaError_t status, Launch&& launch)
{
    DeviceRun run;
    cudaStream_t stream = nullptr;
    cudaEvent_t start = nullptr, stop = nullptr;
    if (status == cudaSuccess)
        status = cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking);
    if (status == cudaSuccess)
        status = cudaEventCreate(&start);
    if (status == cudaSuccess)
        status = cudaEventCreate(&stop);
    if (status == cudaSuccess)
        status = cudaEventRecord(start, stream);
    if (status == cudaSuccess)
        status = launch(stream);
    if (status == cudaSuccess)
        status = cudaEventRecord(stop, stream);
    if (status == cudaSuccess)
        status = cudaStreamSynchronize(stream);
    if (status == cudaSuccess)
        status = cudaEventElapsedTime(&run.milliseconds, start, stop);
    if (status != cudaSuccess)
        run.error = cudaGetErrorString(status);
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    cudaStreamDestroy(stream);
    return run;
}

template <typename T>
void download(std::vector<T>& host, T const* device, DeviceRun& run)
{
    cudaError_t const status = cudaMemcpy(host.data(), device, host.size() * sizeof(T), cudaMemcpyDeviceToHost);
    if (run.error.empty() && status != cudaSuccess)
        run.error = cudaGetErrorString(status);
}
} // namespace

std::string deviceProblem()
{
    int count = 0;
    cudaError_t const status = cudaGetDeviceCount(&count);
    if (status != cudaSuccess)
        return std::string("cudaGetDeviceCount: ") + cudaGetErrorString(status);
    return count > 0 ? "" : "no CUDA device";
}

std::string deviceName()
{
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess)
        return "unknown";
    return std::string(prop.name) + " (sm_" + std::to_string(prop.major) + std::to_string(prop.minor) + ")";
}

DeviceRun runSelect(dpc_select::SelectParams const& params, SelectInputs const& in, std::vector<int32_t>& centers,
    std::vector<int32_t>& assignment)
{
    Buffers buffers;
    cudaError_t status = cudaSuccess;
    float const* z = buffers.upload(in.z, &status);
    int32_t const* nb = buffers.upload(in.neighbours, &status);
    float const* weights = buffers.upload(in.weights, &status);
    int32_t* dCenters = buffers.reserve<int32_t>(centers.size(), &status);
    int32_t* dAssignment = buffers.reserve<int32_t>(assignment.size(), &status);
    void* workspace = buffers.reserve<char>(
        dpc_select::selectWorkspaceBytes(params.batch, params.tokens, params.neighbours), &status);
    DeviceRun run = onStream(status, [&](cudaStream_t stream) {
        return dpc_select::launchDPCSelect(params, z, nb, weights, dCenters, dAssignment, workspace, stream);
    });
    download(centers, dCenters, run);
    download(assignment, dAssignment, run);
    return run;
}

DeviceRun runReconstruct(
    topk_reconstruct::ReconstructParams const& params, ReconstructInputs const& in, std::vector<float>& out)
{
    Buffers buffers;
    cudaError_t status = cudaSuccess;
    float const* z = buffers.upload(in.z, &status);
    float const* centers = buffers.upload(in.centers, &status);
    float const* values = buffers.upload(in.values, &status);
    // bool on the device is one byte holding 0 or 1, the layout of the 0/1 chars
    bool const* mask = in.mask.empty() ? nullptr : reinterpret_cast<bool const*>(buffers.upload(in.mask, &status));
    float* dOut = buffers.reserve<float>(out.size(), &status);
    DeviceRun run = onStream(status, [&](cudaStream_t stream) {
        return topk_reconstruct::launchTopKMaskedReconstruct(params, z, centers, values, mask, dOut, stream);
    });
    download(out, dOut, run);
    return run;
}

} // namespace harness
} // namespace vitexport
