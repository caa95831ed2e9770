/*
 * The harness's GPU side: copies a case's inputs to the device, calls the plugin's own launcher
 * (the function its enqueue calls) on a non-blocking stream, and copies the outputs back.
 */
#ifndef VITEXPORT_PLUGIN_TESTS_DEVICE_H
#define VITEXPORT_PLUGIN_TESTS_DEVICE_H

#include "../dpc_select/dpcSelectKernel.h"
#include "../topk_masked_reconstruct/topkMaskedReconstructKernel.h"
#include "cases.h"

#include <string>
#include <vector>

namespace vitexport
{
namespace harness
{

//! The first CUDA error of a run ("" when none) and the launcher's time on the stream.
struct DeviceRun
{
    std::string error;
    float milliseconds{0.F};
};

//! "" when a CUDA device is usable, else why not.
std::string deviceProblem();
std::string deviceName();

DeviceRun runSelect(dpc_select::SelectParams const& params, SelectInputs const& in, std::vector<int32_t>& centers,
    std::vector<int32_t>& assignment);

DeviceRun runReconstruct(
    topk_reconstruct::ReconstructParams const& params, ReconstructInputs const& in, std::vector<float>& out);

} // namespace harness
} // namespace vitexport

#endif // VITEXPORT_PLUGIN_TESTS_DEVICE_H
