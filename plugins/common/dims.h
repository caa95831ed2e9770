/*
 * Shape helpers shared by the plugins: shapes as text for messages, extents that may still be
 * unknown (-1), and the Dims of each TensorRT phase's tensor descriptions.
 */
#ifndef VITEXPORT_PLUGIN_COMMON_DIMS_H
#define VITEXPORT_PLUGIN_COMMON_DIMS_H

#include "NvInferRuntime.h"

#include <cstdint>
#include <string>
#include <vector>

namespace vitexport
{
namespace common
{

inline std::string dimsText(nvinfer1::Dims const& d)
{
    std::string s = "[";
    for (int32_t i = 0; i < d.nbDims; ++i)
    {
        s += (i ? ", " : "") + std::to_string(d.d[i]);
    }
    return s + "]";
}

//! Two extents agree unless both are known and differ (-1 is a dynamic extent).
inline bool sameExtent(int64_t a, int64_t b)
{
    return a < 0 || b < 0 || a == b;
}

//! Extent i of a runtime shape as the launchers take it.
inline int32_t extent(nvinfer1::Dims const& d, int32_t i)
{
    return static_cast<int32_t>(d.d[i]);
}

//! At getOutputShapes: the constant extents, -1 for those only known at runtime.
inline std::vector<nvinfer1::Dims> knownDims(nvinfer1::DimsExprs const* inputs, int32_t nbInputs)
{
    std::vector<nvinfer1::Dims> dims(nbInputs);
    for (int32_t i = 0; i < nbInputs; ++i)
    {
        dims[i].nbDims = inputs[i].nbDims;
        for (int32_t j = 0; j < inputs[i].nbDims; ++j)
        {
            dims[i].d[j] = inputs[i].d[j]->isConstant() ? inputs[i].d[j]->getConstantValue() : -1;
        }
    }
    return dims;
}

//! At configurePlugin: the profile's largest shapes, which bound workspace and shared memory.
inline std::vector<nvinfer1::Dims> maxDims(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs)
{
    std::vector<nvinfer1::Dims> dims(nbInputs);
    for (int32_t i = 0; i < nbInputs; ++i)
    {
        dims[i] = in[i].max;
    }
    return dims;
}

//! At onShapeChange: the shapes of this run.
inline std::vector<nvinfer1::Dims> runtimeDims(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs)
{
    std::vector<nvinfer1::Dims> dims(nbInputs);
    for (int32_t i = 0; i < nbInputs; ++i)
    {
        dims[i] = in[i].dims;
    }
    return dims;
}

} // namespace common
} // namespace vitexport

#endif // VITEXPORT_PLUGIN_COMMON_DIMS_H
