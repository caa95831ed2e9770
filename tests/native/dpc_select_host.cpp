// Host-side run of DPCSelect's per-element math (plugins/dpc_select/dpcSelect.cuh), composed in
// the kernel's pass order, so the test compares the very functions the kernels call with
// exporter.ops.density_peaks.DensityPeaksSelection.
//
// usage: dpc_select_host IN OUT B N C lambda M knn
//   IN:  float32 z [B,N,C], int32 neighbours [N,lambda], float32 weights [lambda]
//   OUT: float32 -log rho [B,N], float32 log score [B,N], int32 centers [B,M], int32 assignment [B,N]
#include "dpcSelect.cuh"

#include <cstdio>
#include <cstdlib>
#include <vector>

using namespace vitexport::dpc_select;

template <typename T>
static bool readAll(std::FILE* f, std::vector<T>& v)
{
    return std::fread(v.data(), sizeof(T), v.size(), f) == v.size();
}

template <typename T>
static bool writeAll(std::FILE* f, std::vector<T> const& v)
{
    return std::fwrite(v.data(), sizeof(T), v.size(), f) == v.size();
}

int main(int argc, char** argv)
{
    if (argc != 9)
    {
        std::fprintf(stderr, "usage: %s IN OUT B N C lambda M knn\n", argv[0]);
        return 2;
    }
    int const B = std::atoi(argv[3]), N = std::atoi(argv[4]), C = std::atoi(argv[5]);
    int const L = std::atoi(argv[6]), M = std::atoi(argv[7]), knn = std::atoi(argv[8]);
    std::vector<float> z(size_t(B) * N * C), weights(L);
    std::vector<int32_t> nb(size_t(N) * L);
    std::FILE* in = std::fopen(argv[1], "rb");
    if (in == nullptr || !readAll(in, z) || !readAll(in, nb) || !readAll(in, weights))
    {
        std::fprintf(stderr, "cannot read %s\n", argv[1]);
        return 1;
    }
    std::fclose(in);

    std::vector<float> w(size_t(B) * N * L), nlr(size_t(B) * N), score(size_t(B) * N);
    std::vector<int32_t> rank(size_t(B) * N), slot(size_t(B) * N), centers(size_t(B) * M), assign(size_t(B) * N);
    for (int b = 0; b < B; ++b)
    {
        float const* image = &z[size_t(b) * N * C];
        float* wb = &w[size_t(b) * N * L];
        float* nlrb = &nlr[size_t(b) * N];
        // pass 1: weighted neighbour distances and -log rho
        for (int i = 0; i < N; ++i)
        {
            for (int r = 0; r < L; ++r)
            {
                wb[size_t(i) * L + r] = weightedDistance(
                    image + size_t(i) * C, image + size_t(nb[size_t(i) * L + r]) * C, C, weights[r]);
            }
            nlrb[i] = meanOfSmallest(wb + size_t(i) * L, L, knn);
        }
        // pass 2: the image's peak distance
        float maxW = wb[0], maxNlr = nlrb[0];
        for (size_t t = 0; t < size_t(N) * L; ++t)
            maxW = wb[t] > maxW ? wb[t] : maxW;
        for (int i = 0; i < N; ++i)
            maxNlr = nlrb[i] > maxNlr ? nlrb[i] : maxNlr;
        float const logPeak = logPeakDistance(maxW, maxNlr);
        // pass 3: scores
        for (int i = 0; i < N; ++i)
        {
            bool denser = false;
            float const d = nearestDenserDistance(wb + size_t(i) * L, &nb[size_t(i) * L], nlrb, L, nlrb[i], &denser);
            score[size_t(b) * N + i] = logCenterScore(denser, d, nlrb[i], logPeak);
        }
        // pass 4: ranks; pass 5: slots and centers; pass 6: assignment
        for (int i = 0; i < N; ++i)
            rank[size_t(b) * N + i] = centerRank(&score[size_t(b) * N], N, i);
        for (int i = 0; i < N; ++i)
        {
            bool const isCenter = rank[size_t(b) * N + i] < M;
            int const s = isCenter ? centerSlot(&rank[size_t(b) * N], i, M) : -1;
            slot[size_t(b) * N + i] = s;
            if (isCenter)
                centers[size_t(b) * M + s] = i;
        }
        for (int i = 0; i < N; ++i)
        {
            int32_t const* slotb = &slot[size_t(b) * N];
            int32_t a = slotb[i];
            if (a < 0)
            {
                int32_t const r = nearestCenterNeighbour(wb + size_t(i) * L, &nb[size_t(i) * L], slotb, L);
                a = r >= 0 ? slotb[nb[size_t(i) * L + r]]
                           : nearestCenterByFeature(image + size_t(i) * C, image, &centers[size_t(b) * M], M, C);
            }
            assign[size_t(b) * N + i] = a;
        }
    }
    std::FILE* f = std::fopen(argv[2], "wb");
    if (f == nullptr || !writeAll(f, nlr) || !writeAll(f, score) || !writeAll(f, centers) || !writeAll(f, assign))
    {
        std::fprintf(stderr, "cannot write %s\n", argv[2]);
        return 1;
    }
    std::fclose(f);
    return 0;
}
