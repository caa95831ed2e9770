/*
 * Checks and error reporting shared by the plugins: a failed check throws std::invalid_argument
 * with a one-line message; every noexcept TensorRT entry point runs its body through guarded(),
 * which turns the exception into the plugin's error report and an error return value.
 */
#ifndef VITEXPORT_PLUGIN_COMMON_CHECKS_H
#define VITEXPORT_PLUGIN_COMMON_CHECKS_H

#include "NvInferRuntime.h"

#include <cstdio>
#include <exception>
#include <stdexcept>
#include <string>

namespace vitexport
{
namespace common
{

inline void require(bool condition, std::string const& message)
{
    if (!condition)
    {
        throw std::invalid_argument(message);
    }
}

//! Every error leaves through here: TensorRT's error recorder when one is set, stderr always,
//! so a bad attribute or shape shows up as a one-line message at build time.
inline void reportError(char const* plugin, char const* where, char const* message) noexcept
{
    char text[512];
    std::snprintf(text, sizeof(text), "%s::%s: %s", plugin, where, message);
    std::fprintf(stderr, "[TensorRT plugin] %s\n", text);
    nvinfer1::IPluginRegistry* registry = getPluginRegistry();
    nvinfer1::IErrorRecorder* recorder = registry != nullptr ? registry->getErrorRecorder() : nullptr;
    if (recorder != nullptr)
    {
        recorder->reportError(nvinfer1::ErrorCode::kINVALID_ARGUMENT, text);
    }
}

//! body() or, when it throws, `onError` after reporting the message as plugin::where.
template <typename Result, typename Body>
Result guarded(char const* plugin, char const* where, Result onError, Body&& body) noexcept
{
    try
    {
        return body();
    }
    catch (std::exception const& e)
    {
        reportError(plugin, where, e.what());
    }
    return onError;
}

//! "1 output", "3 inputs": counts in messages.
inline std::string counted(int32_t count, char const* noun)
{
    return std::to_string(count) + " " + noun + (count == 1 ? "" : "s");
}

} // namespace common
} // namespace vitexport

#endif // VITEXPORT_PLUGIN_COMMON_CHECKS_H
