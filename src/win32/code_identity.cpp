// Code identity on Windows: (module, offset) through the loader, checked against the
// in-memory PE image; the image identity from the main module's PE header.
#include "../os/code_identity.hpp"
#include "internal.hpp"

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace multiproc::detail::os {

namespace {

const IMAGE_NT_HEADERS* nt_headers(HMODULE module) noexcept {
  const auto* base = reinterpret_cast<const unsigned char*>(module);
  const auto* dos = reinterpret_cast<const IMAGE_DOS_HEADER*>(base);
  if (dos->e_magic != IMAGE_DOS_SIGNATURE) return nullptr;
  const auto* nt = reinterpret_cast<const IMAGE_NT_HEADERS*>(base + dos->e_lfanew);
  return nt->Signature == IMAGE_NT_SIGNATURE ? nt : nullptr;
}

std::size_t image_size(HMODULE module) noexcept {
  const IMAGE_NT_HEADERS* nt = nt_headers(module);
  return nt != nullptr ? nt->OptionalHeader.SizeOfImage : 0;
}

bool is_executable(DWORD protection) noexcept {
  return (protection & (PAGE_EXECUTE | PAGE_EXECUTE_READ | PAGE_EXECUTE_READWRITE |
                        PAGE_EXECUTE_WRITECOPY)) != 0 &&
         (protection & PAGE_GUARD) == 0;
}

// True if `address` is committed, executable memory of the image mapped at `module`.
bool in_executable_image_page(HMODULE module, const void* address) noexcept {
  MEMORY_BASIC_INFORMATION region{};
  if (VirtualQuery(address, &region, sizeof region) != sizeof region) return false;
  return region.State == MEM_COMMIT && region.Type == MEM_IMAGE &&
         region.AllocationBase == module && is_executable(region.Protect);
}

// The main program is where nearly every function and invoker lives, and it can never be
// unloaded: its bounds and executable regions are found once, and the per-task lookups that
// hit it take no lock and make no system call.
struct main_image {
  const unsigned char* base = nullptr;
  std::size_t size = 0;
  std::vector<std::pair<std::size_t, std::size_t>> executable;  // [begin, end) offsets

  main_image() {
    const HMODULE module = GetModuleHandleW(nullptr);
    base = reinterpret_cast<const unsigned char*>(module);
    size = image_size(module);
    for (std::size_t offset = 0; offset < size;) {
      MEMORY_BASIC_INFORMATION region{};
      if (VirtualQuery(base + offset, &region, sizeof region) != sizeof region) break;
      const auto begin =
          static_cast<std::size_t>(static_cast<const unsigned char*>(region.BaseAddress) - base);
      const std::size_t end = begin + region.RegionSize;
      if (region.State == MEM_COMMIT && region.Type == MEM_IMAGE &&
          region.AllocationBase == module && is_executable(region.Protect)) {
        executable.emplace_back(begin, end);
      }
      if (end <= offset) break;
      offset = end;
    }
  }

  bool holds(const void* address) const noexcept {
    const auto* p = static_cast<const unsigned char*>(address);
    return p >= base && p < base + size;
  }
  bool executable_at(std::uint64_t offset) const noexcept {
    for (const auto& range : executable) {
      if (offset >= range.first && offset < range.second) return true;
    }
    return false;
  }
};

const main_image& program_image() {
  static const main_image image;
  return image;
}

// Other modules (DLLs) can be unloaded and replaced by a different one at the same address,
// so nothing about them is cached: the loader is asked every time.
HMODULE module_holding(const void* address) noexcept {
  HMODULE module = nullptr;
  if (!GetModuleHandleExW(
          GET_MODULE_HANDLE_EX_FLAG_FROM_ADDRESS | GET_MODULE_HANDLE_EX_FLAG_UNCHANGED_REFCOUNT,
          static_cast<LPCWSTR>(address), &module)) {
    return nullptr;
  }
  return module;
}

std::wstring module_path(HMODULE module) {
  std::wstring path(MAX_PATH, L'\0');
  for (;;) {
    const DWORD length = GetModuleFileNameW(module, path.data(), static_cast<DWORD>(path.size()));
    if (length == 0) return {};
    if (length < path.size()) {
      path.resize(length);
      return path;
    }
    if (path.size() >= 32768) return {};
    path.resize(path.size() * 2);
  }
}

void mix(std::uint64_t& hash, const void* data, std::size_t size) noexcept {
  const auto* bytes = static_cast<const unsigned char*>(data);
  for (std::size_t i = 0; i < size; ++i) {
    hash ^= bytes[i];
    hash *= 0x100000001b3ULL;  // FNV-1a
  }
}

}  // namespace

bool locate_code(const void* address, code_location& out) {
  const main_image& image = program_image();
  if (image.holds(address)) {
    out.module.clear();
    out.offset =
        static_cast<std::uint64_t>(static_cast<const unsigned char*>(address) - image.base);
    return true;
  }
  const HMODULE module = module_holding(address);
  if (module == nullptr) return false;
  std::wstring path = module_path(module);
  if (path.empty()) return false;
  out.module = utf16_to_utf8(path);
  out.offset = static_cast<std::uint64_t>(static_cast<const unsigned char*>(address) -
                                          reinterpret_cast<const unsigned char*>(module));
  return !out.module.empty();
}

const void* resolve_code(std::string_view module, std::uint64_t offset) {
  if (module.empty()) {
    const main_image& image = program_image();
    if (offset >= image.size || !image.executable_at(offset)) return nullptr;
    return image.base + offset;
  }
  // Only a module that is already loaded: naming a DLL must never make this process load it.
  std::wstring path;
  if (!utf8_to_utf16(module, path) || path.empty()) return nullptr;
  HMODULE handle = nullptr;
  if (!GetModuleHandleExW(GET_MODULE_HANDLE_EX_FLAG_UNCHANGED_REFCOUNT, path.c_str(), &handle)) {
    return nullptr;
  }
  if (offset >= image_size(handle)) return nullptr;
  const void* address = reinterpret_cast<const unsigned char*>(handle) + offset;
  return in_executable_image_page(handle, address) ? address : nullptr;
}

std::string image_identity() {
  // Read from the headers the loader mapped, so it costs no file I/O and names exactly the
  // image running, even if the file on disk was replaced since. GNU ld may write a zero time
  // stamp (reproducible builds), so the section table and the CodeView build id (when the
  // linker wrote one, e.g. with --build-id or MSVC's /DEBUG) are folded in too. ImageBase is
  // left out: the loader rewrites it with the address the image was relocated to.
  const HMODULE module = GetModuleHandleW(nullptr);
  const IMAGE_NT_HEADERS* nt = nt_headers(module);
  if (nt == nullptr) return "pe:unknown";
  const auto* base = reinterpret_cast<const unsigned char*>(module);

  std::uint64_t hash = 0xcbf29ce484222325ULL;
  const IMAGE_SECTION_HEADER* section = IMAGE_FIRST_SECTION(nt);
  for (WORD i = 0; i < nt->FileHeader.NumberOfSections; ++i, ++section) {
    mix(hash, section->Name, sizeof section->Name);
    mix(hash, &section->Misc.VirtualSize, sizeof section->Misc.VirtualSize);
    mix(hash, &section->VirtualAddress, sizeof section->VirtualAddress);
    mix(hash, &section->SizeOfRawData, sizeof section->SizeOfRawData);
    mix(hash, &section->Characteristics, sizeof section->Characteristics);
  }
  const IMAGE_DATA_DIRECTORY& debug = nt->OptionalHeader.DataDirectory[IMAGE_DIRECTORY_ENTRY_DEBUG];
  if (debug.VirtualAddress != 0 && debug.Size >= sizeof(IMAGE_DEBUG_DIRECTORY) &&
      debug.VirtualAddress + debug.Size <= nt->OptionalHeader.SizeOfImage) {
    const auto* entry = reinterpret_cast<const IMAGE_DEBUG_DIRECTORY*>(base + debug.VirtualAddress);
    for (DWORD i = 0; i < debug.Size / sizeof(IMAGE_DEBUG_DIRECTORY); ++i, ++entry) {
      // A CodeView "RSDS" record: signature, a GUID unique to the link, and the age.
      if (entry->Type == IMAGE_DEBUG_TYPE_CODEVIEW && entry->AddressOfRawData != 0 &&
          entry->SizeOfData >= 24 &&
          entry->AddressOfRawData + entry->SizeOfData <= nt->OptionalHeader.SizeOfImage) {
        mix(hash, base + entry->AddressOfRawData, 24);
      }
    }
  }
  char text[96];
  std::snprintf(text, sizeof text, "pe:%08lx-%08lx-%08lx-%08lx-%016llx",
                static_cast<unsigned long>(nt->FileHeader.TimeDateStamp),
                static_cast<unsigned long>(nt->OptionalHeader.SizeOfImage),
                static_cast<unsigned long>(nt->OptionalHeader.CheckSum),
                static_cast<unsigned long>(nt->OptionalHeader.AddressOfEntryPoint),
                static_cast<unsigned long long>(hash));
  return text;
}

}  // namespace multiproc::detail::os
