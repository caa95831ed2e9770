/*
 * DPCSelect as a TensorRT IPluginV3 and its creator: the shared plugin and creator templates of
 * plugins/common/plugin.h over this plugin's kind (attributes, tensors, shape checks, launcher),
 * registered statically so that loading the library is enough (trtexec --staticPlugins,
 * polygraphy --plugins, LD_PRELOAD in Triton).
 *
 * Inputs: z [B, N, C] float32, neighbours [N, lambda] int32, weights [lambda] float32.
 * Outputs: centers [B, M] int32 (ascending token indices), assignment [B, N] int32 (slots).
 * See README.md for the attributes.
 */
#include "../common/plugin.h"
#include "dpcSelectKernel.h"

using namespace nvinfer1;

namespace vitexport
{
namespace dpc_select
{
using namespace common;

//! The attributes, one vocabulary for the ONNX node, the README table, the YAML spec and the creator.
struct SelectAttributes
{
    int32_t clusters{400};
    int32_t knn{1};

    //! The attribute table: pointers into `attributes` (nullptr: the creator's list of names).
    static std::vector<PluginField> fields(SelectAttributes* attributes)
    {
        return {
            PluginField("clusters", memberData(attributes, &SelectAttributes::clusters), PluginFieldType::kINT32, 1),
            PluginField("knn", memberData(attributes, &SelectAttributes::knn), PluginFieldType::kINT32, 1),
        };
    }

    //! Throws std::invalid_argument naming the attribute and its allowed range.
    void validate() const
    {
        constexpr int32_t kMaxClusters = 3840; // TensorRT's TopK limit; the export form refuses larger M too
        require(clusters >= 1 && clusters <= kMaxClusters,
            "clusters = " + std::to_string(clusters) + " is out of range: allowed 1.." + std::to_string(kMaxClusters));
        require(knn >= 1, "knn = " + std::to_string(knn) + " is out of range: allowed 1..lambda");
    }
};

//! Positions of the node's inputs and outputs.
enum Input : int32_t { kInputZ, kInputNeighbours, kInputWeights };
enum Output : int32_t { kOutputCenters, kOutputAssignment };

struct DPCSelect
{
    static constexpr char const* kName = "DPCSelect";
    static constexpr char const* kVersion = "1";
    using Attributes = SelectAttributes;
    // int32 indices: TensorRT's native index type; the ONNX surgery casts to int64 after the node.
    static constexpr Tensor kInputs[]
        = {{"z", DataType::kFLOAT}, {"neighbours", DataType::kINT32}, {"weights", DataType::kFLOAT}};
    static constexpr Tensor kOutputs[] = {{"centers", DataType::kINT32}, {"assignment", DataType::kINT32}};

    static int32_t nbInputs(Attributes const& /*attributes*/)
    {
        return 3;
    }

    //! Throws when the input shapes do not fit the attributes (M >= N, k > lambda, ...).
    static void checkShapes(Attributes const& a, Dims const* dims)
    {
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
            require(a.clusters < tokens,
                "clusters M = " + std::to_string(a.clusters) + " must be smaller than the number of tokens N = "
                    + std::to_string(tokens) + ": allowed 1.." + std::to_string(tokens - 1));
        }
        if (lambda >= 0)
        {
            require(lambda >= 1 && (tokens < 0 || lambda < tokens),
                "lambda = " + std::to_string(lambda) + " neighbours per token: allowed 1..N-1");
            require(a.knn <= lambda,
                "knn = " + std::to_string(a.knn) + " is larger than lambda = " + std::to_string(lambda)
                    + ": allowed 1.." + std::to_string(lambda));
        }
    }

    static void outputShapes(Attributes const& a, DimsExprs const* inputs, DimsExprs* outputs, IExprBuilder& builder)
    {
        outputs[kOutputCenters].nbDims = 2;
        outputs[kOutputCenters].d[0] = inputs[kInputZ].d[0];
        outputs[kOutputCenters].d[1] = builder.constant(a.clusters);
        outputs[kOutputAssignment].nbDims = 2;
        outputs[kOutputAssignment].d[0] = inputs[kInputZ].d[0];
        outputs[kOutputAssignment].d[1] = inputs[kInputZ].d[1];
    }

    //! The profile's largest shape bounds the workspace.
    static size_t workspaceBytes(Attributes const& /*attributes*/, DynamicPluginTensorDesc const* inputs) noexcept
    {
        Dims const& z = inputs[kInputZ].max;
        Dims const& nb = inputs[kInputNeighbours].max;
        return selectWorkspaceBytes(static_cast<int32_t>(z.d[0]), static_cast<int32_t>(z.d[1]),
            static_cast<int32_t>(nb.d[1]));
    }

    static cudaError_t enqueue(Attributes const& a, PluginTensorDesc const* inputDesc, void const* const* inputs,
        void* const* outputs, void* workspace, cudaStream_t stream)
    {
        Dims const& z = inputDesc[kInputZ].dims;
        SelectParams const params{extent(z, 0), extent(z, 1), extent(z, 2),
            extent(inputDesc[kInputNeighbours].dims, 1), a.clusters, a.knn};
        return launchDPCSelect(params, static_cast<float const*>(inputs[kInputZ]),
            static_cast<int32_t const*>(inputs[kInputNeighbours]), static_cast<float const*>(inputs[kInputWeights]),
            static_cast<int32_t*>(outputs[kOutputCenters]), static_cast<int32_t*>(outputs[kOutputAssignment]),
            workspace, stream);
    }
};

using DPCSelectPluginCreator = PluginCreator<DPCSelect>;
REGISTER_TENSORRT_PLUGIN(DPCSelectPluginCreator);

} // namespace dpc_select
} // namespace vitexport
