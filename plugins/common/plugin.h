/*
 * One IPluginV3 class and one IPluginCreatorV3One for every plugin of the library, as class
 * templates over a "kind": a struct that says what differs between plugins.
 *
 *   struct Kind
 *   {
 *       static constexpr char const* kName = "...";  // and kVersion
 *       using Attributes = ...;  // with static fields(Attributes*) and validate()
 *       static constexpr Tensor kInputs[] = {...};   // name and type of every input, in order
 *       static constexpr Tensor kOutputs[] = {...};
 *       static int32_t nbInputs(Attributes const&);  // how many of kInputs the node has
 *       static void checkShapes(Attributes const&, nvinfer1::Dims const* inputs);  // throws
 *       static void outputShapes(Attributes const&, nvinfer1::DimsExprs const* inputs,
 *           nvinfer1::DimsExprs* outputs, nvinfer1::IExprBuilder&);
 *       static size_t workspaceBytes(Attributes const&, nvinfer1::DynamicPluginTensorDesc const* inputs) noexcept;
 *       static cudaError_t enqueue(Attributes const&, nvinfer1::PluginTensorDesc const* inputDesc,
 *           void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t);
 *   };
 *
 * Counts, data types and formats (linear only) are checked here from the tensor tables; the kind
 * checks the shapes, whose unknown extents are -1 until the engine runs.
 */
#ifndef VITEXPORT_PLUGIN_COMMON_PLUGIN_H
#define VITEXPORT_PLUGIN_COMMON_PLUGIN_H

#include "NvInferRuntime.h"
#include "checks.h"
#include "dims.h"
#include "fields.h"

#include <cstdint>
#include <string>
#include <vector>

namespace vitexport
{
namespace common
{

//! One input or output of a plugin node.
struct Tensor
{
    char const* name;
    nvinfer1::DataType type;
};

inline char const* typeName(nvinfer1::DataType type)
{
    switch (type)
    {
    case nvinfer1::DataType::kFLOAT: return "float32";
    case nvinfer1::DataType::kHALF: return "float16";
    case nvinfer1::DataType::kINT32: return "int32";
    case nvinfer1::DataType::kINT64: return "int64";
    case nvinfer1::DataType::kBOOL: return "bool";
    default: return "another type";
    }
}

//! Name, version and namespace: the same three answers from the plugin and its creator.
template <typename Interface, typename Kind>
class Named : public Interface
{
public:
    char const* getPluginName() const noexcept override
    {
        return Kind::kName;
    }

    char const* getPluginVersion() const noexcept override
    {
        return Kind::kVersion;
    }

    char const* getPluginNamespace() const noexcept override
    {
        return mNamespace.c_str();
    }

protected:
    explicit Named(std::string const& pluginNamespace)
        : mNamespace(pluginNamespace)
    {
    }

    std::string mNamespace;
};

template <typename Kind>
class Plugin : public nvinfer1::IPluginV3,
               public Named<nvinfer1::IPluginV3OneCore, Kind>,
               public nvinfer1::IPluginV3OneBuild,
               public nvinfer1::IPluginV3OneRuntime
{
public:
    using Attributes = typename Kind::Attributes;
    static constexpr int32_t kNbOutputs = static_cast<int32_t>(sizeof(Kind::kOutputs) / sizeof(Tensor));

    Plugin(Attributes const& attributes, std::string const& pluginNamespace)
        : Named<nvinfer1::IPluginV3OneCore, Kind>(pluginNamespace)
        , mAttributes(attributes)
    {
        mAttributes.validate();
    }

    // IPluginV3
    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override
    {
        switch (type)
        {
        case nvinfer1::PluginCapabilityType::kCORE: return static_cast<nvinfer1::IPluginV3OneCore*>(this);
        case nvinfer1::PluginCapabilityType::kBUILD: return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
        case nvinfer1::PluginCapabilityType::kRUNTIME: return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
        }
        return nullptr;
    }

    nvinfer1::IPluginV3* clone() noexcept override
    {
        return guarded(Kind::kName, "clone", static_cast<nvinfer1::IPluginV3*>(nullptr),
            [&] { return new Plugin(mAttributes, this->mNamespace); });
    }

    // IPluginV3OneBuild
    int32_t getNbOutputs() const noexcept override
    {
        return kNbOutputs;
    }

    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
        nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept override
    {
        return guarded(Kind::kName, "getOutputDataTypes", -1, [&] {
            checkCounts(nbInputs, nbOutputs);
            for (int32_t i = 0; i < nbInputs; ++i)
            {
                Tensor const& in = Kind::kInputs[i];
                require(inputTypes[i] == in.type, std::string(in.name) + " must be " + typeName(in.type));
            }
            for (int32_t i = 0; i < nbOutputs; ++i)
            {
                outputTypes[i] = Kind::kOutputs[i].type;
            }
            return 0;
        });
    }

    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
        nvinfer1::DimsExprs const* /*shapeInputs*/, int32_t /*nbShapeInputs*/, nvinfer1::DimsExprs* outputs,
        int32_t nbOutputs, nvinfer1::IExprBuilder& exprBuilder) noexcept override
    {
        return guarded(Kind::kName, "getOutputShapes", -1, [&] {
            checkCounts(nbInputs, nbOutputs);
            // Check what is known here (constant extents); the rest waits for configurePlugin.
            Kind::checkShapes(mAttributes, knownDims(inputs, nbInputs).data());
            Kind::outputShapes(mAttributes, inputs, outputs, exprBuilder);
            return 0;
        });
    }

    bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
        int32_t nbOutputs) noexcept override
    {
        nvinfer1::PluginTensorDesc const& desc = inOut[pos].desc;
        if (desc.format != nvinfer1::TensorFormat::kLINEAR || nbInputs != Kind::nbInputs(mAttributes)
            || nbOutputs != kNbOutputs)
        {
            return false;
        }
        return desc.type == (pos < nbInputs ? Kind::kInputs[pos] : Kind::kOutputs[pos - nbInputs]).type;
    }

    int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept override
    {
        return checkShapes("configurePlugin", nbInputs, nbOutputs, [&] { return maxDims(in, nbInputs); });
    }

    size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t /*nbInputs*/,
        nvinfer1::DynamicPluginTensorDesc const* /*outputs*/, int32_t /*nbOutputs*/) const noexcept override
    {
        return Kind::workspaceBytes(mAttributes, inputs);
    }

    // IPluginV3OneRuntime
    int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::PluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept override
    {
        return checkShapes("onShapeChange", nbInputs, nbOutputs, [&] { return runtimeDims(in, nbInputs); });
    }

    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* /*outputDesc*/,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override
    {
        return guarded(Kind::kName, "enqueue", -1, [&] {
            cudaError_t const status = Kind::enqueue(mAttributes, inputDesc, inputs, outputs, workspace, stream);
            require(status == cudaSuccess, std::string("kernel launch failed: ") + cudaGetErrorString(status));
            return 0;
        });
    }

    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* /*context*/) noexcept override
    {
        return clone(); // no per-context resources
    }

    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override
    {
        return guarded(Kind::kName, "getFieldsToSerialize",
            static_cast<nvinfer1::PluginFieldCollection const*>(nullptr), [&] {
                mSerializedFields = Attributes::fields(&mAttributes);
                mSerializedCollection.nbFields = static_cast<int32_t>(mSerializedFields.size());
                mSerializedCollection.fields = mSerializedFields.data();
                return &mSerializedCollection;
            });
    }

private:
    //! 0 when the counts and the shapes `dims()` gives fit the plugin, else -1 and the reason reported.
    template <typename DimsOf>
    int32_t checkShapes(char const* where, int32_t nbInputs, int32_t nbOutputs, DimsOf&& dims) const noexcept
    {
        return guarded(Kind::kName, where, -1, [&] {
            checkCounts(nbInputs, nbOutputs);
            Kind::checkShapes(mAttributes, dims().data());
            return 0;
        });
    }

    void checkCounts(int32_t nbInputs, int32_t nbOutputs) const
    {
        int32_t const expected = Kind::nbInputs(mAttributes);
        std::string names;
        for (int32_t i = 0; i < expected; ++i)
        {
            names += (i ? ", " : "") + std::string(Kind::kInputs[i].name);
        }
        require(nbInputs == expected,
            "expects " + counted(expected, "input") + " (" + names + "), got " + std::to_string(nbInputs));
        require(nbOutputs == kNbOutputs, "expects " + counted(kNbOutputs, "output") + ", got " + std::to_string(nbOutputs));
    }

    Attributes mAttributes;
    std::vector<nvinfer1::PluginField> mSerializedFields;
    nvinfer1::PluginFieldCollection mSerializedCollection{};
};

//! The creator of Plugin<Kind>: its field list is the attribute table with null data.
template <typename Kind>
class PluginCreator : public Named<nvinfer1::IPluginCreatorV3One, Kind>
{
public:
    using Attributes = typename Kind::Attributes;

    PluginCreator()
        : Named<nvinfer1::IPluginCreatorV3One, Kind>("")
        , mFields(Attributes::fields(nullptr))
    {
        mFieldCollection.nbFields = static_cast<int32_t>(mFields.size());
        mFieldCollection.fields = mFields.data();
    }

    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override
    {
        return &mFieldCollection;
    }

    nvinfer1::IPluginV3* createPlugin(
        char const* /*name*/, nvinfer1::PluginFieldCollection const* fc, nvinfer1::TensorRTPhase /*phase*/) noexcept override
    {
        return guarded(Kind::kName, "createPlugin", static_cast<nvinfer1::IPluginV3*>(nullptr), [&] {
            Attributes attributes; // defaults, overwritten by the fields given
            readFields(fc, Attributes::fields(&attributes));
            return static_cast<nvinfer1::IPluginV3*>(new Plugin<Kind>(attributes, this->mNamespace));
        });
    }

private:
    std::vector<nvinfer1::PluginField> mFields;
    nvinfer1::PluginFieldCollection mFieldCollection{};
};

} // namespace common
} // namespace vitexport

#endif // VITEXPORT_PLUGIN_COMMON_PLUGIN_H
