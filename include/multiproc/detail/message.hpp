// multiproc — internals of messages (queue items, pipe messages): how values become bytes and
// which type they were sent as. Not part of the API.
#pragma once

#include <cstdint>
#include <istream>
#include <ostream>
#include <string>
#include <typeinfo>

#include <multiproc/config.hpp>
#include <multiproc/serialization.hpp>

namespace multiproc::detail {

/// FNV-1a over a type's name: the same in every process running this program (spawned
/// children run the same image), different for different types.
inline std::uint64_t fingerprint_of(const char* name) noexcept {
  std::uint64_t hash = 0xcbf29ce484222325ULL;
  for (; *name != '\0'; ++name) {
    hash ^= static_cast<unsigned char>(*name);
    hash *= 0x100000001b3ULL;
  }
  return hash | 1;  // never bytes_fingerprint's value
}
/// What a message sent as a T carries, so that receiving it as another type is an error.
template <class T>
std::uint64_t type_fingerprint() {
  static const std::uint64_t value = fingerprint_of(typeid(T).name());
  return value;
}
/// Raw bytes (send_bytes).
inline constexpr std::uint64_t bytes_fingerprint = 0x736574796270;

template <class T>
void write_message_value(std::ostream& out, const void* value) {
  cereal::BinaryOutputArchive archive(out);
  archive(*static_cast<const T*>(value));
}
template <class T>
void read_message_value(std::istream& in, void* value) {
  input_archive archive(in);
  archive(*static_cast<T*>(value));
}

/// How the library writes and reads a message's value without knowing its type.
struct message_codec {
  std::uint64_t fingerprint;
  void (*write)(std::ostream& out, const void* value);
  void (*read)(std::istream& in, void* value);
};
template <class T>
message_codec codec_of() {
  return {type_fingerprint<T>(), &write_message_value<T>, &read_message_value<T>};
}

}  // namespace multiproc::detail
