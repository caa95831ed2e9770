// Drives the plugins' TensorRT entry points without TensorRT: a stand-in plugin registry
// collects the creators that the plugin library registers when it is loaded, then every
// creator and plugin call a builder makes at build time (fields, createPlugin, data types,
// formats, shape checks, workspace, serialisation, clone, enqueue's refusal) is made on
// chosen inputs and its result printed, one line each. Errors the plugins report go to stderr.
//
// Link with the plugins' *Plugin.cpp and their kernels (enqueue is only called with shapes the
// launchers refuse before touching a GPU).
#include "NvInferRuntime.h"

#include <cstdio>
#include <string>
#include <vector>

using namespace nvinfer1;

namespace
{
class StandInRegistry : public IPluginRegistry
{
public:
    std::vector<IPluginCreatorV3One*> creators;

    bool registerCreator(IPluginCreatorInterface& creator, AsciiChar const* const) noexcept override
    {
        creators.push_back(dynamic_cast<IPluginCreatorV3One*>(&creator));
        return true;
    }
    void setErrorRecorder(IErrorRecorder* const) noexcept override {}
    IErrorRecorder* getErrorRecorder() const noexcept override { return nullptr; }
    bool isParentSearchEnabled() const override { return false; }
    void setParentSearchEnabled(bool const) override {}
    PluginLibraryHandle loadLibrary(AsciiChar const*) noexcept override { return nullptr; }
    void deregisterLibrary(PluginLibraryHandle) noexcept override {}
    IPluginCreatorInterface* const* getAllCreators(int32_t* const n) const noexcept override { *n = 0; return nullptr; }
    IPluginCreatorInterface* getCreator(AsciiChar const* const, AsciiChar const* const, AsciiChar const* const) noexcept override { return nullptr; }
    bool deregisterCreator(IPluginCreatorInterface const&) noexcept override { return false; }
    IPluginResource* acquirePluginResource(AsciiChar const*, IPluginResource*) noexcept override { return nullptr; }
    int32_t releasePluginResource(AsciiChar const*) noexcept override { return 0; }
    IPluginCreatorInterface* const* getAllCreatorsRecursive(int32_t* const n) noexcept override { *n = 0; return nullptr; }
};

StandInRegistry& registry()
{
    static StandInRegistry instance;
    return instance;
}

//! One given attribute: name, type and up to two values (length 2 tests list refusal).
struct Given
{
    char const* name;
    PluginFieldType type;
    double value;
    int32_t length = 1;
};

IPluginV3* create(IPluginCreatorV3One* creator, std::vector<Given> const& given)
{
    std::vector<int32_t> i32(given.size() * 2);
    std::vector<int64_t> i64(given.size() * 2);
    std::vector<float> f32(given.size() * 2);
    std::vector<double> f64(given.size() * 2);
    std::vector<PluginField> fields;
    for (size_t i = 0; i < given.size(); ++i)
    {
        Given const& g = given[i];
        i32[2 * i] = i32[2 * i + 1] = static_cast<int32_t>(g.value);
        i64[2 * i] = i64[2 * i + 1] = static_cast<int64_t>(g.value);
        f32[2 * i] = f32[2 * i + 1] = static_cast<float>(g.value);
        f64[2 * i] = f64[2 * i + 1] = g.value;
        void const* data = g.type == PluginFieldType::kINT32 ? static_cast<void const*>(&i32[2 * i])
            : g.type == PluginFieldType::kINT64              ? static_cast<void const*>(&i64[2 * i])
            : g.type == PluginFieldType::kFLOAT32            ? static_cast<void const*>(&f32[2 * i])
                                                             : static_cast<void const*>(&f64[2 * i]);
        fields.emplace_back(g.name, data, g.type, g.length);
    }
    PluginFieldCollection fc{static_cast<int32_t>(fields.size()), fields.data()};
    return creator->createPlugin("node", &fc, TensorRTPhase::kBUILD);
}

std::string serialised(IPluginV3* plugin)
{
    auto* runtime = static_cast<IPluginV3OneRuntime*>(plugin->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    PluginFieldCollection const* fc = runtime->getFieldsToSerialize();
    std::string s;
    for (int32_t i = 0; fc != nullptr && i < fc->nbFields; ++i)
    {
        PluginField const& f = fc->fields[i];
        double const v = f.type == PluginFieldType::kINT32 ? *static_cast<int32_t const*>(f.data)
                                                           : *static_cast<float const*>(f.data);
        s += std::string(f.name) + "=" + std::to_string(v) + " ";
    }
    return s;
}

Dims dims(std::vector<int64_t> const& d)
{
    Dims out{};
    out.nbDims = static_cast<int32_t>(d.size());
    for (size_t i = 0; i < d.size(); ++i)
        out.d[i] = d[i];
    return out;
}

//! configurePlugin, onShapeChange, getWorkspaceSize and enqueue on one set of input shapes.
void shapes(IPluginV3* plugin, char const* label, std::vector<std::vector<int64_t>> in, int32_t nbOutputs,
    size_t nbInputs = 0)
{
    if (nbInputs != 0)
        in.resize(nbInputs); // the mask's shape only where the node has a mask

    auto* build = static_cast<IPluginV3OneBuild*>(plugin->getCapabilityInterface(PluginCapabilityType::kBUILD));
    auto* runtime = static_cast<IPluginV3OneRuntime*>(plugin->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    std::vector<DynamicPluginTensorDesc> dyn(in.size());
    std::vector<PluginTensorDesc> desc(in.size());
    for (size_t i = 0; i < in.size(); ++i)
    {
        desc[i].dims = dims(in[i]);
        dyn[i].desc = desc[i];
        dyn[i].min = dyn[i].max = dyn[i].opt = desc[i].dims;
    }
    int32_t const n = static_cast<int32_t>(in.size());
    std::vector<DynamicPluginTensorDesc> outDyn(nbOutputs);
    std::vector<PluginTensorDesc> outDesc(nbOutputs);
    int32_t const configured = build->configurePlugin(dyn.data(), n, outDyn.data(), nbOutputs);
    int32_t const changed = runtime->onShapeChange(desc.data(), n, outDesc.data(), nbOutputs);
    size_t const workspace = build->getWorkspaceSize(dyn.data(), n, outDyn.data(), nbOutputs);
    std::printf("  shapes %s: configurePlugin %d onShapeChange %d workspace %zu", label, configured, changed, workspace);
    if (configured != 0)
    {
        char scratch[64] = {};
        void const* inputs[4] = {scratch, scratch, scratch, scratch};
        void* outputs[2] = {scratch, scratch};
        std::printf(" enqueue %d", runtime->enqueue(desc.data(), outDesc.data(), inputs, outputs, scratch, nullptr));
    }
    std::printf("\n");
}

void formats(IPluginV3* plugin, int32_t nbInputs, int32_t nbOutputs)
{
    auto* build = static_cast<IPluginV3OneBuild*>(plugin->getCapabilityInterface(PluginCapabilityType::kBUILD));
    DataType const types[] = {DataType::kFLOAT, DataType::kHALF, DataType::kINT32, DataType::kBOOL};
    std::vector<DynamicPluginTensorDesc> io(nbInputs + nbOutputs);
    std::printf("  formats (float half int32 bool per position):");
    for (int32_t pos = 0; pos < nbInputs + nbOutputs; ++pos)
    {
        std::printf(" ");
        for (DataType t : types)
        {
            io[pos].desc.type = t;
            io[pos].desc.format = TensorFormat::kLINEAR;
            std::printf("%d", build->supportsFormatCombination(pos, io.data(), nbInputs, nbOutputs) ? 1 : 0);
        }
    }
    io[0].desc.type = DataType::kFLOAT;
    io[0].desc.format = TensorFormat::kCHW32;
    std::printf(" chw32:%d\n", build->supportsFormatCombination(0, io.data(), nbInputs, nbOutputs) ? 1 : 0);
}

void types(IPluginV3* plugin, char const* label, std::vector<DataType> const& in, int32_t nbOutputs)
{
    auto* build = static_cast<IPluginV3OneBuild*>(plugin->getCapabilityInterface(PluginCapabilityType::kBUILD));
    std::vector<DataType> out(nbOutputs, DataType::kHALF);
    int32_t const rc = build->getOutputDataTypes(out.data(), nbOutputs, in.data(), static_cast<int32_t>(in.size()));
    std::printf("  types %s: %d", label, rc);
    for (DataType t : out)
        std::printf(" %d", static_cast<int32_t>(t));
    std::printf("\n");
}

void attempt(IPluginCreatorV3One* creator, char const* label, std::vector<Given> const& given)
{
    IPluginV3* plugin = create(creator, given);
    std::printf("  create %s: %s\n", label, plugin ? serialised(plugin).c_str() : "refused");
    delete plugin;
}
} // namespace

extern "C" IPluginRegistry* getPluginRegistry() noexcept
{
    return &registry();
}

int main()
{
    using T = PluginFieldType;
    for (IPluginCreatorV3One* creator : registry().creators)
    {
        std::string const name = creator->getPluginName();
        std::printf("%s version %s namespace '%s' fields:", name.c_str(), creator->getPluginVersion(),
            creator->getPluginNamespace());
        PluginFieldCollection const* fc = creator->getFieldNames();
        for (int32_t i = 0; i < fc->nbFields; ++i)
            std::printf(" %s:%d%s", fc->fields[i].name, static_cast<int32_t>(fc->fields[i].type),
                fc->fields[i].data == nullptr ? "" : "(data!)");
        std::printf("\n");
        attempt(creator, "defaults", {});
        attempt(creator, "unknown name ignored", {{"plugin_version", T::kINT32, 7}});
        if (name == "DPCSelect")
        {
            attempt(creator, "int64", {{"clusters", T::kINT64, 8}, {"knn", T::kINT32, 2}});
            attempt(creator, "clusters 3840", {{"clusters", T::kINT32, 3840}});
            attempt(creator, "clusters 3841", {{"clusters", T::kINT32, 3841}});
            attempt(creator, "clusters 0", {{"clusters", T::kINT32, 0}});
            attempt(creator, "knn 0", {{"knn", T::kINT32, 0}});
            attempt(creator, "knn float", {{"knn", T::kFLOAT32, 2}});
            attempt(creator, "clusters list", {{"clusters", T::kINT32, 8, 2}});
            attempt(creator, "clusters 2^31", {{"clusters", T::kINT64, 2147483648.0}});
            IPluginV3* p = create(creator, {{"clusters", T::kINT32, 8}, {"knn", T::kINT32, 2}});
            IPluginV3* c = p->clone();
            std::printf("  clone: %s\n", serialised(c).c_str());
            types(p, "float int32 float", {DataType::kFLOAT, DataType::kINT32, DataType::kFLOAT}, 2);
            types(p, "half int32 float", {DataType::kHALF, DataType::kINT32, DataType::kFLOAT}, 2);
            types(p, "float float float", {DataType::kFLOAT, DataType::kFLOAT, DataType::kFLOAT}, 2);
            types(p, "two inputs", {DataType::kFLOAT, DataType::kINT32}, 2);
            types(p, "one output", {DataType::kFLOAT, DataType::kINT32, DataType::kFLOAT}, 1);
            formats(p, 3, 2);
            shapes(p, "valid", {{2, 63, 16}, {63, 10}, {10}}, 2);
            shapes(p, "M = N", {{2, 8, 16}, {8, 3}, {3}}, 2);
            shapes(p, "knn > lambda", {{2, 63, 16}, {63, 1}, {1}}, 2);
            shapes(p, "rows differ", {{2, 63, 16}, {62, 10}, {10}}, 2);
            shapes(p, "weights differ", {{2, 63, 16}, {63, 10}, {9}}, 2);
            shapes(p, "z rank 2", {{63, 16}, {63, 10}, {10}}, 2);
            shapes(p, "lambda = N", {{1, 63, 16}, {63, 63}, {63}}, 2);
            shapes(p, "two inputs", {{2, 63, 16}, {63, 10}}, 2);
            delete c;
            delete p;
        }
        else
        {
            attempt(creator, "float64 tau", {{"k", T::kINT32, 6}, {"tau", T::kFLOAT64, 0.5}, {"norm", T::kINT32, 1},
                {"has_mask", T::kINT32, 1}});
            attempt(creator, "k 1024", {{"k", T::kINT32, 1024}});
            attempt(creator, "k 1025", {{"k", T::kINT32, 1025}});
            attempt(creator, "tau 0", {{"tau", T::kFLOAT32, 0}});
            attempt(creator, "tau int", {{"tau", T::kINT32, 3}});
            attempt(creator, "norm 2", {{"norm", T::kINT32, 2}});
            attempt(creator, "has_mask 2", {{"has_mask", T::kINT32, 2}});
            attempt(creator, "k float", {{"k", T::kFLOAT32, 3}});
            for (int32_t mask = 0; mask <= 1; ++mask)
            {
                IPluginV3* p = create(creator, {{"k", T::kINT32, 6}, {"has_mask", T::kINT32, double(mask)}});
                std::printf(" has_mask %d\n", mask);
                IPluginV3* c = p->clone();
                std::printf("  clone: %s\n", serialised(c).c_str());
                int32_t const n = 3 + mask;
                std::vector<DataType> in(n, DataType::kFLOAT);
                if (mask)
                    in[3] = DataType::kBOOL;
                types(p, "expected", in, 1);
                types(p, "half z", {DataType::kHALF, DataType::kFLOAT, DataType::kFLOAT, DataType::kBOOL}, 1);
                types(p, "three inputs", {DataType::kFLOAT, DataType::kFLOAT, DataType::kFLOAT}, 1);
                types(p, "four inputs", {DataType::kFLOAT, DataType::kFLOAT, DataType::kFLOAT, DataType::kBOOL}, 1);
                formats(p, n, 1);
                size_t const k = static_cast<size_t>(n);
                shapes(p, "valid", {{2, 50, 8}, {2, 20, 8}, {2, 20, 9}, {50, 20}}, 1, k);
                shapes(p, "k > M", {{2, 50, 8}, {2, 5, 8}, {2, 5, 9}, {50, 5}}, 1, k);
                shapes(p, "largest M", {{1, 4, 8}, {1, 12270, 8}, {1, 12270, 9}, {4, 12270}}, 1, k);
                shapes(p, "shared memory", {{1, 4, 8}, {1, 12271, 8}, {1, 12271, 9}, {4, 12271}}, 1, k);
                shapes(p, "channels differ", {{2, 50, 8}, {2, 20, 7}, {2, 20, 9}, {50, 20}}, 1, k);
                shapes(p, "batch differs", {{2, 50, 8}, {3, 20, 8}, {2, 20, 9}, {50, 20}}, 1, k);
                shapes(p, "mask wrong", {{2, 50, 8}, {2, 20, 8}, {2, 20, 9}, {50, 19}}, 1, k);
                shapes(p, "rank 2 values", {{2, 50, 8}, {2, 20, 8}, {20, 9}, {50, 20}}, 1, k);
                shapes(p, "one input more", {{2, 50, 8}, {2, 20, 8}, {2, 20, 9}, {50, 20}, {1}}, 1, k + 1);
                delete c;
                delete p;
            }
        }
    }
    return 0;
}
