// The backend seam, part 6: code identity -- naming code so that another process running the
// same image can find it, and checking that what it is sent names code.
// Twins: src/posix/code_identity.cpp, src/win32/code_identity.cpp.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace multiproc::detail::os {

/// Where a piece of code lives: its module ("" for the main program) and the offset from
/// that module's base. Survives address-space randomisation and re-execution.
struct code_location {
  std::string module;
  std::uint64_t offset = 0;
};
/// Finds the module that holds `address`. Returns false if no loaded module holds it.
bool locate_code(const void* address, code_location& out);
/// The address `module`+`offset` names, if it lies in an executable mapping of that module
/// (which must be loaded already: nothing is loaded on request); nullptr otherwise.
const void* resolve_code(std::string_view module, std::uint64_t offset);
/// A string that differs between two different program images (GNU build id, or size and
/// time of the file; Windows: the PE header's stamps and section table).
std::string image_identity();

}  // namespace multiproc::detail::os
