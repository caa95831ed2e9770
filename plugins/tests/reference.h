/*
 * Host implementations of the two plugins: the per-element math of their .cuh headers composed
 * in the kernels' pass order, on the CPU. The kernel harness compares the CUDA launchers with
 * these; tests/native wraps them in programs that the Python tests compare with the export form.
 * Plain C++ (no CUDA, no TensorRT).
 */
#ifndef VITEXPORT_PLUGIN_TESTS_REFERENCE_H
#define VITEXPORT_PLUGIN_TESTS_REFERENCE_H

#include "../dpc_select/dpcSelect.cuh"
#include "../topk_masked_reconstruct/topkMaskedReconstruct.cuh"

#include <cstddef>
#include <cstdint>
#include <vector>

namespace vitexport
{
namespace reference
{

//! DPCSelect's outputs and the two intermediate results the Python tests also check.
struct Selection
{
    std::vector<float> negLogRho; //!< [B, N]
    std::vector<float> score;     //!< [B, N], log(rho * delta)
    std::vector<int32_t> centers; //!< [B, M]
    std::vector<int32_t> assignment; //!< [B, N]
};

//! z [B, N, C], neighbours [N, lambda], weights [lambda].
inline Selection dpcSelect(int32_t B, int32_t N, int32_t C, int32_t L, int32_t M, int32_t knn, float const* z,
    int32_t const* nb, float const* weights)
{
    using namespace dpc_select;
    size_t const tokens = size_t(B) * N;
    Selection out{std::vector<float>(tokens), std::vector<float>(tokens), std::vector<int32_t>(size_t(B) * M),
        std::vector<int32_t>(tokens)};
    std::vector<float> w(size_t(N) * L);
    std::vector<int32_t> rank(N), slot(N);
    for (int32_t b = 0; b < B; ++b)
    {
        float const* image = z + size_t(b) * N * C;
        float* nlr = &out.negLogRho[size_t(b) * N];
        float* score = &out.score[size_t(b) * N];
        int32_t* centers = &out.centers[size_t(b) * M];
        // pass 1: weighted neighbour distances and -log rho
        for (int32_t i = 0; i < N; ++i)
        {
            for (int32_t r = 0; r < L; ++r)
            {
                int32_t const j = nb[size_t(i) * L + r];
                w[size_t(i) * L + r] = weightedDistance(image + size_t(i) * C, image + size_t(j) * C, C, weights[r]);
            }
            nlr[i] = meanOfSmallest(&w[size_t(i) * L], L, knn);
        }
        // pass 2: the image's largest weighted distance (delta of a token with no denser one)
        float maxW = w[0];
        for (float v : w)
            maxW = v > maxW ? v : maxW;
        // pass 3: scores
        for (int32_t i = 0; i < N; ++i)
        {
            bool denser = false;
            float const d = nearestDenserDistance(&w[size_t(i) * L], nb + size_t(i) * L, nlr, L, nlr[i], i, &denser);
            score[i] = logCenterScore(denser, d, nlr[i], maxW);
        }
        // pass 4: ranks; pass 5: slots and centers; pass 6: assignment
        for (int32_t i = 0; i < N; ++i)
            rank[i] = centerRank(score, N, i);
        for (int32_t i = 0; i < N; ++i)
        {
            slot[i] = rank[i] < M ? centerSlot(rank.data(), i, M) : -1;
            if (slot[i] >= 0)
                centers[slot[i]] = i;
        }
        for (int32_t i = 0; i < N; ++i)
        {
            int32_t a = slot[i];
            if (a < 0)
            {
                int32_t const* row = nb + size_t(i) * L;
                int32_t const r = nearestCenterNeighbour(&w[size_t(i) * L], row, slot.data(), L);
                a = r >= 0 ? slot[row[r]] : nearestCenterByFeature(image + size_t(i) * C, image, centers, M, C);
            }
            out.assignment[size_t(b) * N + i] = a;
        }
    }
    return out;
}

//! TopKMaskedReconstruct: z [B, N, C], centers [B, M, C], values [B, M, D], mask [N, M] or
//! nullptr; returns [B, N, D].
inline std::vector<float> topkReconstruct(int32_t B, int32_t N, int32_t M, int32_t C, int32_t D, int32_t k,
    float tau, int32_t norm, float const* z, float const* centers, float const* values, bool const* mask)
{
    using namespace topk_reconstruct;
    std::vector<float> out(size_t(B) * N * D), dist(M), nearDist(k), weights(k);
    std::vector<int32_t> nearIndex(k);
    for (int32_t b = 0; b < B; ++b)
    {
        for (int32_t n = 0; n < N; ++n)
        {
            float const* zRow = z + (size_t(b) * N + n) * C;
            for (int32_t j = 0; j < M; ++j)
            {
                float const d = squaredDistance(zRow, centers + (size_t(b) * M + j) * C, C);
                dist[j] = mask == nullptr ? d : maskedDistance(d, mask[size_t(n) * M + j]);
            }
            int32_t count = 0;
            for (int32_t j = 0; j < M; ++j)
                count = insertNearest(nearDist.data(), nearIndex.data(), count, k, dist[j], j);
            reconstructionWeights(nearDist.data(), k, tau, norm, weights.data());
            for (int32_t ch = 0; ch < D; ++ch)
            {
                out[(size_t(b) * N + n) * D + ch]
                    = weightedSum(weights.data(), nearIndex.data(), k, values + size_t(b) * M * D, D, ch);
            }
        }
    }
    return out;
}

} // namespace reference
} // namespace vitexport

#endif // VITEXPORT_PLUGIN_TESTS_REFERENCE_H
