// Host-side run of DPCSelect's per-element math (plugins/dpc_select/dpcSelect.cuh), composed in
// the kernels' pass order by plugins/tests/reference.h, so the test compares the very functions
// the kernels call with exporter.ops.density_peaks.DensityPeaksSelection.
//
// usage: dpc_select_host IN OUT B N C lambda M knn
//   IN:  float32 z [B,N,C], int32 neighbours [N,lambda], float32 weights [lambda]
//   OUT: float32 -log rho [B,N], float32 log score [B,N], int32 centers [B,M], int32 assignment [B,N]
#include "../../plugins/tests/reference.h"
#include "binary_io.h"

#include <cstdio>
#include <cstdlib>
#include <vector>

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
    auto const s = vitexport::reference::dpcSelect(B, N, C, L, M, knn, z.data(), nb.data(), weights.data());
    std::FILE* f = std::fopen(argv[2], "wb");
    if (f == nullptr || !writeAll(f, s.negLogRho) || !writeAll(f, s.score) || !writeAll(f, s.centers)
        || !writeAll(f, s.assignment))
    {
        std::fprintf(stderr, "cannot write %s\n", argv[2]);
        return 1;
    }
    std::fclose(f);
    return 0;
}
