// Whole-vector reads and writes of the native test programs' raw input and output files.
#ifndef VITEXPORT_TESTS_NATIVE_BINARY_IO_H
#define VITEXPORT_TESTS_NATIVE_BINARY_IO_H

#include <cstdio>
#include <vector>

template <typename T>
bool readAll(std::FILE* f, std::vector<T>& v)
{
    return std::fread(v.data(), sizeof(T), v.size(), f) == v.size();
}

template <typename T>
bool writeAll(std::FILE* f, std::vector<T> const& v)
{
    return std::fwrite(v.data(), sizeof(T), v.size(), f) == v.size();
}

#endif // VITEXPORT_TESTS_NATIVE_BINARY_IO_H
