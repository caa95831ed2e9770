/*
 * DPCSelect as a TensorRT IPluginV3 (Core/Build/Runtime capabilities) and its
 * IPluginCreatorV3One, registered statically so that loading the library is enough
 * (trtexec --staticPlugins, polygraphy --plugins, LD_PRELOAD in Triton).
 */
#include "dpcSelectPlugin.h"
#include "dpcSelectKernel.h"

#include <cstdio>
#include <exception>
#include <stdexcept>

using namespace nvinfer1;

namespace vitexport
{
namespace dpc_select
{
namespace
{
constexpr int32_t kNbInputs = 3;
constexpr int32_t kNbOutputs = 2;
constexpr int32_t kInputZ = 0;
constexpr int32_t kInputNeighbours = 1;
constexpr int32_t kInputWeights = 2;
constexpr int32_t kOutputCenters = 0;
constexpr int32_t kOutputAssignment = 1;
//! TensorRT's own TopK limit; the export form refuses larger M, so the plugin does too.
constexpr int32_t kMaxClusters = 3840;

//! Every error leaves through here: TensorRT's error recorder when one is set, stderr always,
//! so a bad attribute or shape shows up as a one-line message at build time.
void reportError(char const* where, char const* message) noexcept
{
    char text[512];
    std::snprintf(text, sizeof(text), "%s::%s: %s", kPluginName, where, message);
    std::fprintf(stderr, "[TensorRT plugin] %s\n", text);
    IPluginRegistry* registry = getPluginRegistry();
    IErrorRecorder* recorder = registry != nullptr ? registry->getErrorRecorder() : nullptr;
    if (recorder != nullptr)
    {
        recorder->reportError(ErrorCode::kINVALID_ARGUMENT, text);
    }
}

void require(bool condition, std::string const& message)
{
    if (!condition)
    {
        throw std::invalid_argument(message);
    }
}

//! The attribute table, declared once: names and types for the creator, and pointers into
//! `attributes` for createPlugin and serialisation (nullptr for the creator's field list).
std::vector<PluginField> attributeFields(SelectAttributes* attributes)
{
    auto at = [attributes](int32_t SelectAttributes::*member) -> void const* {
        return attributes != nullptr ? &(attributes->*member) : nullptr;
    };
    return {
        PluginField("clusters", at(&SelectAttributes::clusters), PluginFieldType::kINT32, 1),
        PluginField("knn", at(&SelectAttributes::knn), PluginFieldType::kINT32, 1),
    };
}

//! An incoming integer scalar into the declared int32 field; the ONNX parser passes INT as
//! kINT32, other writers may use kINT64.
void readField(PluginField const& given, PluginField const& declared)
{
    std::string const name = given.name;
    require(given.data != nullptr && given.length == 1,
        "attribute '" + name + "' must be a single value (lists are not accepted)");
    int64_t value = 0;
    if (given.type == PluginFieldType::kINT32)
        value = *static_cast<int32_t const*>(given.data);
    else if (given.type == PluginFieldType::kINT64)
        value = *static_cast<int64_t const*>(given.data);
    else
        throw std::invalid_argument("attribute '" + name + "' must be an integer");
    require(value >= INT32_MIN && value <= INT32_MAX, "attribute '" + name + "' does not fit in int32");
    *static_cast<int32_t*>(const_cast<void*>(declared.data)) = static_cast<int32_t>(value);
}

std::string dimsText(Dims const& d)
{
    std::string s = "[";
    for (int32_t i = 0; i < d.nbDims; ++i)
    {
        s += (i ? ", " : "") + std::to_string(d.d[i]);
    }
    return s + "]";
}

//! Two extents agree unless both are known and differ (-1 is a dynamic extent).
bool sameExtent(int64_t a, int64_t b)
{
    return a < 0 || b < 0 || a == b;
}

std::vector<Dims> dimsOf(DynamicPluginTensorDesc const* in, int32_t nbInputs)
{
    std::vector<Dims> dims(nbInputs);
    for (int32_t i = 0; i < nbInputs; ++i)
    {
        dims[i] = in[i].max; // the profile's largest shape bounds the workspace
    }
    return dims;
}
} // namespace

void SelectAttributes::validate() const
{
    require(clusters >= 1 && clusters <= kMaxClusters,
        "clusters = " + std::to_string(clusters) + " is out of range: allowed 1.." + std::to_string(kMaxClusters));
    require(knn >= 1, "knn = " + std::to_string(knn) + " is out of range: allowed 1..lambda");
}

// ---- plugin -------------------------------------------------------------------------------------

DPCSelectPlugin::DPCSelectPlugin(SelectAttributes const& attributes, std::string const& pluginNamespace)
    : mAttributes(attributes)
    , mNamespace(pluginNamespace)
{
    mAttributes.validate();
}

IPluginCapability* DPCSelectPlugin::getCapabilityInterface(PluginCapabilityType type) noexcept
{
    switch (type)
    {
    case PluginCapabilityType::kCORE: return static_cast<IPluginV3OneCore*>(this);
    case PluginCapabilityType::kBUILD: return static_cast<IPluginV3OneBuild*>(this);
    case PluginCapabilityType::kRUNTIME: return static_cast<IPluginV3OneRuntime*>(this);
    }
    return nullptr;
}

IPluginV3* DPCSelectPlugin::clone() noexcept
{
    try
    {
        return new DPCSelectPlugin(mAttributes, mNamespace);
    }
    catch (std::exception const& e)
    {
        reportError("clone", e.what());
    }
    return nullptr;
}

char const* DPCSelectPlugin::getPluginName() const noexcept
{
    return kPluginName;
}

char const* DPCSelectPlugin::getPluginVersion() const noexcept
{
    return kPluginVersion;
}

char const* DPCSelectPlugin::getPluginNamespace() const noexcept
{
    return mNamespace.c_str();
}

int32_t DPCSelectPlugin::getNbOutputs() const noexcept
{
    return kNbOutputs;
}

int32_t DPCSelectPlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    try
    {
        require(nbInputs == kNbInputs, "expects 3 inputs (z, neighbours, weights), got " + std::to_string(nbInputs));
        require(nbOutputs == kNbOutputs, "expects 2 outputs (centers, assignment), got " + std::to_string(nbOutputs));
        require(inputTypes[kInputZ] == DataType::kFLOAT, "z must be float32");
        require(inputTypes[kInputNeighbours] == DataType::kINT32, "neighbours must be int32");
        require(inputTypes[kInputWeights] == DataType::kFLOAT, "weights must be float32");
        // int32 indices: TensorRT's native index type; the ONNX surgery casts to int64 after the node.
        outputTypes[kOutputCenters] = DataType::kINT32;
        outputTypes[kOutputAssignment] = DataType::kINT32;
        return 0;
    }
    catch (std::exception const& e)
    {
        reportError("getOutputDataTypes", e.what());
    }
    return -1;
}

void DPCSelectPlugin::checkShapes(Dims const* dims, int32_t nbInputs) const
{
    require(nbInputs == kNbInputs, "expects 3 inputs, got " + std::to_string(nbInputs));
    Dims const& z = dims[kInputZ];
    Dims const& nb = dims[kInputNeighbours];
    Dims const& w = dims[kInputWeights];
    require(z.nbDims == 3, "z must have shape [B, N, C], has " + dimsText(z));
    require(nb.nbDims == 2, "neighbours must have shape [N, lambda], has " + dimsText(nb));
    require(w.nbDims == 1, "weights must have shape [lambda], has " + dimsText(w));
    require(sameExtent(z.d[1], nb.d[0]),
        "neighbours " + dimsText(nb) + " must have one row per token of z " + dimsText(z));
    require(sameExtent(nb.d[1], w.d[0]),
        "weights " + dimsText(w) + " must have one value per neighbour column " + dimsText(nb));
    int64_t const tokens = z.d[1] >= 0 ? z.d[1] : nb.d[0];
    int64_t const lambda = nb.d[1] >= 0 ? nb.d[1] : w.d[0];
    if (tokens >= 0)
    {
        require(mAttributes.clusters < tokens,
            "clusters M = " + std::to_string(mAttributes.clusters) + " must be smaller than the number of tokens N = "
                + std::to_string(tokens) + ": allowed 1.." + std::to_string(tokens - 1));
    }
    if (lambda >= 0)
    {
        require(lambda >= 1 && (tokens < 0 || lambda < tokens),
            "lambda = " + std::to_string(lambda) + " neighbours per token: allowed 1..N-1");
        require(mAttributes.knn <= lambda,
            "knn = " + std::to_string(mAttributes.knn) + " is larger than lambda = " + std::to_string(lambda)
                + ": allowed 1.." + std::to_string(lambda));
    }
}

int32_t DPCSelectPlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs,
    DimsExprs const* /*shapeInputs*/, int32_t /*nbShapeInputs*/, DimsExprs* outputs, int32_t nbOutputs,
    IExprBuilder& exprBuilder) noexcept
{
    try
    {
        require(nbOutputs == kNbOutputs, "expects 2 outputs");
        // Check what is known here (constant extents); the rest waits for configurePlugin.
        std::vector<Dims> dims(nbInputs);
        for (int32_t i = 0; i < nbInputs; ++i)
        {
            dims[i].nbDims = inputs[i].nbDims;
            for (int32_t j = 0; j < inputs[i].nbDims; ++j)
            {
                dims[i].d[j] = inputs[i].d[j]->isConstant() ? inputs[i].d[j]->getConstantValue() : -1;
            }
        }
        checkShapes(dims.data(), nbInputs);
        outputs[kOutputCenters].nbDims = 2;
        outputs[kOutputCenters].d[0] = inputs[kInputZ].d[0];
        outputs[kOutputCenters].d[1] = exprBuilder.constant(mAttributes.clusters);
        outputs[kOutputAssignment].nbDims = 2;
        outputs[kOutputAssignment].d[0] = inputs[kInputZ].d[0];
        outputs[kOutputAssignment].d[1] = inputs[kInputZ].d[1];
        return 0;
    }
    catch (std::exception const& e)
    {
        reportError("getOutputShapes", e.what());
    }
    return -1;
}

bool DPCSelectPlugin::supportsFormatCombination(
    int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t /*nbInputs*/, int32_t /*nbOutputs*/) noexcept
{
    PluginTensorDesc const& desc = inOut[pos].desc;
    if (desc.format != TensorFormat::kLINEAR)
    {
        return false;
    }
    bool const isFloat = pos == kInputZ || pos == kInputWeights;
    return desc.type == (isFloat ? DataType::kFLOAT : DataType::kINT32);
}

int32_t DPCSelectPlugin::configurePlugin(
    DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* /*out*/,
    int32_t nbOutputs) noexcept
{
    try
    {
        require(nbOutputs == kNbOutputs, "expects 2 outputs");
        std::vector<Dims> const dims = dimsOf(in, nbInputs);
        checkShapes(dims.data(), nbInputs);
        return 0;
    }
    catch (std::exception const& e)
    {
        reportError("configurePlugin", e.what());
    }
    return -1;
}

size_t DPCSelectPlugin::getWorkspaceSize(DynamicPluginTensorDesc const* inputs, int32_t /*nbInputs*/,
    DynamicPluginTensorDesc const* /*outputs*/, int32_t /*nbOutputs*/) const noexcept
{
    Dims const& z = inputs[kInputZ].max;
    Dims const& nb = inputs[kInputNeighbours].max;
    return selectWorkspaceBytes(static_cast<int32_t>(z.d[0]), static_cast<int32_t>(z.d[1]),
        static_cast<int32_t>(nb.d[1]));
}

int32_t DPCSelectPlugin::onShapeChange(
    PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const* /*out*/, int32_t /*nbOutputs*/) noexcept
{
    try
    {
        std::vector<Dims> dims(nbInputs);
        for (int32_t i = 0; i < nbInputs; ++i)
        {
            dims[i] = in[i].dims;
        }
        checkShapes(dims.data(), nbInputs);
        return 0;
    }
    catch (std::exception const& e)
    {
        reportError("onShapeChange", e.what());
    }
    return -1;
}

int32_t DPCSelectPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* /*outputDesc*/,
    void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept
{
    try
    {
        Dims const& z = inputDesc[kInputZ].dims;
        SelectParams params{};
        params.batch = static_cast<int32_t>(z.d[0]);
        params.tokens = static_cast<int32_t>(z.d[1]);
        params.channels = static_cast<int32_t>(z.d[2]);
        params.neighbours = static_cast<int32_t>(inputDesc[kInputNeighbours].dims.d[1]);
        params.clusters = mAttributes.clusters;
        params.knn = mAttributes.knn;
        cudaError_t const status = launchDPCSelect(params, static_cast<float const*>(inputs[kInputZ]),
            static_cast<int32_t const*>(inputs[kInputNeighbours]), static_cast<float const*>(inputs[kInputWeights]),
            static_cast<int32_t*>(outputs[kOutputCenters]), static_cast<int32_t*>(outputs[kOutputAssignment]),
            workspace, stream);
        require(status == cudaSuccess, std::string("kernel launch failed: ") + cudaGetErrorString(status));
        return 0;
    }
    catch (std::exception const& e)
    {
        reportError("enqueue", e.what());
    }
    return -1;
}

IPluginV3* DPCSelectPlugin::attachToContext(IPluginResourceContext* /*context*/) noexcept
{
    return clone(); // no per-context resources
}

PluginFieldCollection const* DPCSelectPlugin::getFieldsToSerialize() noexcept
{
    try
    {
        mSerializedFields = attributeFields(&mAttributes);
        mSerializedCollection.nbFields = static_cast<int32_t>(mSerializedFields.size());
        mSerializedCollection.fields = mSerializedFields.data();
        return &mSerializedCollection;
    }
    catch (std::exception const& e)
    {
        reportError("getFieldsToSerialize", e.what());
    }
    return nullptr;
}

// ---- creator ------------------------------------------------------------------------------------

DPCSelectPluginCreator::DPCSelectPluginCreator()
    : mFields(attributeFields(nullptr))
{
    mFieldCollection.nbFields = static_cast<int32_t>(mFields.size());
    mFieldCollection.fields = mFields.data();
}

char const* DPCSelectPluginCreator::getPluginName() const noexcept
{
    return kPluginName;
}

char const* DPCSelectPluginCreator::getPluginVersion() const noexcept
{
    return kPluginVersion;
}

char const* DPCSelectPluginCreator::getPluginNamespace() const noexcept
{
    return mNamespace.c_str();
}

PluginFieldCollection const* DPCSelectPluginCreator::getFieldNames() noexcept
{
    return &mFieldCollection;
}

IPluginV3* DPCSelectPluginCreator::createPlugin(
    char const* /*name*/, PluginFieldCollection const* fc, TensorRTPhase /*phase*/) noexcept
{
    try
    {
        SelectAttributes attributes; // defaults, overwritten by the fields given
        std::vector<PluginField> const declared = attributeFields(&attributes);
        for (int32_t i = 0; fc != nullptr && i < fc->nbFields; ++i)
        {
            PluginField const& given = fc->fields[i];
            for (PluginField const& field : declared)
            {
                // Names outside the table (plugin_version, if a parser forwards it) are ignored.
                if (given.name != nullptr && std::string(given.name) == field.name)
                {
                    readField(given, field);
                }
            }
        }
        return new DPCSelectPlugin(attributes, mNamespace);
    }
    catch (std::exception const& e)
    {
        reportError("createPlugin", e.what());
    }
    return nullptr;
}

REGISTER_TENSORRT_PLUGIN(DPCSelectPluginCreator);

} // namespace dpc_select
} // namespace vitexport
