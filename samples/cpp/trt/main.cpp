// Runs a vitexport TensorRT engine (model.plan / model.engine) on one image and prints, per
// predicted class (argmax over the channel axis), how many pixels it covers.
//
//   vitexport_trt model.plan [libvitexport_plugins.so] [input.bin] [output.bin]
//
// The plugin library is needed when the engine was built from model.plugins.onnx: loading it
// registers the plugin creators (REGISTER_TENSORRT_PLUGIN) before the engine is deserialized.
// input.bin: raw float32 [N, 3, H, W], normalised as for the model; without it a fixed ramp.
// Pass "-" for the plugin library to skip it.
#include <NvInferRuntime.h>
#include <cuda_runtime_api.h>
#include <dlfcn.h>

#include <cstdint>
#include <stdexcept>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace {

class Logger : public nvinfer1::ILogger {
  void log(Severity severity, const char* msg) noexcept override {
    if (severity <= Severity::kWARNING) std::cerr << "[TensorRT] " << msg << "\n";
  }
};

void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess)
    throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(status));
}

std::vector<char> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

int64_t volume(const nvinfer1::Dims& d) {
  int64_t v = 1;
  for (int32_t i = 0; i < d.nbDims; ++i) v *= d.d[i];
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || argc > 5) {
    std::cerr << "usage: " << argv[0]
              << " model.plan [libvitexport_plugins.so|-] [input.bin] [output.bin]\n";
    return 2;
  }
  try {
    if (argc >= 3 && std::string(argv[2]) != "-") {
      if (!dlopen(argv[2], RTLD_NOW | RTLD_GLOBAL))
        throw std::runtime_error(std::string("cannot load plugins: ") + dlerror());
    }
    Logger logger;
    std::unique_ptr<nvinfer1::IRuntime> runtime(nvinfer1::createInferRuntime(logger));
    std::vector<char> plan = read_file(argv[1]);
    std::unique_ptr<nvinfer1::ICudaEngine> engine(
        runtime->deserializeCudaEngine(plan.data(), plan.size()));
    if (!engine) throw std::runtime_error("cannot deserialize " + std::string(argv[1]));
    std::unique_ptr<nvinfer1::IExecutionContext> context(engine->createExecutionContext());

    // One input (the images) and the outputs; names and shapes come from the engine.
    std::string input, output;
    for (int32_t i = 0; i < engine->getNbIOTensors(); ++i) {
      const char* name = engine->getIOTensorName(i);
      if (engine->getTensorIOMode(name) == nvinfer1::TensorIOMode::kINPUT) {
        if (input.empty()) input = name;
      } else if (output.empty()) {
        output = name;
      }
    }
    nvinfer1::Dims in_dims = engine->getTensorShape(input.c_str());
    if (in_dims.d[0] < 0) {  // a dynamic batch: run one image
      in_dims.d[0] = 1;
      context->setInputShape(input.c_str(), in_dims);
    }
    const int64_t in_count = volume(in_dims);
    std::vector<float> images(static_cast<size_t>(in_count));
    if (argc >= 4) {
      std::vector<char> raw = read_file(argv[3]);
      if (raw.size() != images.size() * sizeof(float))
        throw std::runtime_error(std::string(argv[3]) + ": wrong size for the input");
      std::memcpy(images.data(), raw.data(), raw.size());
    } else {
      for (size_t i = 0; i < images.size(); ++i) images[i] = static_cast<float>(i % 256) / 128.0f - 1.0f;
    }
    const nvinfer1::Dims out_dims = context->getTensorShape(output.c_str());
    const int64_t out_count = volume(out_dims);

    // Every I/O tensor needs an address, including outputs this sample does not print.
    std::vector<void*> buffers;
    void* in_dev = nullptr;
    void* out_dev = nullptr;
    for (int32_t i = 0; i < engine->getNbIOTensors(); ++i) {
      const char* name = engine->getIOTensorName(i);
      void* ptr = nullptr;
      check(cudaMalloc(&ptr, static_cast<size_t>(volume(context->getTensorShape(name))) * sizeof(float)),
            "cudaMalloc");
      context->setTensorAddress(name, ptr);
      buffers.push_back(ptr);
      if (input == name) in_dev = ptr;
      if (output == name) out_dev = ptr;
    }
    cudaStream_t stream;
    check(cudaStreamCreate(&stream), "cudaStreamCreate");
    check(cudaMemcpyAsync(in_dev, images.data(), images.size() * sizeof(float),
                          cudaMemcpyHostToDevice, stream), "copy in");
    if (!context->enqueueV3(stream)) throw std::runtime_error("enqueueV3 failed");
    std::vector<float> logits(static_cast<size_t>(out_count));
    check(cudaMemcpyAsync(logits.data(), out_dev, logits.size() * sizeof(float),
                          cudaMemcpyDeviceToHost, stream), "copy out");
    check(cudaStreamSynchronize(stream), "synchronize");

    std::cout << output << " [";
    for (int32_t i = 0; i < out_dims.nbDims; ++i) std::cout << (i ? ", " : "") << out_dims.d[i];
    std::cout << "]\n";
    if (out_dims.nbDims == 4) {  // segmentation logits [N, C, H, W]
      const int64_t classes = out_dims.d[1], pixels = out_dims.d[2] * out_dims.d[3];
      for (int64_t n = 0; n < out_dims.d[0]; ++n) {
        std::map<int64_t, int64_t> counts;
        const float* x = logits.data() + n * classes * pixels;
        for (int64_t p = 0; p < pixels; ++p) {
          int64_t best = 0;
          for (int64_t c = 1; c < classes; ++c)
            if (x[c * pixels + p] > x[best * pixels + p]) best = c;
          ++counts[best];
        }
        std::cout << "image " << n << ":";
        for (const auto& [c, k] : counts) std::cout << " class " << c << ": " << k << " px;";
        std::cout << "\n";
      }
    }
    if (argc == 5) {
      std::ofstream out(argv[4], std::ios::binary);
      out.write(reinterpret_cast<const char*>(logits.data()),
                static_cast<std::streamsize>(logits.size() * sizeof(float)));
      std::cout << "wrote " << argv[4] << "\n";
    }
    for (void* ptr : buffers) cudaFree(ptr);
    cudaStreamDestroy(stream);
  } catch (const std::exception& err) {
    std::cerr << "error: " << err.what() << "\n";
    return 1;
  }
  return 0;
}
