/*
 * Kernel harness of the plugins (no TensorRT): every case of cases.h is checked on the host
 * (the reference's invariants, the comparators against planted faults) and, in a CUDA build on a
 * machine with a GPU, launched through the plugin's own launcher and compared with the host
 * reference: exact indices for DPCSelect, a bounded error for TopKMaskedReconstruct.
 *
 * usage: kernel_harness [--host] [--quick] [--require-gpu]
 *   --host         host checks only;  --quick  leave out the largest cases (sanitizer runs)
 *   --require-gpu  fail (instead of skip) when no CUDA device is usable
 * One line per check: PASS, FAIL or SKIP, then a summary line; exit 1 when any check failed.
 */
#include "cases.h"
#include "reference.h"
#ifndef VITEXPORT_HOST_ONLY
#include "device.h"
#endif

#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>

using namespace vitexport;
using namespace vitexport::harness;

namespace
{
//! Bound of TopKMaskedReconstruct's error, relative to 1 + |value|: the GPU's expf and fused
//! multiply-adds differ from the host's in the last bits, over at most k = 1024 terms.
constexpr double kReconstructBound = 1e-4;
constexpr uint64_t kSeed = 17;

struct Tally
{
    int passed = 0, failed = 0, skipped = 0;

    void pass(std::string const& what)
    {
        ++passed;
        std::printf("PASS %s\n", what.c_str());
    }
    void fail(std::string const& what)
    {
        ++failed;
        std::printf("FAIL %s\n", what.c_str());
    }
    void skip(std::string const& what)
    {
        ++skipped;
        std::printf("SKIP %s\n", what.c_str());
    }
    void check(bool ok, std::string const& what)
    {
        ok ? pass(what) : fail(what);
    }
};

std::string describe(SelectCase const& c)
{
    return "dpc_select/" + c.name + " B=" + std::to_string(c.batch) + " N=" + std::to_string(c.tokens())
        + " C=" + std::to_string(c.channels) + " lambda=" + std::to_string(c.neighbours) + " M="
        + std::to_string(c.clusters) + " knn=" + std::to_string(c.knn) + " fp32";
}

std::string describe(ReconstructCase const& c)
{
    return "topk_reconstruct/" + c.name + " B=" + std::to_string(c.batch) + " N=" + std::to_string(c.pixels)
        + " M=" + std::to_string(c.clusters) + " C=" + std::to_string(c.channels) + " D="
        + std::to_string(c.valueChannels) + " k=" + std::to_string(c.k) + (c.mask ? " mask" : "") + " fp32";
}

reference::Selection selectReference(SelectCase const& c, SelectInputs const& in)
{
    return reference::dpcSelect(c.batch, c.tokens(), c.channels, c.neighbours, c.clusters, c.knn, in.z.data(),
        in.neighbours.data(), in.weights.data());
}

std::vector<float> reconstructReference(ReconstructCase const& c, ReconstructInputs const& in, float const* values)
{
    std::unique_ptr<bool[]> mask(new bool[in.mask.size() + 1]);
    std::copy(in.mask.begin(), in.mask.end(), mask.get());
    return reference::topkReconstruct(c.batch, c.pixels, c.clusters, c.channels, c.valueChannels, c.k, c.tau, c.norm,
        in.z.data(), in.centers.data(), values, in.mask.empty() ? nullptr : mask.get());
}

// ---- host: what the device results are compared with -------------------------------------------

//! The comparators see planted faults: one index off, one float past the bound, a NaN.
void checkComparators(Tally& tally)
{
    std::vector<int32_t> const ints{3, 1, 4, 1, 5};
    std::vector<int32_t> flipped = ints;
    flipped[3] = 2;
    size_t first = 0;
    bool ok = mismatches(ints, ints, &first) == 0 && mismatches(flipped, ints, &first) == 1 && first == 3;
    std::vector<float> const floats{1.F, -INFINITY, 250.F};
    std::vector<float> near = floats, far = floats, nan = floats;
    near[2] += 250.F * 0.5e-4F;
    far[2] += 251.F * 2e-4F;
    nan[0] = NAN;
    ok = ok && maxScaledError(floats, floats) == 0.0 && maxScaledError(near, floats) <= kReconstructBound
        && maxScaledError(far, floats) > kReconstructBound && std::isinf(maxScaledError(nan, floats));
    tally.check(ok, "host comparators: exact indices and the float bound catch planted faults");
}

//! The neighbour table: distinct tokens other than the row's own, nearest on the grid first.
void checkNeighbours(Tally& tally)
{
    int32_t const h = 5, w = 7, count = 12;
    std::vector<int32_t> const table = gridNeighbours(h, w, count);
    bool ok = true;
    for (int32_t i = 0; i < h * w; ++i)
    {
        int32_t const* row = &table[size_t(i) * count];
        int64_t last = -1;
        for (int32_t r = 0; r < count; ++r)
        {
            int64_t const dr = i / w - row[r] / w, dc = i % w - row[r] % w, d = dr * dr + dc * dc;
            ok = ok && row[r] != i && d >= last && std::count(row, row + count, row[r]) == 1;
            last = d;
        }
    }
    tally.check(ok, "host generator: grid neighbour tables (nearest first, distinct, not the token itself)");
}

//! DPCSelect's reference: M ascending centers that outrank every other token, each its own
//! cluster, every token in a cluster; the fallback path runs where the case is meant for it.
void checkSelectReference(SelectCase const& c, Tally& tally)
{
    SelectInputs const in = selectInputs(c, kSeed);
    reference::Selection const s = selectReference(c, in);
    int32_t const n = c.tokens(), m = c.clusters;
    bool ok = true, fallback = false;
    for (int32_t b = 0; b < c.batch; ++b)
    {
        int32_t const* centers = &s.centers[size_t(b) * m];
        int32_t const* assignment = &s.assignment[size_t(b) * n];
        float const* score = &s.score[size_t(b) * n];
        std::vector<char> isCenter(n, 0);
        for (int32_t j = 0; j < m; ++j)
        {
            ok = ok && centers[j] >= 0 && centers[j] < n && (j == 0 || centers[j] > centers[j - 1]);
            ok = ok && assignment[centers[j]] == j;
            isCenter[centers[j]] = 1;
        }
        for (int32_t i = 0; i < n; ++i)
        {
            ok = ok && assignment[i] >= 0 && assignment[i] < m;
            bool near = false;
            for (int32_t r = 0; r < c.neighbours; ++r)
                near = near || isCenter[in.neighbours[size_t(i) * c.neighbours + r]];
            fallback = fallback || (!isCenter[i] && !near);
            for (int32_t j = 0; j < m && !isCenter[i]; ++j)
                ok = ok && dpc_select::outranks(score[centers[j]], centers[j], score[i], i);
        }
    }
    if (c.name == "fallback")
        ok = ok && fallback;
    tally.check(ok, "host reference " + describe(c) + ": centers ascend and outrank the rest, assignment complete"
            + (c.name == "fallback" ? ", fallback path taken" : ""));
}

//! TopKMaskedReconstruct's reference: weights that sum to 1 (norm sum) or have unit length
//! (norm l2), read off values of all ones; k = 1 copies the nearest allowed cluster's row.
void checkReconstructReference(ReconstructCase const& c, Tally& tally)
{
    ReconstructInputs const in = reconstructInputs(c, kSeed);
    std::vector<float> const ones(in.values.size(), 1.F);
    std::vector<float> const total = reconstructReference(c, in, ones.data());
    bool ok = true;
    for (float t : total)
    {
        // sum: 1; l2: sum w / ||w|| lies in [1, sqrt(k)]
        ok = ok && (c.norm == 0 ? std::fabs(t - 1.F) <= 1e-5F : t >= 1.F - 1e-5F && t <= std::sqrt(float(c.k)) + 1e-4F);
    }
    std::string extra;
    if (c.k == 1)
    {
        std::vector<float> const out = reconstructReference(c, in, in.values.data());
        for (int32_t b = 0; b < c.batch; ++b)
        {
            for (int32_t p = 0; p < c.pixels; ++p)
            {
                int32_t best = -1;
                float bestDistance = 0.F;
                for (int32_t j = 0; j < c.clusters; ++j)
                {
                    float const d = topk_reconstruct::squaredDistance(&in.z[(size_t(b) * c.pixels + p) * c.channels],
                        &in.centers[(size_t(b) * c.clusters + j) * c.channels], c.channels);
                    bool const allowed = in.mask.empty() || in.mask[size_t(p) * c.clusters + j];
                    if (allowed && (best < 0 || d < bestDistance))
                    {
                        best = j;
                        bestDistance = d;
                    }
                }
                float const* row = &in.values[(size_t(b) * c.clusters + best) * c.valueChannels];
                ok = ok && std::equal(row, row + c.valueChannels, &out[(size_t(b) * c.pixels + p) * c.valueChannels]);
            }
        }
        extra = ", k = 1 copies the nearest allowed cluster";
    }
    tally.check(ok, "host reference " + describe(c) + ": weights normalised" + extra);
}

// ---- device: the plugins' launchers against the reference ---------------------------------------

#ifndef VITEXPORT_HOST_ONLY
std::string number(double v)
{
    char text[32];
    std::snprintf(text, sizeof(text), "%.2g", v);
    return text;
}

//! The launchers refuse what the plugins refuse, before touching the GPU.
void checkLauncherLimits(Tally& tally)
{
    using topk_reconstruct::ReconstructParams;
    bool ok = true;
    ReconstructParams p{1, 4, 9216, 4, 4, 1024, 1.F, 0};
    ok = ok && topk_reconstruct::reconstructSharedBytes(p.clusters, p.k) == topk_reconstruct::kMaxSharedBytes;
    ok = ok && topk_reconstruct::reconstructSharedBytes(12285, 1) <= topk_reconstruct::kMaxSharedBytes
        && topk_reconstruct::reconstructSharedBytes(12286, 1) > topk_reconstruct::kMaxSharedBytes;
    float dummy = 0.F;
    auto reconstruct = [&](ReconstructParams const& q) {
        return topk_reconstruct::launchTopKMaskedReconstruct(q, &dummy, &dummy, &dummy, nullptr, &dummy, nullptr);
    };
    p.clusters = 9217; // one cluster past the shared memory the largest k leaves
    ok = ok && reconstruct(p) == cudaErrorInvalidValue;
    ok = ok && reconstruct({1, 4, 3, 4, 4, 4, 1.F, 0}) == cudaErrorInvalidValue;  // k > M
    ok = ok && reconstruct({1, 4, 3, 4, 4, 2, 0.F, 0}) == cudaErrorInvalidValue;  // tau = 0
    ok = ok && reconstruct({0, 4, 3, 4, 4, 2, 1.F, 0}) == cudaSuccess;            // empty batch
    int32_t index = 0;
    auto select = [&](dpc_select::SelectParams const& q) {
        return dpc_select::launchDPCSelect(q, &dummy, &index, &dummy, &index, &index, &dummy, nullptr);
    };
    ok = ok && select({1, 10, 4, 3, 10, 1}) == cudaErrorInvalidValue;  // M = N
    ok = ok && select({1, 10, 4, 10, 3, 1}) == cudaErrorInvalidValue;  // lambda = N
    ok = ok && select({1, 10, 4, 3, 3, 4}) == cudaErrorInvalidValue;   // knn > lambda
    tally.check(ok, "launchers: refuse k > M, shared memory past 48 KiB, M >= N, lambda >= N, knn > lambda");
}

void checkSelectOnDevice(SelectCase const& c, Tally& tally)
{
    SelectInputs const in = selectInputs(c, kSeed);
    reference::Selection const want = selectReference(c, in);
    dpc_select::SelectParams const params{c.batch, c.tokens(), c.channels, c.neighbours, c.clusters, c.knn};
    std::vector<int32_t> centers(want.centers.size()), assignment(want.assignment.size());
    DeviceRun const run = runSelect(params, in, centers, assignment);
    std::vector<int32_t> again(centers.size()), againAssignment(assignment.size());
    DeviceRun const second = runSelect(params, in, again, againAssignment);
    std::string const what = "gpu " + describe(c);
    if (!run.error.empty() || !second.error.empty())
        return tally.fail(what + ": " + run.error + second.error);
    size_t firstC = 0, firstA = 0, unused = 0;
    size_t const badC = mismatches(centers, want.centers, &firstC);
    size_t const badA = mismatches(assignment, want.assignment, &firstA);
    bool const repeat = mismatches(again, centers, &unused) == 0 && mismatches(againAssignment, assignment, &unused) == 0;
    std::string detail = ": centers " + (badC ? std::to_string(badC) + " differ (first at " + std::to_string(firstC) + ")" : std::string("exact"))
        + ", assignment " + (badA ? std::to_string(badA) + " differ (first at " + std::to_string(firstA) + ")" : std::string("exact"))
        + (repeat ? ", repeat run identical" : ", repeat run differs") + ", " + number(run.milliseconds) + " ms";
    tally.check(badC == 0 && badA == 0 && repeat, what + detail);
}

void checkReconstructOnDevice(ReconstructCase const& c, Tally& tally)
{
    ReconstructInputs const in = reconstructInputs(c, kSeed);
    std::vector<float> const want = reconstructReference(c, in, in.values.data());
    topk_reconstruct::ReconstructParams const params{
        c.batch, c.pixels, c.clusters, c.channels, c.valueChannels, c.k, c.tau, c.norm};
    std::vector<float> got(want.size());
    DeviceRun const run = runReconstruct(params, in, got);
    std::string const what = "gpu " + describe(c);
    if (!run.error.empty())
        return tally.fail(what + ": " + run.error);
    double const error = maxScaledError(got, want);
    tally.check(error <= kReconstructBound, what + ": max error " + number(error) + " (bound " + number(kReconstructBound)
            + " x (1 + |value|)), " + number(run.milliseconds) + " ms");
}
#endif
//! One check per case of both plugins (--quick: the largest cases left out).
template <typename SelectCheck, typename ReconstructCheck>
void eachCase(bool quick, Tally& tally, SelectCheck&& select, ReconstructCheck&& reconstruct)
{
    for (SelectCase const& c : selectCases())
        if (!(quick && c.large))
            select(c, tally);
    for (ReconstructCase const& c : reconstructCases())
        if (!(quick && c.large))
            reconstruct(c, tally);
}
} // namespace

int main(int argc, char** argv)
{
    bool hostOnly = false, quick = false, requireGpu = false;
    for (int i = 1; i < argc; ++i)
    {
        std::string const arg = argv[i];
        if (arg == "--host")
            hostOnly = true;
        else if (arg == "--quick")
            quick = true;
        else if (arg == "--require-gpu")
            requireGpu = true;
        else
        {
            std::fprintf(stderr, "usage: %s [--host] [--quick] [--require-gpu]\n", argv[0]);
            return 2;
        }
    }
    Tally tally;
    checkComparators(tally);
    checkNeighbours(tally);
    eachCase(quick, tally, checkSelectReference, checkReconstructReference);
#ifdef VITEXPORT_HOST_ONLY
    (void) hostOnly;
    tally.skip(std::string("gpu: host-only build (no CUDA compiler)") + (requireGpu ? ", but --require-gpu" : ""));
    if (requireGpu)
        ++tally.failed;
#else
    if (!hostOnly)
    {
        checkLauncherLimits(tally);
        std::string const problem = deviceProblem();
        if (!problem.empty())
        {
            (requireGpu ? tally.fail(std::string("gpu: ") + problem)
                        : tally.skip("gpu: " + problem + "; the kernels were only compiled"));
        }
        else
        {
            std::printf("GPU %s\n", deviceName().c_str());
            eachCase(quick, tally, checkSelectOnDevice, checkReconstructOnDevice);
        }
    }
#endif
    tally.skip("fp16: neither plugin takes float16 (their tensor tables are float32 only)");
    std::printf("kernel harness: %d passed, %d failed, %d skipped\n", tally.passed, tally.failed, tally.skipped);
    return tally.failed == 0 ? 0 : 1;
}
