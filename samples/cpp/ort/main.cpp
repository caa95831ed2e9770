// Runs a vitexport model.onnx with the ONNX Runtime C++ API on the CPU and prints, for each
// image, how many pixels each predicted class (argmax over the channel axis) covers.
//
//   vitexport_ort model.onnx [input.bin] [output.bin]
//
// input.bin: the images as raw float32 in the model's input layout [N, 3, H, W], already
// normalised (samples/README.md shows how to write one); without it a fixed ramp is used.
// output.bin: the first output written back as raw float32, to compare with another runtime.
#include <onnxruntime_cxx_api.h>

#include <cstdint>
#include <functional>
#include <fstream>
#include <iostream>
#include <map>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

std::vector<float> read_floats(const std::string& path, size_t count) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  std::vector<float> data(count);
  in.read(reinterpret_cast<char*>(data.data()), static_cast<std::streamsize>(count * sizeof(float)));
  if (static_cast<size_t>(in.gcount()) != count * sizeof(float))
    throw std::runtime_error(path + ": expected " + std::to_string(count) + " float32 values");
  return data;
}

// Pixels per class of one [C, H, W] map, by argmax over C (ties go to the lower class).
std::map<int64_t, int64_t> class_pixels(const float* logits, int64_t classes, int64_t pixels) {
  std::map<int64_t, int64_t> counts;
  for (int64_t p = 0; p < pixels; ++p) {
    int64_t best = 0;
    for (int64_t c = 1; c < classes; ++c)
      if (logits[c * pixels + p] > logits[best * pixels + p]) best = c;
    ++counts[best];
  }
  return counts;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || argc > 4) {
    std::cerr << "usage: " << argv[0] << " model.onnx [input.bin] [output.bin]\n";
    return 2;
  }
  try {
    Ort::Env env(ORT_LOGGING_LEVEL_WARNING, "vitexport");
    Ort::SessionOptions options;
    Ort::Session session(env, argv[1], options);
    Ort::AllocatorWithDefaultOptions allocator;

    // Names and the input shape come from the model itself.
    auto input_name = session.GetInputNameAllocated(0, allocator);
    auto output_name = session.GetOutputNameAllocated(0, allocator);
    std::vector<int64_t> shape =
        session.GetInputTypeInfo(0).GetTensorTypeAndShapeInfo().GetShape();
    for (auto& d : shape)
      if (d < 0) d = 1;  // a dynamic batch: run one image
    const size_t count = static_cast<size_t>(
        std::accumulate(shape.begin(), shape.end(), int64_t{1}, std::multiplies<int64_t>()));

    std::vector<float> images;
    if (argc >= 3) {
      images = read_floats(argv[2], count);
    } else {
      images.resize(count);
      for (size_t i = 0; i < count; ++i) images[i] = static_cast<float>(i % 256) / 128.0f - 1.0f;
    }

    Ort::MemoryInfo memory = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
    Ort::Value input = Ort::Value::CreateTensor<float>(memory, images.data(), images.size(),
                                                       shape.data(), shape.size());
    const char* input_names[] = {input_name.get()};
    const char* output_names[] = {output_name.get()};
    std::vector<Ort::Value> outputs =
        session.Run(Ort::RunOptions{nullptr}, input_names, &input, 1, output_names, 1);

    std::vector<int64_t> out_shape = outputs[0].GetTensorTypeAndShapeInfo().GetShape();
    const float* logits = outputs[0].GetTensorData<float>();
    const size_t out_count = outputs[0].GetTensorTypeAndShapeInfo().GetElementCount();
    std::cout << output_name.get() << " [";
    for (size_t i = 0; i < out_shape.size(); ++i) std::cout << (i ? ", " : "") << out_shape[i];
    std::cout << "]\n";
    if (out_shape.size() == 4) {  // segmentation logits [N, C, H, W]
      const int64_t classes = out_shape[1], pixels = out_shape[2] * out_shape[3];
      for (int64_t n = 0; n < out_shape[0]; ++n) {
        std::cout << "image " << n << ":";
        for (const auto& [c, k] : class_pixels(logits + n * classes * pixels, classes, pixels))
          std::cout << " class " << c << ": " << k << " px;";
        std::cout << "\n";
      }
    }
    if (argc == 4) {
      std::ofstream out(argv[3], std::ios::binary);
      out.write(reinterpret_cast<const char*>(logits),
                static_cast<std::streamsize>(out_count * sizeof(float)));
      std::cout << "wrote " << argv[3] << "\n";
    }
  } catch (const std::exception& err) {  // Ort::Exception derives from std::exception
    std::cerr << "error: " << err.what() << "\n";
    return 1;
  }
  return 0;
}
