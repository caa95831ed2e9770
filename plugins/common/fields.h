/*
 * Plugin attributes as TensorRT plugin fields. Each plugin declares its attribute table once
 * (a static fields(Attributes*) of its attribute struct); the creator lists it with null data,
 * createPlugin reads the given fields through it and serialisation writes it.
 */
#ifndef VITEXPORT_PLUGIN_COMMON_FIELDS_H
#define VITEXPORT_PLUGIN_COMMON_FIELDS_H

#include "NvInferRuntime.h"
#include "checks.h"

#include <cstdint>
#include <string>
#include <vector>

namespace vitexport
{
namespace common
{

//! Address of one attribute of `attributes`, or nullptr for the creator's list of names.
template <typename Attributes, typename T>
void const* memberData(Attributes* attributes, T Attributes::*member)
{
    return attributes != nullptr ? &(attributes->*member) : nullptr;
}

//! The scalar of `given` when its type is `narrow` (read as T) or `wide`, else false.
template <typename T, typename Wide>
bool scalarOf(nvinfer1::PluginField const& given, nvinfer1::PluginFieldType narrow, nvinfer1::PluginFieldType wide,
    Wide* value)
{
    if (given.type == narrow)
    {
        *value = *static_cast<T const*>(given.data);
        return true;
    }
    if (given.type == wide)
    {
        *value = *static_cast<Wide const*>(given.data);
        return true;
    }
    return false;
}

//! Scalar of an incoming field converted to the declared type (kINT32 or kFLOAT32); the ONNX
//! parser passes INT as kINT32 and FLOAT as kFLOAT32, other writers may use the 64-bit types.
inline void readField(nvinfer1::PluginField const& given, nvinfer1::PluginField const& declared)
{
    using nvinfer1::PluginFieldType;
    std::string const name = std::string("attribute '") + given.name + "'";
    require(given.data != nullptr && given.length == 1, name + " must be a single value (lists are not accepted)");
    void* target = const_cast<void*>(declared.data);
    if (declared.type == PluginFieldType::kINT32)
    {
        int64_t value = 0;
        require(scalarOf<int32_t>(given, PluginFieldType::kINT32, PluginFieldType::kINT64, &value),
            name + " must be an integer");
        require(value >= INT32_MIN && value <= INT32_MAX, name + " does not fit in int32");
        *static_cast<int32_t*>(target) = static_cast<int32_t>(value);
    }
    else
    {
        double value = 0.0;
        require(scalarOf<float>(given, PluginFieldType::kFLOAT32, PluginFieldType::kFLOAT64, &value),
            name + " must be a float");
        *static_cast<float*>(target) = static_cast<float>(value);
    }
}

//! Every given field whose name is in the table; other names (plugin_version, if a parser
//! forwards it) are ignored.
inline void readFields(nvinfer1::PluginFieldCollection const* given, std::vector<nvinfer1::PluginField> const& table)
{
    for (int32_t i = 0; given != nullptr && i < given->nbFields; ++i)
    {
        nvinfer1::PluginField const& field = given->fields[i];
        for (nvinfer1::PluginField const& declared : table)
        {
            if (field.name != nullptr && std::string(field.name) == declared.name)
            {
                readField(field, declared);
            }
        }
    }
}

} // namespace common
} // namespace vitexport

#endif // VITEXPORT_PLUGIN_COMMON_FIELDS_H
