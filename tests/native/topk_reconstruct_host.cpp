// Host-side run of TopKMaskedReconstruct's per-element math (plugins/topk_masked_reconstruct/
// topkMaskedReconstruct.cuh), composed in the kernel's order by plugins/tests/reference.h, so the
// test can compare the very functions the kernel calls with exporter.ops.TokenReconstruction.
//
// usage: topk_reconstruct_host IN OUT B N M C D k tau norm has_mask
//   IN:  float32 z [B,N,C], centers [B,M,C], values [B,M,D], then uint8 mask [N,M] if has_mask
//   OUT: float32 [B,N,D]
#include "../../plugins/tests/reference.h"
#include "binary_io.h"

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <vector>

int main(int argc, char** argv)
{
    if (argc != 12)
    {
        std::fprintf(stderr, "usage: %s IN OUT B N M C D k tau norm has_mask\n", argv[0]);
        return 2;
    }
    int const B = std::atoi(argv[3]), N = std::atoi(argv[4]), M = std::atoi(argv[5]);
    int const C = std::atoi(argv[6]), D = std::atoi(argv[7]), k = std::atoi(argv[8]);
    float const tau = static_cast<float>(std::atof(argv[9]));
    int const norm = std::atoi(argv[10]), hasMask = std::atoi(argv[11]);

    std::vector<float> z(size_t(B) * N * C), centers(size_t(B) * M * C), values(size_t(B) * M * D);
    std::vector<unsigned char> bytes(hasMask ? size_t(N) * M : 0);
    std::FILE* in = std::fopen(argv[1], "rb");
    if (in == nullptr || !readAll(in, z) || !readAll(in, centers) || !readAll(in, values) || !readAll(in, bytes))
    {
        std::fprintf(stderr, "cannot read %s\n", argv[1]);
        return 1;
    }
    std::fclose(in);
    std::unique_ptr<bool[]> mask(new bool[bytes.size() + 1]);
    for (size_t i = 0; i < bytes.size(); ++i)
        mask[i] = bytes[i] != 0;

    std::vector<float> const out = vitexport::reference::topkReconstruct(B, N, M, C, D, k, tau, norm, z.data(),
        centers.data(), values.data(), hasMask ? mask.get() : nullptr);
    std::FILE* f = std::fopen(argv[2], "wb");
    if (f == nullptr || !writeAll(f, out))
    {
        std::fprintf(stderr, "cannot write %s\n", argv[2]);
        return 1;
    }
    std::fclose(f);
    return 0;
}
