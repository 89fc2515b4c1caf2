// Code identity on macOS (see src/os/code_identity.hpp), the twin of code_identity.cpp, which
// needs <link.h>'s dl_iterate_phdr: macOS has no such call, but dyld keeps the list of loaded
// images, each a Mach-O header in memory whose load commands give the executable segments.
// Offsets are taken from the image's header address, which moves with the image under ASLR.
// Written for macOS and built only there (CMake, APPLE): the Linux machines that develop this
// project cannot compile it; the workflow's macOS job does.
#include <mach-o/dyld.h>
#include <mach-o/loader.h>
#include <mach/vm_prot.h>
#include <sys/stat.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "../os/code_identity.hpp"
#include "internal.hpp"
#include "platform.hpp"

namespace multiproc::detail::os {

namespace {

struct module_info {
  std::string name;  // "" for the main program
  std::uintptr_t base = 0;
  std::vector<std::pair<std::uintptr_t, std::uintptr_t>> executable;  // [begin, end)
};

std::vector<module_info>& modules() {
  static std::vector<module_info> list;
  return list;
}

/// Calls `each(command)` for every load command of the 64-bit image at `header`.
template <class Each>
void for_each_command(const mach_header_64* header, Each each) {
  if (header == nullptr || header->magic != MH_MAGIC_64) return;
  const auto* at = reinterpret_cast<const char*>(header) + sizeof(mach_header_64);
  for (std::uint32_t i = 0; i < header->ncmds; ++i) {
    const auto* command = reinterpret_cast<const load_command*>(at);
    if (command->cmdsize == 0) return;  // a malformed header: stop rather than loop
    each(command);
    at += command->cmdsize;
  }
}

void refresh_locked() {
  // dyld's list may change while it is read (a library loading on another thread): an image
  // missed here is found on the next refresh, which a miss triggers.
  std::vector<module_info> fresh;
  const std::uint32_t count = _dyld_image_count();
  for (std::uint32_t i = 0; i < count; ++i) {
    const auto* header = reinterpret_cast<const mach_header_64*>(_dyld_get_image_header(i));
    if (header == nullptr) continue;
    const char* name = _dyld_get_image_name(i);
    const std::uintptr_t slide = static_cast<std::uintptr_t>(_dyld_get_image_vmaddr_slide(i));
    module_info m;
    // dyld puts the main executable first.
    m.name = i == 0 ? std::string() : std::string(name != nullptr ? name : "");
    m.base = reinterpret_cast<std::uintptr_t>(header);
    for_each_command(header, [&](const load_command* command) {
      if (command->cmd != LC_SEGMENT_64) return;
      const auto* segment = reinterpret_cast<const segment_command_64*>(command);
      if ((segment->initprot & VM_PROT_EXECUTE) == 0) return;  // __PAGEZERO, data
      const std::uintptr_t begin = static_cast<std::uintptr_t>(segment->vmaddr) + slide;
      m.executable.emplace_back(begin, begin + static_cast<std::uintptr_t>(segment->vmsize));
    });
    fresh.push_back(std::move(m));
  }
  modules().swap(fresh);
}

const module_info* holding_locked(std::uintptr_t address) {
  for (const auto& m : modules()) {
    for (const auto& [begin, end] : m.executable) {
      if (address >= begin && address < end) return &m;
    }
  }
  return nullptr;
}

const module_info* named_locked(std::string_view name) {
  for (const auto& m : modules()) {
    if (m.name == name) return &m;
  }
  return nullptr;
}

bool executable_in(const module_info& m, std::uintptr_t address) {
  for (const auto& [begin, end] : m.executable) {
    if (address >= begin && address < end) return true;
  }
  return false;
}

std::string hex(const unsigned char* bytes, std::size_t size) {
  static const char digits[] = "0123456789abcdef";
  std::string out;
  for (std::size_t i = 0; i < size; ++i) {
    out.push_back(digits[bytes[i] >> 4]);
    out.push_back(digits[bytes[i] & 15]);
  }
  return out;
}

/// The main executable's LC_UUID, which the linker writes into every Mach-O image (ld64's
/// -no_uuid aside): two builds differ in it as two ELF builds differ in their GNU build id.
std::string executable_uuid() {
  std::string id;
  const auto* header = reinterpret_cast<const mach_header_64*>(_dyld_get_image_header(0));
  for_each_command(header, [&](const load_command* command) {
    if (command->cmd != LC_UUID || !id.empty()) return;
    const auto* uuid = reinterpret_cast<const uuid_command*>(command);
    id = "uuid:" + hex(uuid->uuid, sizeof uuid->uuid);
  });
  return id;
}

}  // namespace

namespace posix {
std::mutex& code_cache_mutex() {
  static std::mutex mutex;
  return mutex;
}
}  // namespace posix

bool locate_code(const void* address, code_location& out) {
  const auto where = reinterpret_cast<std::uintptr_t>(address);
  std::lock_guard<std::mutex> lock(posix::code_cache_mutex());
  const module_info* m = holding_locked(where);
  if (m == nullptr) {
    refresh_locked();  // a library loaded since the last look
    m = holding_locked(where);
    if (m == nullptr) return false;
  }
  out.module = m->name;
  out.offset = where - m->base;
  return true;
}

// As on Linux: the address must fall in an executable segment (VM_PROT_EXECUTE) of the named
// image, so a forged offset can at worst name other code of the same program.
const void* resolve_code(std::string_view module, std::uint64_t offset) {
  std::lock_guard<std::mutex> lock(posix::code_cache_mutex());
  const module_info* m = named_locked(module);
  if (m == nullptr) {
    refresh_locked();
    m = named_locked(module);
    if (m == nullptr) return nullptr;
  }
  const std::uintptr_t address = m->base + static_cast<std::uintptr_t>(offset);
  if (!executable_in(*m, address)) return nullptr;
  return reinterpret_cast<const void*>(address);
}

std::string image_identity() {
  static const std::string identity = [] {
    std::string id = executable_uuid();
    if (!id.empty()) return id;
    struct stat info {};
    if (::stat(posix::platform::executable_path().c_str(), &info) == 0) {
      return "file:" + std::to_string(info.st_size) + ":" + std::to_string(info.st_mtime);
    }
    return std::string("unknown");
  }();
  return identity;
}

}  // namespace multiproc::detail::os
