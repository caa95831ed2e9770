/*
 * TensorRT IPluginV3 wrapper of TopKMaskedReconstruct and its creator.
 *
 * Inputs: z [B, N, C], centers [B, M, C], values [B, M, D] (float32), mask [N, M] (bool, only when
 * has_mask = 1). Output: [B, N, D] float32. See README.md for the attributes.
 */
#ifndef TRT_TOPK_MASKED_RECONSTRUCT_PLUGIN_H
#define TRT_TOPK_MASKED_RECONSTRUCT_PLUGIN_H

#include "NvInferRuntime.h"

#include <cstdint>
#include <string>
#include <vector>

namespace vitexport
{
namespace topk_reconstruct
{

constexpr char const* kPluginName = "TopKMaskedReconstruct";
constexpr char const* kPluginVersion = "1";

//! The attributes, one vocabulary for the ONNX node, the README table, the YAML spec and the creator.
struct ReconstructAttributes
{
    int32_t k{20};
    float tau{50.F};
    int32_t norm{0};
    int32_t hasMask{0};

    //! Throws std::invalid_argument naming the attribute and its allowed range.
    void validate() const;
};

class TopKMaskedReconstructPlugin : public nvinfer1::IPluginV3,
                                    public nvinfer1::IPluginV3OneCore,
                                    public nvinfer1::IPluginV3OneBuild,
                                    public nvinfer1::IPluginV3OneRuntime
{
public:
    TopKMaskedReconstructPlugin(ReconstructAttributes const& attributes, std::string const& pluginNamespace);
    ~TopKMaskedReconstructPlugin() override = default;

    // IPluginV3
    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override;
    nvinfer1::IPluginV3* clone() noexcept override;

    // IPluginV3OneCore
    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;

    // IPluginV3OneBuild
    int32_t getNbOutputs() const noexcept override;
    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
        nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept override;
    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
        nvinfer1::DimsExprs const* shapeInputs, int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs,
        int32_t nbOutputs, nvinfer1::IExprBuilder& exprBuilder) noexcept override;
    bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
        int32_t nbOutputs) noexcept override;
    int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override;

    // IPluginV3OneRuntime
    int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::PluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override;

private:
    int32_t nbInputsExpected() const noexcept
    {
        return mAttributes.hasMask ? 4 : 3;
    }
    //! Throws when the input shapes do not fit the attributes (k > M, mismatched B or C, ...).
    void checkShapes(nvinfer1::Dims const* dims, int32_t nbInputs) const;

    ReconstructAttributes mAttributes;
    std::string mNamespace;
    std::vector<nvinfer1::PluginField> mSerializedFields;
    nvinfer1::PluginFieldCollection mSerializedCollection{};
};

class TopKMaskedReconstructPluginCreator : public nvinfer1::IPluginCreatorV3One
{
public:
    TopKMaskedReconstructPluginCreator();
    ~TopKMaskedReconstructPluginCreator() override = default;

    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override;
    nvinfer1::IPluginV3* createPlugin(char const* name, nvinfer1::PluginFieldCollection const* fc,
        nvinfer1::TensorRTPhase phase) noexcept override;

private:
    std::vector<nvinfer1::PluginField> mFields;
    nvinfer1::PluginFieldCollection mFieldCollection{};
    std::string mNamespace;
};

} // namespace topk_reconstruct
} // namespace vitexport

#endif // TRT_TOPK_MASKED_RECONSTRUCT_PLUGIN_H
