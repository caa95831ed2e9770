/*
 * TopKMaskedReconstruct as a TensorRT IPluginV3 and its creator: the shared plugin and creator
 * templates of plugins/common/plugin.h over this plugin's kind (attributes, tensors, shape
 * checks, launcher), registered statically so that loading the library is enough (trtexec
 * --staticPlugins, polygraphy --plugins, LD_PRELOAD in Triton).
 *
 * Inputs: z [B, N, C], centers [B, M, C], values [B, M, D] (float32), mask [N, M] (bool, only when
 * has_mask = 1). Output: [B, N, D] float32. See README.md for the attributes.
 */
#include "../common/plugin.h"
#include "topkMaskedReconstruct.cuh"
#include "topkMaskedReconstructKernel.h"

#include <cmath>

using namespace nvinfer1;

namespace vitexport
{
namespace topk_reconstruct
{
using namespace common;

//! The attributes, one vocabulary for the ONNX node, the README table, the YAML spec and the creator.
struct ReconstructAttributes
{
    int32_t k{20};
    float tau{50.F};
    int32_t norm{0};
    int32_t hasMask{0};

    //! The attribute table: pointers into `attributes` (nullptr: the creator's list of names).
    static std::vector<PluginField> fields(ReconstructAttributes* a)
    {
        using A = ReconstructAttributes;
        return {PluginField("k", memberData(a, &A::k), PluginFieldType::kINT32, 1),
            PluginField("tau", memberData(a, &A::tau), PluginFieldType::kFLOAT32, 1),
            PluginField("norm", memberData(a, &A::norm), PluginFieldType::kINT32, 1),
            PluginField("has_mask", memberData(a, &A::hasMask), PluginFieldType::kINT32, 1)};
    }

    //! Throws std::invalid_argument naming the attribute and its allowed range.
    void validate() const
    {
        constexpr int32_t kMaxK = 1024;
        require(k >= 1 && k <= kMaxK, "k = " + std::to_string(k) + " is out of range: allowed 1.." + std::to_string(kMaxK));
        require(std::isfinite(tau) && tau > 0.F, "tau = " + std::to_string(tau) + " is out of range: allowed > 0");
        require(norm == kNormSum || norm == kNormL2, "norm = " + std::to_string(norm) + " is not allowed: 0 (sum) or 1 (l2)");
        require(hasMask == 0 || hasMask == 1, "has_mask = " + std::to_string(hasMask) + " is not allowed: 0 or 1");
    }
};

//! Positions of the node's inputs (mask only when has_mask = 1).
enum Input : int32_t { kInputZ, kInputCenters, kInputValues, kInputMask };

struct TopKMaskedReconstruct
{
    using Attributes = ReconstructAttributes;

    static int32_t nbInputs(Attributes const& a)
    {
        return a.hasMask ? 4 : 3;
    }

    static constexpr char const* kName = "TopKMaskedReconstruct";
    static constexpr char const* kVersion = "1";
    static constexpr Tensor kInputs[] = {{"z", DataType::kFLOAT}, {"centers", DataType::kFLOAT},
        {"values", DataType::kFLOAT}, {"mask", DataType::kBOOL}};
    static constexpr Tensor kOutputs[] = {{"output", DataType::kFLOAT}};

    //! Throws when the input shapes do not fit the attributes (k > M, mismatched B or C, ...).
    static void checkShapes(Attributes const& a, Dims const* dims)
    {
        for (int32_t i = 0; i < 3; ++i)
        {
            require(dims[i].nbDims == 3,
                std::string(kInputs[i].name) + " must have rank 3, has shape " + dimsText(dims[i]));
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
            require(a.k <= clusters,
                "k = " + std::to_string(a.k) + " is larger than the number of clusters M = " + std::to_string(clusters)
                    + ": allowed 1.." + std::to_string(clusters));
            size_t const bytes = reconstructSharedBytes(static_cast<int32_t>(clusters), a.k);
            require(bytes <= kMaxSharedBytes,
                "M = " + std::to_string(clusters) + " clusters and k = " + std::to_string(a.k) + " need "
                    + std::to_string(bytes) + " bytes of shared memory, more than " + std::to_string(kMaxSharedBytes));
        }
        if (a.hasMask)
        {
            Dims const& mask = dims[kInputMask];
            require(mask.nbDims == 2 && sameExtent(mask.d[0], z.d[1]) && sameExtent(mask.d[1], clusters),
                "mask must have shape [N, M] = [" + std::to_string(z.d[1]) + ", " + std::to_string(clusters)
                    + "], has " + dimsText(mask));
        }
    }

    static void outputShapes(Attributes const& /*a*/, DimsExprs const* inputs, DimsExprs* outputs, IExprBuilder&)
    {
        outputs[0].nbDims = 3;
        outputs[0].d[0] = inputs[kInputZ].d[0];
        outputs[0].d[1] = inputs[kInputZ].d[1];
        outputs[0].d[2] = inputs[kInputValues].d[2];
    }

    static size_t workspaceBytes(Attributes const& /*a*/, DynamicPluginTensorDesc const* /*inputs*/) noexcept
    {
        return 0;
    }

    static cudaError_t enqueue(Attributes const& a, PluginTensorDesc const* inputDesc, void const* const* inputs,
        void* const* outputs, void* /*workspace*/, cudaStream_t stream)
    {
        Dims const& z = inputDesc[kInputZ].dims;
        // batch, pixels, clusters, channels, value channels, then the attributes
        ReconstructParams const params{extent(z, 0), extent(z, 1), extent(inputDesc[kInputCenters].dims, 1),
            extent(z, 2), extent(inputDesc[kInputValues].dims, 2), a.k, a.tau, a.norm};
        bool const* mask = a.hasMask ? static_cast<bool const*>(inputs[kInputMask]) : nullptr;
        return launchTopKMaskedReconstruct(params, static_cast<float const*>(inputs[kInputZ]),
            static_cast<float const*>(inputs[kInputCenters]), static_cast<float const*>(inputs[kInputValues]), mask,
            static_cast<float*>(outputs[0]), stream);
    }
};

using TopKMaskedReconstructPluginCreator = PluginCreator<TopKMaskedReconstruct>;
REGISTER_TENSORRT_PLUGIN(TopKMaskedReconstructPluginCreator);

} // namespace topk_reconstruct
} // namespace vitexport
