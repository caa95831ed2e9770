/*
 * TopKMaskedReconstruct as a TensorRT IPluginV3 (Core/Build/Runtime capabilities) and its
 * IPluginCreatorV3One, registered statically so that loading the library is enough
 * (trtexec --staticPlugins, polygraphy --plugins, LD_PRELOAD in Triton).
 */
#include "topkMaskedReconstructPlugin.h"
#include "topkMaskedReconstruct.cuh"
#include "topkMaskedReconstructKernel.h"

#include <cmath>
#include <cstdio>
#include <exception>
#include <stdexcept>

using namespace nvinfer1;

namespace vitexport
{
namespace topk_reconstruct
{
namespace
{
constexpr int32_t kMaxK = 1024;
constexpr int32_t kInputZ = 0;
constexpr int32_t kInputCenters = 1;
constexpr int32_t kInputValues = 2;
constexpr int32_t kInputMask = 3;

//! Every error leaves through here: TensorRT's error recorder when one is set, stderr always,
//! so a bad attribute shows up as a one-line message at build time.
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
std::vector<PluginField> attributeFields(ReconstructAttributes* attributes)
{
    auto at = [attributes](auto ReconstructAttributes::*member) -> void const* {
        return attributes != nullptr ? &(attributes->*member) : nullptr;
    };
    return {
        PluginField("k", at(&ReconstructAttributes::k), PluginFieldType::kINT32, 1),
        PluginField("tau", at(&ReconstructAttributes::tau), PluginFieldType::kFLOAT32, 1),
        PluginField("norm", at(&ReconstructAttributes::norm), PluginFieldType::kINT32, 1),
        PluginField("has_mask", at(&ReconstructAttributes::hasMask), PluginFieldType::kINT32, 1),
    };
}

//! Scalar of an incoming field converted to the declared type; the ONNX parser passes INT as
//! kINT32 and FLOAT as kFLOAT32, other writers may use the 64-bit types.
void readField(PluginField const& given, PluginField const& declared)
{
    require(given.data != nullptr && given.length == 1,
        std::string("attribute '") + given.name + "' must be a single value (lists are not accepted)");
    void* target = const_cast<void*>(declared.data);
    if (declared.type == PluginFieldType::kINT32)
    {
        int64_t value = 0;
        if (given.type == PluginFieldType::kINT32)
            value = *static_cast<int32_t const*>(given.data);
        else if (given.type == PluginFieldType::kINT64)
            value = *static_cast<int64_t const*>(given.data);
        else
            throw std::invalid_argument(std::string("attribute '") + given.name + "' must be an integer");
        require(value >= INT32_MIN && value <= INT32_MAX,
            std::string("attribute '") + given.name + "' does not fit in int32");
        *static_cast<int32_t*>(target) = static_cast<int32_t>(value);
    }
    else
    {
        double value = 0.0;
        if (given.type == PluginFieldType::kFLOAT32)
            value = *static_cast<float const*>(given.data);
        else if (given.type == PluginFieldType::kFLOAT64)
            value = *static_cast<double const*>(given.data);
        else
            throw std::invalid_argument(std::string("attribute '") + given.name + "' must be a float");
        *static_cast<float*>(target) = static_cast<float>(value);
    }
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
} // namespace

void ReconstructAttributes::validate() const
{
    require(k >= 1 && k <= kMaxK, "k = " + std::to_string(k) + " is out of range: allowed 1.." + std::to_string(kMaxK));
    require(std::isfinite(tau) && tau > 0.F, "tau = " + std::to_string(tau) + " is out of range: allowed > 0");
    require(norm == kNormSum || norm == kNormL2, "norm = " + std::to_string(norm) + " is not allowed: 0 (sum) or 1 (l2)");
    require(hasMask == 0 || hasMask == 1, "has_mask = " + std::to_string(hasMask) + " is not allowed: 0 or 1");
}

// ---- plugin -------------------------------------------------------------------------------------

TopKMaskedReconstructPlugin::TopKMaskedReconstructPlugin(
    ReconstructAttributes const& attributes, std::string const& pluginNamespace)
    : mAttributes(attributes)
    , mNamespace(pluginNamespace)
{
    mAttributes.validate();
}

IPluginCapability* TopKMaskedReconstructPlugin::getCapabilityInterface(PluginCapabilityType type) noexcept
{
    switch (type)
    {
    case PluginCapabilityType::kCORE: return static_cast<IPluginV3OneCore*>(this);
    case PluginCapabilityType::kBUILD: return static_cast<IPluginV3OneBuild*>(this);
    case PluginCapabilityType::kRUNTIME: return static_cast<IPluginV3OneRuntime*>(this);
    }
    return nullptr;
}

IPluginV3* TopKMaskedReconstructPlugin::clone() noexcept
{
    try
    {
        return new TopKMaskedReconstructPlugin(mAttributes, mNamespace);
    }
    catch (std::exception const& e)
    {
        reportError("clone", e.what());
    }
    return nullptr;
}

char const* TopKMaskedReconstructPlugin::getPluginName() const noexcept
{
    return kPluginName;
}

char const* TopKMaskedReconstructPlugin::getPluginVersion() const noexcept
{
    return kPluginVersion;
}

char const* TopKMaskedReconstructPlugin::getPluginNamespace() const noexcept
{
    return mNamespace.c_str();
}

int32_t TopKMaskedReconstructPlugin::getNbOutputs() const noexcept
{
    return 1;
}

int32_t TopKMaskedReconstructPlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    try
    {
        require(nbOutputs == 1, "expects 1 output, got " + std::to_string(nbOutputs));
        require(nbInputs == nbInputsExpected(), "expects " + std::to_string(nbInputsExpected())
                + " inputs (has_mask = " + std::to_string(mAttributes.hasMask) + "), got " + std::to_string(nbInputs));
        for (int32_t i = 0; i < 3; ++i)
        {
            require(inputTypes[i] == DataType::kFLOAT, "input " + std::to_string(i) + " must be float32");
        }
        outputTypes[0] = DataType::kFLOAT;
        return 0;
    }
    catch (std::exception const& e)
    {
        reportError("getOutputDataTypes", e.what());
    }
    return -1;
}

void TopKMaskedReconstructPlugin::checkShapes(Dims const* dims, int32_t nbInputs) const
{
    require(nbInputs == nbInputsExpected(), "expects " + std::to_string(nbInputsExpected()) + " inputs, got "
            + std::to_string(nbInputs));
    for (int32_t i = 0; i < 3; ++i)
    {
        require(dims[i].nbDims == 3, "input " + std::to_string(i) + " must have rank 3, has shape " + dimsText(dims[i]));
    }
    Dims const& z = dims[kInputZ];
    Dims const& centers = dims[kInputCenters];
    Dims const& values = dims[kInputValues];
    require(sameExtent(z.d[0], centers.d[0]) && sameExtent(z.d[0], values.d[0]),
        "z, centers and values must share the batch size: " + dimsText(z) + ", " + dimsText(centers) + ", "
            + dimsText(values));
    require(sameExtent(z.d[2], centers.d[2]),
        "z " + dimsText(z) + " and centers " + dimsText(centers) + " must have the same channels");
    require(sameExtent(centers.d[1], values.d[1]),
        "centers " + dimsText(centers) + " and values " + dimsText(values) + " must have the same clusters");
    int64_t const clusters = centers.d[1];
    if (clusters >= 0)
    {
        require(mAttributes.k <= clusters,
            "k = " + std::to_string(mAttributes.k) + " is larger than the number of clusters M = "
                + std::to_string(clusters) + ": allowed 1.." + std::to_string(clusters));
        size_t const bytes = reconstructSharedBytes(static_cast<int32_t>(clusters), mAttributes.k);
        require(bytes <= kMaxSharedBytes,
            "M = " + std::to_string(clusters) + " clusters and k = " + std::to_string(mAttributes.k) + " need "
                + std::to_string(bytes) + " bytes of shared memory, more than " + std::to_string(kMaxSharedBytes));
    }
    if (mAttributes.hasMask)
    {
        Dims const& mask = dims[kInputMask];
        require(mask.nbDims == 2 && sameExtent(mask.d[0], z.d[1]) && sameExtent(mask.d[1], clusters),
            "mask must have shape [N, M] = [" + std::to_string(z.d[1]) + ", " + std::to_string(clusters)
                + "], has " + dimsText(mask));
    }
}

int32_t TopKMaskedReconstructPlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs,
    DimsExprs const* /*shapeInputs*/, int32_t /*nbShapeInputs*/, DimsExprs* outputs, int32_t nbOutputs,
    IExprBuilder& /*exprBuilder*/) noexcept
{
    try
    {
        require(nbOutputs == 1, "expects 1 output");
        // Check what is known at this point (constant extents); the rest waits for configurePlugin.
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
        outputs[0].nbDims = 3;
        outputs[0].d[0] = inputs[kInputZ].d[0];
        outputs[0].d[1] = inputs[kInputZ].d[1];
        outputs[0].d[2] = inputs[kInputValues].d[2];
        return 0;
    }
    catch (std::exception const& e)
    {
        reportError("getOutputShapes", e.what());
    }
    return -1;
}

bool TopKMaskedReconstructPlugin::supportsFormatCombination(
    int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t /*nbOutputs*/) noexcept
{
    PluginTensorDesc const& desc = inOut[pos].desc;
    if (desc.format != TensorFormat::kLINEAR)
    {
        return false;
    }
    bool const isMask = mAttributes.hasMask && pos == kInputMask && pos < nbInputs;
    return desc.type == (isMask ? DataType::kBOOL : DataType::kFLOAT);
}

int32_t TopKMaskedReconstructPlugin::configurePlugin(
    DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* /*out*/,
    int32_t nbOutputs) noexcept
{
    try
    {
        require(nbOutputs == 1, "expects 1 output");
        std::vector<Dims> dims(nbInputs);
        for (int32_t i = 0; i < nbInputs; ++i)
        {
            dims[i] = in[i].max; // the largest shape the profile allows bounds the shared memory
        }
        checkShapes(dims.data(), nbInputs);
        return 0;
    }
    catch (std::exception const& e)
    {
        reportError("configurePlugin", e.what());
    }
    return -1;
}

size_t TopKMaskedReconstructPlugin::getWorkspaceSize(DynamicPluginTensorDesc const* /*inputs*/,
    int32_t /*nbInputs*/, DynamicPluginTensorDesc const* /*outputs*/, int32_t /*nbOutputs*/) const noexcept
{
    return 0;
}

int32_t TopKMaskedReconstructPlugin::onShapeChange(
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

int32_t TopKMaskedReconstructPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* /*outputDesc*/,
    void const* const* inputs, void* const* outputs, void* /*workspace*/, cudaStream_t stream) noexcept
{
    try
    {
        Dims const& z = inputDesc[kInputZ].dims;
        ReconstructParams params{};
        params.batch = static_cast<int32_t>(z.d[0]);
        params.pixels = static_cast<int32_t>(z.d[1]);
        params.channels = static_cast<int32_t>(z.d[2]);
        params.clusters = static_cast<int32_t>(inputDesc[kInputCenters].dims.d[1]);
        params.valueChannels = static_cast<int32_t>(inputDesc[kInputValues].dims.d[2]);
        params.k = mAttributes.k;
        params.tau = mAttributes.tau;
        params.norm = mAttributes.norm;
        bool const* mask = mAttributes.hasMask ? static_cast<bool const*>(inputs[kInputMask]) : nullptr;
        cudaError_t const status = launchTopKMaskedReconstruct(params, static_cast<float const*>(inputs[kInputZ]),
            static_cast<float const*>(inputs[kInputCenters]), static_cast<float const*>(inputs[kInputValues]), mask,
            static_cast<float*>(outputs[0]), stream);
        require(status == cudaSuccess, std::string("kernel launch failed: ") + cudaGetErrorString(status));
        return 0;
    }
    catch (std::exception const& e)
    {
        reportError("enqueue", e.what());
    }
    return -1;
}

IPluginV3* TopKMaskedReconstructPlugin::attachToContext(IPluginResourceContext* /*context*/) noexcept
{
    return clone(); // no per-context resources
}

PluginFieldCollection const* TopKMaskedReconstructPlugin::getFieldsToSerialize() noexcept
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

TopKMaskedReconstructPluginCreator::TopKMaskedReconstructPluginCreator()
    : mFields(attributeFields(nullptr))
{
    mFieldCollection.nbFields = static_cast<int32_t>(mFields.size());
    mFieldCollection.fields = mFields.data();
}

char const* TopKMaskedReconstructPluginCreator::getPluginName() const noexcept
{
    return kPluginName;
}

char const* TopKMaskedReconstructPluginCreator::getPluginVersion() const noexcept
{
    return kPluginVersion;
}

char const* TopKMaskedReconstructPluginCreator::getPluginNamespace() const noexcept
{
    return mNamespace.c_str();
}

PluginFieldCollection const* TopKMaskedReconstructPluginCreator::getFieldNames() noexcept
{
    return &mFieldCollection;
}

IPluginV3* TopKMaskedReconstructPluginCreator::createPlugin(
    char const* /*name*/, PluginFieldCollection const* fc, TensorRTPhase /*phase*/) noexcept
{
    try
    {
        ReconstructAttributes attributes; // defaults, overwritten by the fields given
        std::vector<PluginField> const declared = attributeFields(&attributes);
        for (int32_t i = 0; fc != nullptr && i < fc->nbFields; ++i)
        {
            PluginField const& given = fc->fields[i];
            for (PluginField const& field : declared)
            {
                // Names not in the table (e.g. plugin_version, if a parser forwards it) are ignored.
                if (given.name != nullptr && std::string(given.name) == field.name)
                {
                    readField(given, field);
                }
            }
        }
        return new TopKMaskedReconstructPlugin(attributes, mNamespace);
    }
    catch (std::exception const& e)
    {
        reportError("createPlugin", e.what());
    }
    return nullptr;
}

REGISTER_TENSORRT_PLUGIN(TopKMaskedReconstructPluginCreator);

} // namespace topk_reconstruct
} // namespace vitexport
