/*
 * Inputs and comparisons of the kernel harness: the cases (random, exact ties, the largest sizes
 * the plugins accept, batch > 1, odd sizes), deterministic generators for them and the
 * comparators (exact for indices, a bound for floats). Plain C++.
 */
#ifndef VITEXPORT_PLUGIN_TESTS_CASES_H
#define VITEXPORT_PLUGIN_TESTS_CASES_H

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

namespace vitexport
{
namespace harness
{

//! xorshift64*: the same numbers on every machine and compiler (no <random> distributions).
class Rng
{
public:
    explicit Rng(uint64_t seed)
        : mState(seed * 0x9E3779B97F4A7C15ULL + 1)
    {
    }

    uint32_t next()
    {
        mState ^= mState >> 12;
        mState ^= mState << 25;
        mState ^= mState >> 27;
        return static_cast<uint32_t>((mState * 0x2545F4914F6CDD1DULL) >> 32);
    }

    //! Uniform in [-1, 1), a multiple of 2^-23.
    float uniform()
    {
        return static_cast<float>(static_cast<int32_t>(next() >> 8) - (1 << 23)) / static_cast<float>(1 << 23);
    }

private:
    uint64_t mState;
};

struct SelectCase
{
    std::string name;
    int32_t batch, height, width, channels, neighbours, clusters, knn;
    bool ties;  //!< every token of a grid column has the same features: many exact ties
    bool large; //!< left out of --quick runs (sanitizers)

    int32_t tokens() const
    {
        return height * width;
    }
};

struct SelectInputs
{
    std::vector<float> z;           //!< [B, N, C]
    std::vector<int32_t> neighbours; //!< [N, lambda], nearest on the grid first, ties by index
    std::vector<float> weights;     //!< [lambda], AiluRus's rank weights with a = 0.9, over sqrt(C)
};

struct ReconstructCase
{
    std::string name;
    int32_t batch, pixels, clusters, channels, valueChannels, k;
    float tau;
    int32_t norm;
    bool mask;  //!< a random [N, M] mask with at least one allowed cluster per pixel
    bool ties;  //!< clusters in equal pairs and pixels on clusters: exact distance ties
    bool large;
};

struct ReconstructInputs
{
    std::vector<float> z, centers, values;
    std::vector<char> mask; //!< [N, M] 0/1, empty without a mask
};

//! The DPCSelect cases: the largest M the plugin accepts is 3840 (TensorRT's TopK limit).
inline std::vector<SelectCase> selectCases()
{
    return {
        {"random", 2, 7, 9, 13, 10, 9, 2, false, false},
        {"ties", 2, 6, 5, 16, 8, 7, 3, true, false},
        {"fallback", 2, 7, 9, 16, 4, 3, 1, false, false},
        {"smallest", 1, 1, 2, 1, 1, 1, 1, false, false},
        {"batch4", 4, 16, 16, 32, 50, 64, 1, false, false},
        {"ties-batch3", 3, 12, 11, 8, 20, 30, 4, true, false},
        {"largest-M", 1, 64, 64, 8, 50, 3840, 1, false, true},
        {"largest-lambda", 2, 9, 7, 5, 62, 20, 62, false, true},
    };
}

//! The TopKMaskedReconstruct cases: k <= 1024 and the block's shared memory
//! (4 M + 12 k bytes) <= 48 KiB, so M = 9216 with k = 1024 and M = 12285 with k = 1 are the largest.
inline std::vector<ReconstructCase> reconstructCases()
{
    return {
        {"random", 2, 63, 17, 13, 7, 5, 0.5F, 0, false, false, false},
        {"l2-mask", 3, 50, 20, 8, 9, 6, 2.F, 1, true, false, false},
        {"ties", 2, 40, 16, 4, 5, 4, 1.F, 0, false, true, false},
        {"ties-mask", 2, 33, 12, 3, 130, 3, 0.25F, 1, true, true, false},
        {"k-equals-M", 2, 17, 5, 6, 3, 5, 50.F, 0, false, false, false},
        {"k1", 1, 29, 31, 7, 11, 1, 1.F, 0, true, false, false},
        {"largest-k", 1, 32, 9216, 4, 16, 1024, 1.F, 0, false, false, true},
        {"largest-M", 1, 32, 12285, 4, 8, 1, 1.F, 1, true, false, true},
    };
}

//! For each token of an H x W grid, the `count` nearest other tokens (squared grid distance,
//! then token index), as exporter.ops.density_peaks.spatial_neighbours orders them.
inline std::vector<int32_t> gridNeighbours(int32_t height, int32_t width, int32_t count)
{
    int32_t const n = height * width;
    std::vector<int32_t> table(size_t(n) * count);
    std::vector<int64_t> keys(n);
    for (int32_t i = 0; i < n; ++i)
    {
        for (int32_t j = 0; j < n; ++j)
        {
            int64_t const dr = i / width - j / width, dc = i % width - j % width;
            keys[j] = j == i ? INT64_MAX : (dr * dr + dc * dc) * n + j; // unique keys: no ties left
        }
        for (int32_t r = 0; r < count; ++r)
        {
            int32_t best = 0;
            for (int32_t j = 1; j < n; ++j)
                best = keys[j] < keys[best] ? j : best;
            table[size_t(i) * count + r] = best;
            keys[best] = INT64_MAX;
        }
    }
    return table;
}

inline SelectInputs selectInputs(SelectCase const& c, uint64_t seed)
{
    Rng rng(seed);
    int32_t const n = c.tokens();
    SelectInputs in{std::vector<float>(size_t(c.batch) * n * c.channels), gridNeighbours(c.height, c.width, c.neighbours),
        std::vector<float>(c.neighbours)};
    for (size_t t = 0; t < in.z.size(); ++t)
    {
        size_t const token = t / c.channels, channel = t % c.channels;
        if (c.ties && token % n >= size_t(c.width)) // a copy of the same column in the first row
            in.z[t] = in.z[((token / n) * n + token % n % c.width) * c.channels + channel];
        else
            in.z[t] = rng.uniform() * 4.F;
    }
    for (int32_t r = 0; r < c.neighbours; ++r)
        in.weights[r] = ((1.F - 0.9F) * static_cast<float>(r) / static_cast<float>(c.neighbours) + 0.9F)
            / std::sqrt(static_cast<float>(c.channels));
    return in;
}

inline ReconstructInputs reconstructInputs(ReconstructCase const& c, uint64_t seed)
{
    Rng rng(seed);
    ReconstructInputs in{std::vector<float>(size_t(c.batch) * c.pixels * c.channels),
        std::vector<float>(size_t(c.batch) * c.clusters * c.channels),
        std::vector<float>(size_t(c.batch) * c.clusters * c.valueChannels), {}};
    for (float& v : in.centers)
        v = rng.uniform();
    for (float& v : in.values)
        v = rng.uniform() * 3.F;
    for (size_t t = 0; t < in.z.size(); ++t)
        in.z[t] = rng.uniform();
    if (c.ties)
    {
        // cluster 2m + 1 equals cluster 2m, and every pixel sits on one of the clusters
        for (int32_t b = 0; b < c.batch; ++b)
        {
            float* centers = &in.centers[size_t(b) * c.clusters * c.channels];
            for (int32_t m = 1; m < c.clusters; m += 2)
                for (int32_t ch = 0; ch < c.channels; ++ch)
                    centers[size_t(m) * c.channels + ch] = centers[size_t(m - 1) * c.channels + ch];
            for (int32_t p = 0; p < c.pixels; ++p)
                for (int32_t ch = 0; ch < c.channels; ++ch)
                    in.z[(size_t(b) * c.pixels + p) * c.channels + ch] = centers[size_t(p % c.clusters) * c.channels + ch];
        }
    }
    if (c.mask)
    {
        in.mask.resize(size_t(c.pixels) * c.clusters);
        for (int32_t p = 0; p < c.pixels; ++p)
        {
            for (int32_t m = 0; m < c.clusters; ++m)
                in.mask[size_t(p) * c.clusters + m] = (rng.next() & 1U) != 0;
            in.mask[size_t(p) * c.clusters + (p % c.clusters)] = 1;
        }
    }
    return in;
}

//! Index comparison: the number of entries that differ (0: equal); `first` gets the first one.
template <typename T>
size_t mismatches(std::vector<T> const& got, std::vector<T> const& want, size_t* first)
{
    size_t count = got.size() == want.size() ? 0 : 1;
    *first = 0;
    for (size_t i = 0; i < got.size() && i < want.size(); ++i)
    {
        if (got[i] != want[i] && count++ == 0)
            *first = i;
    }
    return count;
}

//! Largest |got - want| / (1 + |want|); infinity for a NaN, a size mismatch or an infinity on
//! one side only (equal infinities, e.g. log 0 on both sides, count as equal).
inline double maxScaledError(std::vector<float> const& got, std::vector<float> const& want)
{
    if (got.size() != want.size())
        return INFINITY;
    double worst = 0.0;
    for (size_t i = 0; i < got.size(); ++i)
    {
        if (std::isinf(got[i]) || std::isinf(want[i]))
        {
            worst = got[i] == want[i] ? worst : INFINITY;
            continue;
        }
        double const e = std::fabs(double(got[i]) - double(want[i])) / (1.0 + std::fabs(double(want[i])));
        worst = std::isnan(e) ? INFINITY : (e > worst ? e : worst);
    }
    return worst;
}

} // namespace harness
} // namespace vitexport

#endif // VITEXPORT_PLUGIN_TESTS_CASES_H
