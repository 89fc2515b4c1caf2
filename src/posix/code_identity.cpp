// Code identity on POSIX: modules and their executable segments through dl_iterate_phdr,
// which works for dynamic, PIE, static and static-pie programs alike (dladdr does not), on
// Linux and the BSDs. The list is cached (a function is located per task) and refreshed when
// an address or a module name is not found in it: a library loaded since the last look.
#include <link.h>
#include <sys/stat.h>

#include <cstdio>
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

int collect(dl_phdr_info* info, std::size_t, void* out) {
  auto& list = *static_cast<std::vector<module_info>*>(out);
  module_info m;
  // The first entry is the main program, whose name is empty (or its path on some libcs).
  m.name = list.empty() ? std::string() : (info->dlpi_name ? info->dlpi_name : "");
  m.base = static_cast<std::uintptr_t>(info->dlpi_addr);
  for (int i = 0; i < info->dlpi_phnum; ++i) {
    const auto& segment = info->dlpi_phdr[i];
    if (segment.p_type == PT_LOAD && (segment.p_flags & PF_X)) {
      const std::uintptr_t begin = m.base + segment.p_vaddr;
      m.executable.emplace_back(begin, begin + segment.p_memsz);
    }
  }
  list.push_back(std::move(m));
  return 0;
}

void refresh_locked() {
  std::vector<module_info> fresh;
  dl_iterate_phdr(&collect, &fresh);
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

int find_build_id(dl_phdr_info* info, std::size_t, void* out) {
  auto& id = *static_cast<std::string*>(out);
  for (int i = 0; i < info->dlpi_phnum; ++i) {
    const auto& segment = info->dlpi_phdr[i];
    if (segment.p_type != PT_NOTE) continue;
    const char* note = reinterpret_cast<const char*>(info->dlpi_addr + segment.p_vaddr);
    const char* end = note + segment.p_memsz;
    while (note + sizeof(ElfW(Nhdr)) <= end) {
      ElfW(Nhdr) header;
      std::memcpy(&header, note, sizeof header);
      const char* name = note + sizeof header;
      const char* desc = name + ((header.n_namesz + 3) & ~3u);
      if (header.n_type == NT_GNU_BUILD_ID && header.n_namesz == 4 &&
          std::memcmp(name, "GNU", 4) == 0 && desc + header.n_descsz <= end) {
        id = "build-id:" + hex(reinterpret_cast<const unsigned char*>(desc), header.n_descsz);
        return 1;
      }
      note = desc + ((header.n_descsz + 3) & ~3u);
    }
  }
  return 1;  // only the first entry (the main program) matters
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

// The check a worker makes before calling anything it was sent: the address must fall in an
// executable PT_LOAD segment of the named module (PF_X), so a forged offset can at worst name
// other code of the same program, never data or the stack; invokers are further checked
// against the registry (core/protocol/call.cpp).
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
    std::string id;
    dl_iterate_phdr(&find_build_id, &id);
    if (!id.empty()) return id;
    // No build id: the size and modification time of the running image.
    struct stat info {};
    if (::stat(posix::platform::executable_path().c_str(), &info) == 0) {
      return "file:" + std::to_string(info.st_size) + ":" + std::to_string(info.st_mtime);
    }
    return std::string("unknown");
  }();
  return identity;
}

}  // namespace multiproc::detail::os
