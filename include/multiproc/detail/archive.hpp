// multiproc — internals: the archive every received value is read with. Not part of the API.
//
// It reads cereal's binary format (what cereal::BinaryOutputArchive writes) but trusts no
// claimed length: a size tag (a string's length, a container's element count) larger than the
// bytes left in the input is refused before anything is allocated. cereal's own
// BinaryInputArchive resizes first and reads after, so a peer that sends 12 bytes claiming a
// 512 MiB string makes the reader allocate and zero 512 MiB (a fuzz finding).
#pragma once

#include <cstddef>
#include <cstdint>
#include <istream>
#include <limits>
#include <memory>
#include <streambuf>
#include <string>
#include <type_traits>
#include <vector>

#include <cereal/archives/binary.hpp>
#include <cereal/cereal.hpp>

#include <multiproc/config.hpp>

namespace multiproc::detail {

/// A stream buffer over bytes already in memory, which knows how many are left: the library's
/// inputs (received messages, results, task bodies) are all of this kind.
class MULTIPROC_API sized_input_buffer : public std::streambuf {
 public:
  ~sized_input_buffer() override;
  /// Bytes not read yet, to the end of the input.
  virtual std::size_t bytes_left() const noexcept = 0;
};

/// Decoded values at least this large get storage prepared by prepare_fresh_storage().
inline constexpr std::size_t fresh_storage_threshold = std::size_t{4} << 20;
/// Prepares [data, data + bytes), storage just allocated for a large decoded value and about to
/// be written whole: Linux backs it with huge pages where the system allows them for programs
/// that ask (transparent_hugepage "madvise" or "always") and faults it in at once, so a 256 MiB
/// vector costs 128 page faults instead of 65 536 (about 5x faster to fill here). Elsewhere, and
/// in the portable POSIX build, nothing. Never fails: a refused hint changes only the speed.
MULTIPROC_API void prepare_fresh_storage(void* data, std::size_t bytes) noexcept;

/// cereal's binary input format, with every size tag checked against the bytes left. Over a
/// stream of unknown length (not a sized_input_buffer) it checks nothing, as cereal's.
class input_archive : public cereal::InputArchive<input_archive, cereal::AllowEmptyClassElision> {
 public:
  explicit input_archive(std::istream& in)
      : cereal::InputArchive<input_archive, cereal::AllowEmptyClassElision>(this),
        in_(*in.rdbuf()),
        sized_(dynamic_cast<const sized_input_buffer*>(in.rdbuf())) {}

  /// Reads `size` bytes. Throws cereal::Exception if the input ends first.
  void loadBinary(void* data, std::streamsize size) {
    const std::streamsize got = in_.sgetn(static_cast<char*>(data), size);
    if (got != size) {
      throw cereal::Exception("multiproc: the input ended " + std::to_string(size - got) +
                              " bytes early");
    }
  }
  /// Throws cereal::Exception if `count` elements cannot be in what is left of the input.
  /// Every element takes at least one byte, except those of a type that writes nothing (an
  /// empty struct): a container of those is limited to as many elements as bytes remain.
  void check_claimed_count(std::uint64_t count) const {
    if (sized_ != nullptr && count > sized_->bytes_left()) {
      throw cereal::Exception("multiproc: a length of " + std::to_string(count) +
                              " elements is claimed with only " +
                              std::to_string(sized_->bytes_left()) + " bytes left in the input");
    }
  }

 private:
  std::streambuf& in_;
  const sized_input_buffer* sized_;
};

/// Arithmetic values: their bytes.
template <class T>
inline std::enable_if_t<std::is_arithmetic_v<T>> CEREAL_LOAD_FUNCTION_NAME(input_archive& ar,
                                                                           T& t) {
  ar.loadBinary(std::addressof(t), sizeof(t));
}
/// Named values: the value alone (the binary format has no names).
template <class T>
inline void CEREAL_SERIALIZE_FUNCTION_NAME(input_archive& ar, cereal::NameValuePair<T>& t) {
  ar(t.value);
}
/// Size tags: read, then checked against the bytes left before the caller allocates.
template <class T>
inline void CEREAL_SERIALIZE_FUNCTION_NAME(input_archive& ar, cereal::SizeTag<T>& t) {
  ar(t.size);
  ar.check_claimed_count(static_cast<std::uint64_t>(t.size));
}
/// Reads a contiguous container of arithmetic elements (cereal's format: a size tag, then the
/// bytes). A large one is read into fresh storage prepared first (prepare_fresh_storage).
template <class Container>
void load_contiguous(input_archive& ar, Container& container) {
  using element = typename Container::value_type;
  cereal::size_type count = 0;
  ar(cereal::make_size_tag(count));  // checked: at most one element per byte left
  const auto elements = static_cast<std::size_t>(count);
  const std::size_t bytes = elements * sizeof(element);  // no overflow: elements <= bytes left
  ar.check_claimed_count(bytes);  // and here the bytes themselves, before anything is allocated
  if (bytes >= fresh_storage_threshold && container.capacity() < elements) {
    Container().swap(container);  // the old elements are overwritten: nothing to move
    container.reserve(elements);
    prepare_fresh_storage(container.data(), bytes);
  }
  container.resize(elements);
  ar(cereal::binary_data(container.data(), bytes));
}
/// Vectors of arithmetic types, as cereal's own load but through load_contiguous
/// (vector<bool> keeps cereal's element-wise load).
template <class T>
inline std::enable_if_t<std::is_arithmetic_v<T> && !std::is_same_v<T, bool>>
CEREAL_LOAD_FUNCTION_NAME(input_archive& ar, std::vector<T>& vector) {
  load_contiguous(ar, vector);
}
/// Strings of arithmetic characters, as cereal's own load but through load_contiguous.
template <class CharT, class Traits>
inline std::enable_if_t<std::is_arithmetic_v<CharT>> CEREAL_LOAD_FUNCTION_NAME(
    input_archive& ar, std::basic_string<CharT, Traits>& text) {
  load_contiguous(ar, text);
}
/// Raw blocks (vectors and arrays of arithmetic types).
template <class T>
inline void CEREAL_LOAD_FUNCTION_NAME(input_archive& ar, cereal::BinaryData<T>& bd) {
  ar.loadBinary(bd.data, static_cast<std::streamsize>(bd.size));
}

}  // namespace multiproc::detail

CEREAL_REGISTER_ARCHIVE(multiproc::detail::input_archive)

namespace cereal::traits::detail {
/// Loads are matched with saves of cereal's binary output archive (what writes the bytes).
template <>
struct get_output_from_input<multiproc::detail::input_archive> {
  using type = cereal::BinaryOutputArchive;
};
}  // namespace cereal::traits::detail
